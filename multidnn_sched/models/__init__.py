"""multidnn_sched.models"""
