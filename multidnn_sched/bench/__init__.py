"""multidnn_sched.bench"""
