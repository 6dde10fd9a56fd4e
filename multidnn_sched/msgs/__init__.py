"""rclpy-free message codecs (sensor_msgs/Image <-> numpy, vision_msgs detections), shared by scenes and ros."""
