"""The block runtime: partitioning, the shared BlockExecutor, LAG, the scheduling policy. No rclpy here."""
