"""multidnn_sched: several DNNs in one process on one shared, LAG-scheduled block executor."""

__version__ = "0.1.0"
