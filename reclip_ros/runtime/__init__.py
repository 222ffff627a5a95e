"""The runtime between the ROS adapters and the core: no rclpy, no message types.

:mod:`.worker` (the grounding thread and its narrow API: ``submit``, ``feed_image``,
``feed_depth``, ``feed_camera_info``, ``feed_proposals``, ``reject``), :mod:`.jobs`
(commands, their single outcome, the bounded queue), :mod:`.frame_buffer` and
:mod:`.frame_sync` (which frame, depth and proposals a command uses), :mod:`.parameters`
(the node's parameter table, generated from :mod:`reclip_ros.core.config`) and
:mod:`.heap` (returning freed memory in a long-running process).
"""
