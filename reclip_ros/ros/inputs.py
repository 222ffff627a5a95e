"""The node's sensor inputs: colour (raw and compressed), depth, camera_info and proposals.

Each subscription has its own callback group, so no input ever waits for another one, for
a command, for the service, for the diagnostics timer or for a lifecycle transition. The
callbacks only convert headers and hand the message to the worker (``feed_*``); images are
decoded later, by the worker, when a command uses them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from reclip_ros.msg import Proposals
from reclip_ros.ros import conversions as conv
from reclip_ros.runtime.frame_buffer import Frame
from reclip_ros.runtime.worker import DEPTH_HISTORY

#: The topics a node subscribes to (besides ``command``), each in its own callback group.
SENSOR_TOPICS = ('image', 'image/compressed', 'depth', 'camera_info', 'proposals')
#: Messages of depth (or camera_info) without a single one of the other before the node warns
#: (once) that no 3D position can be computed: a driver starts its topics a moment apart.
PAIR_WARNING_AFTER = 10


def _refused_decoder():
    raise ValueError('refused frame')  # never called: Frame.decode raises its reason first


class SensorInputs:
    """Creates the sensor subscriptions once, per the node's read-only parameters.

    Args:
        node: the rclpy node.
        param: returns the current value of a node parameter.
        active_worker: returns the worker while the node is active, else None (the input
            is then dropped).
        now_ns: the node's clock in nanoseconds.
    """

    def __init__(self, node: Any, param: Callable[[str], Any],
                 active_worker: Callable[[], Optional[Any]], now_ns: Callable[[], int]) -> None:
        self.node, self.param, self.active_worker, self.now_ns = (node, param, active_worker,
                                                                  now_ns)
        self.groups = {topic: MutuallyExclusiveCallbackGroup() for topic in SENSOR_TOPICS}
        reliability = (QoSReliabilityPolicy.RELIABLE
                       if param('image_qos_reliability') == 'reliable'
                       else QoSReliabilityPolicy.BEST_EFFORT)
        image_qos = QoSProfile(depth=1, history=qos_profile_sensor_data.history,
                               reliability=reliability)
        # depth images are kept by stamp: take every one that arrives, not only the newest
        depth_qos = QoSProfile(depth=DEPTH_HISTORY, history=qos_profile_sensor_data.history,
                               reliability=reliability)

        def sub(msg_type, topic: str, callback, qos):
            return node.create_subscription(msg_type, topic, callback, qos,
                                            callback_group=self.groups[topic])

        self.subscriptions = [sub(Image, 'image', self._on_image, image_qos)]
        if param('subscribe_compressed'):
            self.subscriptions.append(sub(CompressedImage, 'image/compressed',
                                          self._on_compressed, image_qos))
        if param('use_depth'):
            self.subscriptions += [sub(Image, 'depth', self._on_depth, depth_qos),
                                   sub(CameraInfo, 'camera_info', self._on_camera_info,
                                       image_qos)]
        if param('use_proposals_topic'):
            self.subscriptions.append(sub(Proposals, 'proposals', self._on_proposals, 10))
        self._received = {'depth': 0, 'camera_info': 0}
        self._pair_warned = False

    def topic_names(self) -> list:
        """The resolved names of every sensor topic subscribed to."""
        return [s.topic_name for s in self.subscriptions]

    def _count(self, kind: str) -> None:
        """Count a depth / camera_info message; warn once when only one of them arrives."""
        self._received[kind] += 1
        other = 'camera_info' if kind == 'depth' else 'depth'
        if (self._pair_warned or self._received[other]
                or self._received[kind] < PAIR_WARNING_AFTER):
            return
        self._pair_warned = True
        resolve = self.node.resolve_topic_name
        self.node.get_logger().warning(
            f'{self._received[kind]} messages on {resolve(kind)} but none on '
            f'{resolve(other)}: results will have no 3D position (both are needed: remap '
            f'{other} to the topic of your camera driver, e.g. depth_topic:=... / '
            'camera_info_topic:=... with the launch file)')

    def frame(self, msg: Any, decoder: Callable) -> Frame:
        """A :class:`Frame` of an image message, decoded on first use.

        Its size is checked on receipt (``max_image_pixels``; a JPEG/PNG by its header): an
        oversized frame is kept as *refused*, without its data, so a command on it gets
        BAD_IMAGE naming the limit.
        """
        max_pixels = self.param('max_image_pixels')
        stamp_ns, now_ns = conv.stamp_to_ns(msg.header.stamp), self.now_ns()
        try:
            conv.check_message_pixels(msg, max_pixels)
        except ValueError as exc:
            return Frame(stamp_ns, now_ns, msg.header, _refused_decoder, refused=str(exc))
        return Frame(stamp_ns, now_ns, msg.header,
                     functools.partial(decoder, msg, max_pixels=max_pixels))

    def _on_image(self, msg: Image) -> None:
        worker = self.active_worker()
        if worker is not None:
            worker.feed_image(self.frame(msg, conv.image_to_rgb))

    def _on_compressed(self, msg: CompressedImage) -> None:
        worker = self.active_worker()
        if worker is not None:
            worker.feed_image(self.frame(msg, conv.compressed_to_rgb))

    def _on_depth(self, msg: Image) -> None:
        self._count('depth')
        worker = self.active_worker()
        if worker is not None:
            worker.feed_depth(self.frame(msg, conv.depth_image_to_meters))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._count('camera_info')
        worker = self.active_worker()
        if worker is None:
            return
        try:
            intrinsics = conv.camera_info_to_intrinsics(msg)
        except ValueError as exc:
            self.node.get_logger().warning(str(exc), throttle_duration_sec=10.0)
            return
        worker.feed_camera_info(intrinsics, int(msg.width), int(msg.height))

    def _on_proposals(self, msg: Proposals) -> None:
        worker = self.active_worker()
        if worker is None:
            return
        try:
            boxes = conv.proposals_to_boxes(msg)
        except ValueError as exc:
            self.node.get_logger().warning(f'bad Proposals message: {exc}',
                                           throttle_duration_sec=10.0)
            return
        worker.feed_proposals(conv.stamp_to_ns(msg.header.stamp), boxes)
