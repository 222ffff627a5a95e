r"""Start the ``reclip`` lifecycle node with its parameter file and topic remappings.

Needs a ROS 2 install with ``launch_ros``::

    ros2 launch reclip_ros reclip.launch.py image_topic:=/camera/color/image_raw
    ros2 launch reclip_ros reclip.launch.py command_topic:=/speech/text device:=cuda
    ros2 launch reclip_ros reclip.launch.py image_topic:=/camera/camera/color/image_raw \
        depth_topic:=/camera/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/camera/color/camera_info

Launch arguments: ``namespace`` (default ``''``), ``params_file`` (default the installed
``config/reclip.yaml``), ``image_topic`` (default ``image``), ``command_topic`` (default
``command``), ``depth_topic`` (``depth``), ``camera_info_topic`` (``camera_info``),
``proposals_topic`` (``proposals``), ``debug_image_topic`` (``debug_image``),
``grounding_topic`` (``grounding``), ``device`` (``auto``), ``autostart`` (``true``:
configure and activate at start), ``log_level`` (``info``), ``use_sim_time``
(``false``). The launch file only describes the node; it has no other side effects.

Large frames: unless the environment already chooses a Fast DDS transport or profile, the
node process gets the shipped ``config/fastdds_large_frames.xml`` (see docs/node.md, "Image
QoS and lost frames"); give the camera driver the same for full delivery.
"""

import os

from ament_index_python.packages import get_package_share_directory
from reclip_ros.ros.transport import apply_large_frame_default
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue

ARGUMENTS = (
    # name, default (None: computed), description
    ('namespace', '', 'namespace of the node and its relative topics'),
    ('params_file', None, 'YAML file with the node parameters (/**: ros__parameters:)'),
    ('image_topic', 'image', 'colour image topic (sensor_msgs/Image)'),
    ('command_topic', 'command', 'text command topic (std_msgs/String)'),
    ('depth_topic', 'depth', 'registered depth image topic (16UC1 mm or 32FC1 m, aligned to '
     'the colour image; a RealSense: /camera/camera/aligned_depth_to_color/image_raw)'),
    ('camera_info_topic', 'camera_info', 'camera_info of the colour image (its intrinsics '
     'give the 3D position)'),
    ('proposals_topic', 'proposals', 'external detections (reclip_ros/Proposals)'),
    ('debug_image_topic', 'debug_image', 'annotated output image (sensor_msgs/Image)'),
    ('grounding_topic', 'grounding', 'results (reclip_ros/GroundingResult)'),
    ('device', 'auto', 'auto, cpu, cuda or cuda:N'),
    ('autostart', 'true', 'configure and activate the node at start'),
    ('log_level', 'info', 'debug, info, warn, error or fatal'),
    ('use_sim_time', 'false', 'use /clock (simulation) time'),
)


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the lifecycle node."""
    default_params = os.path.join(get_package_share_directory('reclip_ros'), 'config',
                                  'reclip.yaml')
    declared = [
        DeclareLaunchArgument(name, default_value=default_params if default is None
                              else default, description=description)
        for name, default, description in ARGUMENTS]
    config = {name: LaunchConfiguration(name) for name, _, _ in ARGUMENTS}
    image_topic = config['image_topic']
    # the large-frames transport for the node, unless the user chose a Fast DDS setting
    node_env = dict(os.environ)
    apply_large_frame_default(node_env)
    transport_env = {k: v for k, v in node_env.items() if os.environ.get(k) != v}

    node = LifecycleNode(
        package='reclip_ros', executable='reclip_node', name='reclip',
        namespace=config['namespace'], output='screen',
        parameters=[
            config['params_file'],
            {
                'device': ParameterValue(config['device'], value_type=str),
                'autostart': ParameterValue(config['autostart'], value_type=bool),
                'use_sim_time': ParameterValue(config['use_sim_time'], value_type=bool),
            },
        ],
        remappings=[
            ('image', image_topic),
            ('image/compressed', [image_topic, '/compressed']),
            ('command', config['command_topic']),
            ('depth', config['depth_topic']),
            ('camera_info', config['camera_info_topic']),
            ('proposals', config['proposals_topic']),
            ('debug_image', config['debug_image_topic']),
            ('grounding', config['grounding_topic']),
        ],
        arguments=['--ros-args', '--log-level', config['log_level']],
        additional_env=transport_env,
    )
    return LaunchDescription(declared + [node])
