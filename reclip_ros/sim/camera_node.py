"""Simulated RGB-D camera: a ROS 2 node that publishes a PyBullet tabletop scene.

It publishes what a real RGB-D driver publishes, all frames of one tick with the same
stamp and the optical frame id (``frame_id`` parameter, default
``sim_camera_optical_frame``):

- ``image`` (sensor_msgs/Image, rgb8), ``depth`` (sensor_msgs/Image, 32FC1, metres,
  registered to the colour image; 0 where nothing was hit), ``camera_info``
  (sensor_msgs/CameraInfo, the true pinhole intrinsics, no distortion);
- optionally ``proposals`` (reclip_ros/Proposals): the ground-truth boxes of the
  visible objects (the paper's ground-truth-proposal setting);
- ``ground_truth`` (std_msgs/String, JSON, reliable + transient local so late joiners
  get it): the scene seed, the stamp from which frames show this scene, the
  intrinsics and per object its name, colour, size, 2D box and 3D centre.

Camera topics use sensor-data QoS (best effort, depth 1) unless ``reliable`` is true;
``proposals`` is always reliable (depth 1), which matches reliable and best-effort readers.
Setting the ``seed`` parameter rebuilds the scene (``ros2 param set /sim_camera seed 7``).

Run it with ``reclip sim [--seed S] [--rate HZ] [--publish-proposals] [--ros-args ...]``
or from Python with :class:`SimCameraNode` / :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Callable, List, Optional, Sequence

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String

from reclip_ros.ros.conversions import array_to_image, box_to_roi
from reclip_ros.msg import Proposals

DEFAULT_FRAME_ID = 'sim_camera_optical_frame'
MAX_SEED = 2 ** 31 - 1
MAX_RATE_HZ = 100.0


def _latched_qos() -> QoSProfile:
    """QoS of the ground-truth topic: reliable, transient local, newest message only."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def camera_qos(reliable: bool) -> QoSProfile:
    """QoS of the camera topics: sensor data (best effort, depth 1) or reliable depth 1."""
    if not reliable:
        return qos_profile_sensor_data
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def camera_info_message(intrinsics, width: int, height: int, frame_id: str) -> CameraInfo:
    """Build a ``sensor_msgs/CameraInfo`` for an ideal pinhole camera (no distortion)."""
    fx, fy, cx, cy = (float(intrinsics.fx), float(intrinsics.fy),
                      float(intrinsics.cx), float(intrinsics.cy))
    msg = CameraInfo()
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def ground_truth_dict(frame, seed: int, stamp: Time, frame_id: str) -> dict:
    """Describe a rendered scene as a JSON-ready dict (the ``ground_truth`` message).

    Keys: ``seed``, ``stamp`` (``{sec, nanosec}``: frames with this stamp or later show
    this scene), ``frame_id``, ``width``, ``height``, ``intrinsics`` (fx, fy, cx, cy) and
    ``objects``: per visible object ``index`` (its position in ``proposals``), ``name``,
    ``colour``, ``size``, ``box`` ``[x, y, width, height]`` in pixels and ``center``
    ``[x, y, z]`` in metres in the optical frame.
    """
    height, width = frame.rgb.shape[:2]
    objects = []
    for index, obj in enumerate(frame.objects):
        objects.append({
            'index': index,
            'name': obj.name,
            'colour': obj.colour,
            'size': obj.size,
            'box': [float(v) for v in obj.box.to_list()],
            'center': [float(v) for v in obj.center],
            'body_id': int(obj.body_id),
            'pixels': int(getattr(obj, 'pixels', 0)),
        })
    intr = frame.intrinsics
    return {
        'seed': int(seed),
        'stamp': {'sec': int(stamp.sec), 'nanosec': int(stamp.nanosec)},
        'frame_id': frame_id,
        'width': int(width),
        'height': int(height),
        'intrinsics': {'fx': float(intr.fx), 'fy': float(intr.fy),
                       'cx': float(intr.cx), 'cy': float(intr.cy)},
        'objects': objects,
    }


def _default_scene_factory(seed: int, width: int, height: int):
    """Build a :class:`reclip_ros.sim.world.TabletopScene` (imported lazily)."""
    from reclip_ros.sim.world import TabletopScene
    return TabletopScene(seed, width=width, height=height)


class SimCameraNode(Node):
    """Publish a simulated tabletop RGB-D camera (see the module docstring for topics).

    Args:
        seed, rate, width, height, publish_proposals, reliable, frame_id: initial values
            of the parameters of the same names (``--ros-args -p`` overrides win).
        scene_factory: ``f(seed, width, height)`` returning an object with ``render()``
            and ``close()``, by default :class:`reclip_ros.sim.world.TabletopScene`.
    """

    def __init__(self, seed: int = 0, rate: float = 5.0, width: int = 640, height: int = 480,
                 publish_proposals: bool = False, reliable: bool = False,
                 frame_id: str = DEFAULT_FRAME_ID, node_name: str = 'sim_camera',
                 scene_factory: Optional[Callable] = None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._scene_factory = scene_factory or _default_scene_factory
        self._lock = threading.RLock()
        self._scene = None
        self._messages = None  # (image, depth, info, proposals) of the current scene
        self._declare_parameters(seed, rate, width, height, publish_proposals, reliable,
                                 frame_id)
        self._width = self.get_parameter('width').value
        self._height = self.get_parameter('height').value
        self._frame_id = self.get_parameter('frame_id').value
        qos = camera_qos(self.get_parameter('reliable').value)
        self._image_pub = self.create_publisher(Image, 'image', qos)
        self._depth_pub = self.create_publisher(Image, 'depth', qos)
        self._info_pub = self.create_publisher(CameraInfo, 'camera_info', qos)
        # detections are usually reliable; a reliable publisher also matches best effort
        self._proposals_pub = self.create_publisher(Proposals, 'proposals', camera_qos(True))
        self._truth_pub = self.create_publisher(String, 'ground_truth', _latched_qos())
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._timer = None
        self._build_scene(self.get_parameter('seed').value)
        self._restart_timer(self.get_parameter('rate').value)

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self, seed, rate, width, height, publish_proposals, reliable,
                            frame_id) -> None:
        int_range = [IntegerRange(from_value=0, to_value=MAX_SEED, step=1)]
        self.declare_parameter('seed', int(seed), ParameterDescriptor(
            description='scene seed; setting it rebuilds the scene', integer_range=int_range))
        self.declare_parameter('rate', float(rate), ParameterDescriptor(
            description='publishing rate in Hz',
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=MAX_RATE_HZ)]))
        size_range = [IntegerRange(from_value=32, to_value=4096, step=1)]
        self.declare_parameter('width', int(width), ParameterDescriptor(
            description='image width in pixels', read_only=True, integer_range=size_range))
        self.declare_parameter('height', int(height), ParameterDescriptor(
            description='image height in pixels', read_only=True, integer_range=size_range))
        self.declare_parameter('publish_proposals', bool(publish_proposals), ParameterDescriptor(
            description='also publish the ground-truth boxes on `proposals`'))
        self.declare_parameter('reliable', bool(reliable), ParameterDescriptor(
            description='reliable QoS on the camera topics instead of sensor data',
            read_only=True))
        self.declare_parameter('frame_id', str(frame_id), ParameterDescriptor(
            description='optical frame id of every published header', read_only=True))

    def _validate_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == 'seed' and not 0 <= int(param.value) <= MAX_SEED:
                return SetParametersResult(successful=False,
                                           reason=f'seed must be in [0, {MAX_SEED}]')
            if param.name == 'rate' and not 0.0 < float(param.value) <= MAX_RATE_HZ:
                return SetParametersResult(successful=False,
                                           reason=f'rate must be in (0, {MAX_RATE_HZ}] Hz')
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        for param in params:
            if param.name == 'seed':
                self._build_scene(int(param.value))
            elif param.name == 'rate':
                self._restart_timer(float(param.value))

    # ------------------------------------------------------------------ scene
    @property
    def ground_truth(self) -> dict:
        """The ground truth of the current scene (the JSON published on ``ground_truth``)."""
        with self._lock:
            return json.loads(self._truth_json)

    def _build_scene(self, seed: int) -> None:
        """Replace the scene by the one of *seed*, render it once and publish its truth."""
        with self._lock:
            if self._scene is not None:
                self._scene.close()
                self._scene = None
            self._scene = self._scene_factory(seed, self._width, self._height)
            frame = self._scene.render()
            stamp = self.get_clock().now().to_msg()
            self._messages = self._frame_messages(frame)
            truth = ground_truth_dict(frame, seed, stamp, self._frame_id)
            self._truth_json = json.dumps(truth)
        self._truth_pub.publish(String(data=self._truth_json))
        self.get_logger().info(
            f'scene seed {seed}: {len(frame.objects)} objects: '
            + ', '.join(f"{o['size']} {o['colour']} {o['name']}" for o in truth['objects']))
        self.publish_frame()

    def _frame_messages(self, frame):
        height, width = frame.rgb.shape[:2]
        image = array_to_image(np.asarray(frame.rgb, dtype=np.uint8), 'rgb8')
        depth = array_to_image(np.asarray(frame.depth, dtype=np.float32), '32FC1')
        info = camera_info_message(frame.intrinsics, width, height, self._frame_id)
        proposals = Proposals()
        proposals.header.frame_id = self._frame_id
        proposals.boxes = [box_to_roi(o.box, width, height) for o in frame.objects]
        proposals.scores = [1.0] * len(frame.objects)
        proposals.labels = [f'{o.size} {o.colour} {o.name}' for o in frame.objects]
        return image, depth, info, proposals

    # ------------------------------------------------------------------ publishing
    def _restart_timer(self, rate: float) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
        self._timer = self.create_timer(1.0 / float(rate), self.publish_frame)

    def publish_frame(self) -> Header:
        """Publish the current scene once with a fresh stamp; return the header used."""
        with self._lock:
            if self._messages is None:
                return Header()
            image, depth, info, proposals = self._messages
            header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._frame_id)
            for msg in (image, depth, info, proposals):
                msg.header = header
            # the colour image last: a consumer that reacts to it finds the depth, camera
            # info and proposals of the same stamp already received
            self._info_pub.publish(info)
            self._depth_pub.publish(depth)
            if self.get_parameter('publish_proposals').value:
                self._proposals_pub.publish(proposals)
            self._image_pub.publish(image)
        return header

    def destroy_node(self) -> None:
        """Close the simulator, then destroy the node."""
        with self._lock:
            if self._scene is not None:
                self._scene.close()
                self._scene = None
        super().destroy_node()


# ---------------------------------------------------------------------- command line
def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``reclip sim`` options to *parser*."""
    parser.add_argument('--seed', type=int, default=0, help='scene seed (default 0)')
    parser.add_argument('--rate', type=float, default=5.0,
                        help='publishing rate in Hz (default 5)')
    parser.add_argument('--width', type=int, default=640, help='image width (default 640)')
    parser.add_argument('--height', type=int, default=480, help='image height (default 480)')
    parser.add_argument('--publish-proposals', action='store_true',
                        help='also publish the ground-truth boxes on `proposals`')
    parser.add_argument('--reliable', action='store_true',
                        help='reliable QoS on the camera topics (default: sensor data)')
    parser.epilog = 'ROS arguments may follow: --ros-args -r __ns:=/sim -p seed:=3'


def run(args: argparse.Namespace, ros_args: Optional[List[str]] = None) -> int:
    """Run the node until Ctrl-C with the parsed *args*; return the exit code."""
    if args.seed < 0 or args.rate <= 0 or args.width < 32 or args.height < 32:
        print('error: need --seed >= 0, --rate > 0, --width and --height >= 32',
              file=sys.stderr)
        return 2
    rclpy.init(args=['sim_camera'] + list(ros_args or []))
    node = None
    try:
        node = SimCameraNode(seed=args.seed, rate=args.rate, width=args.width,
                             height=args.height, publish_proposals=args.publish_proposals,
                             reliable=args.reliable)
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        # Ctrl-C / SIGINT: rclpy's handler shuts the context down, and spin ends with
        # either exception depending on where the signal lands; both are a normal stop
        pass
    except Exception as exc:  # noqa: BLE001 - report any start-up failure in one line
        print(f'error: sim camera failed: {type(exc).__name__}: {exc}', file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``reclip sim`` / ``sim_camera``: options, then optional ``--ros-args``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if '--ros-args' in argv:
        split = argv.index('--ros-args')
        own, ros_args = argv[:split], argv[split:]
    else:
        own, ros_args = argv, []
    parser = argparse.ArgumentParser(prog='reclip sim',
                                     description='run the simulated RGB-D camera node')
    register(parser)
    args = parser.parse_args(own)
    return run(args, ros_args)


if __name__ == '__main__':
    sys.exit(main())
