"""multidnn_sched.scenes"""
