"""multidnn_sched.evaluation"""
