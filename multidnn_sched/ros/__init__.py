"""multidnn_sched.ros"""
