"""Gazebo path: gz sim with worlds/tabletop.sdf, the RGB-D camera bridged into the reclip node.

Needs a ROS 2 install with ``ros_gz_sim`` and ``ros_gz_bridge`` (Gazebo Harmonic or newer)::

    ros2 launch reclip_ros gazebo_demo.launch.py
    ros2 topic pub --once /command std_msgs/msg/String "{data: 'the red cube'}"
    ros2 topic echo /grounding

Launch arguments: ``models`` (CLIP checkpoints, YAML list, default
``[openai/clip-vit-base-patch32]``), ``detector`` (proposal detector, default
``google/owlv2-base-patch16-ensemble``), ``device`` (default ``auto``), ``world`` (SDF
file, default the packaged ``worlds/tabletop.sdf``), ``gui`` (``true`` shows the Gazebo
window). Not exercised by this repository's CI (no Gazebo there).
"""

import os
from typing import List

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

# gz topics of the rgbd_camera sensor (its <topic> in worlds/tabletop.sdf is `rgbd_camera`).
GZ_IMAGE = '/rgbd_camera/image'
GZ_DEPTH = '/rgbd_camera/depth_image'
GZ_CAMERA_INFO = '/rgbd_camera/camera_info'

# parameter_bridge arguments: <topic>@<ROS type>[<gz type>  ('[' = gz -> ROS only).
BRIDGE_ARGUMENTS = [
    '/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock',
    '/rgbd_camera/image@sensor_msgs/msg/Image[gz.msgs.Image',
    '/rgbd_camera/depth_image@sensor_msgs/msg/Image[gz.msgs.Image',
    '/rgbd_camera/camera_info@sensor_msgs/msg/CameraInfo[gz.msgs.CameraInfo',
]

# The reclip node's input topic names -> the bridged ROS topics.
RECLIP_REMAPPINGS = [
    ('image', GZ_IMAGE),
    ('depth', GZ_DEPTH),
    ('camera_info', GZ_CAMERA_INFO),
]


def generate_launch_description() -> LaunchDescription:
    """Start gz sim, the camera bridge, the optical-frame transform and the reclip node."""
    share = get_package_share_directory('reclip_ros')
    gz_launch = os.path.join(get_package_share_directory('ros_gz_sim'), 'launch',
                             'gz_sim.launch.py')
    world = LaunchConfiguration('world')
    gui = LaunchConfiguration('gui')

    arguments = [
        DeclareLaunchArgument('world', default_value=os.path.join(share, 'worlds',
                                                                   'tabletop.sdf'),
                              description='SDF world file'),
        DeclareLaunchArgument('models', default_value='[openai/clip-vit-base-patch32]',
                              description='CLIP checkpoints (hub ids or directories), '
                                          'a YAML list; ensembled'),
        DeclareLaunchArgument('detector', default_value='google/owlv2-base-patch16-ensemble',
                              description='object-proposal detector ("" = proposals topic)'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='auto, cpu, cuda or cuda:N'),
        DeclareLaunchArgument('gui', default_value='true',
                              description='show the Gazebo window (false: server only)'),
    ]

    # -r runs the simulation immediately; -s starts the server without the GUI.
    gazebo_gui = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(gz_launch),
        launch_arguments={'gz_args': [world, ' -r']}.items(),
        condition=IfCondition(gui))
    gazebo_headless = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(gz_launch),
        launch_arguments={'gz_args': [world, ' -r -s']}.items(),
        condition=UnlessCondition(gui))

    bridge = Node(
        package='ros_gz_bridge', executable='parameter_bridge', name='rgbd_camera_bridge',
        arguments=BRIDGE_ARGUMENTS, output='screen')

    # camera_link (x forward, z up) -> camera_optical_frame (x right, y down, z forward).
    optical_frame = Node(
        package='tf2_ros', executable='static_transform_publisher',
        name='camera_optical_frame_publisher',
        arguments=['--x', '0', '--y', '0', '--z', '0',
                   '--roll', '-1.5707963', '--pitch', '0', '--yaw', '-1.5707963',
                   '--frame-id', 'camera_link', '--child-frame-id', 'camera_optical_frame'])

    models: ParameterValue = ParameterValue(LaunchConfiguration('models'),
                                            value_type=List[str])
    reclip = LifecycleNode(
        package='reclip_ros', executable='reclip_node', name='reclip', namespace='',
        output='screen',
        parameters=[{
            'models': models,
            'detector': ParameterValue(LaunchConfiguration('detector'), value_type=str),
            'device': LaunchConfiguration('device'),
            'autostart': True,
            'use_sim_time': True,
        }],
        remappings=RECLIP_REMAPPINGS)

    return LaunchDescription(arguments + [gazebo_gui, gazebo_headless, bridge, optical_frame,
                                          reclip])
