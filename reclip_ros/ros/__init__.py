"""The thin ROS 2 adapters: the node and the message conversions.

rclpy is imported only here, in :mod:`reclip_ros.tools` and in :mod:`reclip_ros.sim`.
"""
