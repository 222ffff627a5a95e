"""What the node publishes, and how a job's outcome becomes messages.

Results, target points, vision_msgs detections, the debug image and diagnostics: the
publishing half of :class:`reclip_ros.ros.node.ReclipNode`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PointStamped
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from reclip_ros.core.types import Status
from reclip_ros.msg import GroundingResult as GroundingResultMsg
from reclip_ros.ros import conversions as conv
from reclip_ros.runtime.jobs import GroundingJob, JobOutcome
from reclip_ros.runtime.worker import FRAME_STATUSES

# Commands and results: reliable, with a deep history so that a burst of commands reaches
# the command callback (which answers overflow with DROPPED) instead of being overwritten
# inside DDS, and a burst of results reaches subscribers.
COMMAND_QOS = QoSProfile(depth=1000, reliability=QoSReliabilityPolicy.RELIABLE)


class ResultOutputs:
    """The node's publishers, and the conversion of each job's outcome into messages.

    Args:
        node: the rclpy node that owns the publishers.
        param: returns the current value of a node parameter.
    """

    def __init__(self, node: Any, param: Callable[[str], Any]) -> None:
        self.node = node
        self.param = param
        reliable = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self.result_pub = node.create_publisher(GroundingResultMsg, 'grounding', COMMAND_QOS)
        self.debug_pub = node.create_publisher(Image, 'debug_image', 1)
        self.point_pub = node.create_publisher(PointStamped, 'target_point', reliable)
        self.diagnostics_pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.results_published = 0
        self._vision = None  # vision_msgs.msg while its publishers exist
        self._detections_pub = self._detections_3d_pub = None

    # -- vision_msgs (created on configure, per ``publish_vision_msgs``) -------------------

    def create_vision_publishers(self) -> str:
        """Create the vision_msgs publishers; return '' or why they cannot be created."""
        mode = self.param('publish_vision_msgs')
        vision = conv.vision_msgs_module() if mode != 'false' else None
        if mode == 'true' and vision is None:
            return ('configure failed: publish_vision_msgs is true but vision_msgs is not '
                    'installed (install ros-<distro>-vision-msgs, or set publish_vision_msgs '
                    "to 'auto' or 'false')")
        self._vision = vision
        if vision is not None:
            self._detections_pub = self.node.create_publisher(vision.Detection2DArray,
                                                              'detections', 10)
            self._detections_3d_pub = self.node.create_publisher(vision.Detection3DArray,
                                                                 'detections_3d', 10)
        return ''

    def destroy_vision_publishers(self) -> None:
        """Destroy the vision_msgs publishers (cleanup, shutdown)."""
        if self._vision is not None:
            self.node.destroy_publisher(self._detections_pub)
            self.node.destroy_publisher(self._detections_3d_pub)
        self._vision = None

    # -- results (worker thread, or the caller's thread for an immediate answer) ------------

    def to_msg(self, job: GroundingJob, outcome: JobOutcome) -> GroundingResultMsg:
        """The result message of *job*: the frame's header when the status is about a frame."""
        result, frame = outcome.result, outcome.frame
        if result.status not in FRAME_STATUSES:
            frame = None  # the header rule: only statuses about a frame carry its header
        width = height = 0
        if frame is not None and result.status == Status.OK:
            height, width = frame.decode().shape[:2]
        header = frame.header if frame is not None else Header(
            stamp=conv.ns_to_stamp(job.received_ns))
        msg = conv.result_to_msg(result, header, width, height,
                                 max_candidates=self.param('max_candidates'),
                                 queue_wait_ms=outcome.queue_wait_ms)
        msg.latency_receipt_to_publish_ms = float(job.queue_wait_ms())
        return msg

    def publish(self, job: GroundingJob, outcome: JobOutcome) -> None:
        """Publish *job*'s result and everything derived from it."""
        msg = self.to_msg(job, outcome)
        # the point first: a client reacting to the result finds its point already sent
        if msg.has_position:
            self.point_pub.publish(conv.position_to_point(outcome.result.position, msg.header))
        self.result_pub.publish(msg)
        self.results_published += 1
        vision = self._vision
        if vision is not None and msg.status == GroundingResultMsg.OK:
            self._detections_pub.publish(conv.fill_message(
                vision.Detection2DArray(), conv.detection2d_array_fields(msg), vision, '2d'))
            fields_3d = conv.detection3d_array_fields(msg)
            if fields_3d is not None:
                self._detections_3d_pub.publish(conv.fill_message(
                    vision.Detection3DArray(), fields_3d, vision, '3d'))
        if (outcome.result.status == Status.OK and self.param('publish_debug_image')
                and self.debug_pub.get_subscription_count() > 0):
            from reclip_ros.core.drawing import draw_result
            drawn = draw_result(outcome.frame.decode(), outcome.result,
                                top_k=self.param('debug_top_k'))
            self.debug_pub.publish(conv.array_to_image(drawn, 'rgb8', msg.header))

    def wait_delivered(self, timeout_s: float) -> bool:
        """Wait until every reliable subscriber acknowledged the results published so far."""
        from rclpy.duration import Duration
        try:
            return bool(self.result_pub.wait_for_all_acked(Duration(seconds=timeout_s)))
        except Exception:  # noqa: BLE001 - best effort at exit
            return False

    # -- diagnostics (timer) -----------------------------------------------------------

    def publish_state(self, state: str, level: bytes, message: str, stamp) -> None:
        """Publish one /diagnostics array with only the node's *state* (no models loaded)."""
        status = conv.diagnostic_status(f'{self.node.get_name()}: grounding', '', level[0],
                                        message, {'state': state})
        array = DiagnosticArray(status=[status])
        array.header.stamp = stamp
        self.diagnostics_pub.publish(array)

    def publish_diagnostics(self, worker: Any, values: Dict[str, Any], stamp) -> None:
        """Publish one /diagnostics array with *values* and the worker's figures."""
        values = dict(values)
        values.update(worker.status_values(self.node.get_clock().now().nanoseconds))
        level, message = DiagnosticStatus.OK, 'ok'
        if worker.is_running() and worker.newest_frame() is None:
            level, message = DiagnosticStatus.WARN, 'no image received yet'
        elif worker.queue_full():
            level, message = DiagnosticStatus.WARN, 'command queue full'
        status = conv.diagnostic_status(f'{self.node.get_name()}: grounding',
                                        str(values.get('device', '')), level[0], message,
                                        values)
        array = DiagnosticArray(status=[status])
        array.header.stamp = stamp
        self.diagnostics_pub.publish(array)
