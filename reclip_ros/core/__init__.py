"""The ROS-free core of reclip_ros: nothing here imports rclpy or message types."""
