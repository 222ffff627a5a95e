"""The ``reclip`` lifecycle node: camera + text commands in, grounded boxes out.

An adapter only: messages are converted in :mod:`reclip_ros.ros.conversions`, jobs are queued
in :mod:`reclip_ros.runtime.jobs` and grounded on the worker thread of
:mod:`reclip_ros.runtime.worker`, which calls :class:`reclip_ros.core.grounder.Grounder`.
Run it with ``reclip node [--ros-args ...]`` or ``ros2 run reclip_ros reclip_node``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from typing import Any, Optional, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleState, Node, TransitionCallbackReturn
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from reclip_ros.ros import conversions as conv
from reclip_ros.runtime.jobs import (SOURCE_SERVICE, SOURCE_TOPIC, CommandQueue,
                                      GroundingJob, JobOutcome)
from reclip_ros.core.types import GroundingResult, Status
from reclip_ros.runtime.frame_buffer import Frame
from reclip_ros.runtime.worker import (DEPTH_HISTORY, FRAME_STATUSES, GroundingWorker,
                                        WorkerSettings)
from reclip_ros.msg import GroundingResult as GroundingResultMsg
from reclip_ros.msg import Proposals
from reclip_ros.runtime.parameters import PARAMETERS, SPECS, validate, validate_all
from reclip_ros.srv import Ground

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
# Commands and results: reliable, with a deep history so that a burst of commands reaches
# the command callback (which answers overflow with DROPPED) instead of being overwritten
# inside DDS, and a burst of results reaches subscribers.
COMMAND_QOS = QoSProfile(depth=1000, reliability=QoSReliabilityPolicy.RELIABLE)
DYNAMIC_SETTINGS = ('max_image_age', 'continuous', 'continuous_rate', 'proposals_max_skew',
                    'depth_max_skew', 'sync_wait', 'precompute', 'precompute_rate')
# Each input has its own callback group, so no input ever waits for another one, for a
# command, for the service, for the diagnostics timer or for a lifecycle transition.
INPUTS = ('image', 'image/compressed', 'depth', 'camera_info', 'proposals', 'command')


class ReclipNode(Node):
    """Lifecycle node grounding text commands in the newest camera frame (see docs/node.md)."""

    def __init__(self, node_name: str = 'reclip', **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, conv.parameter_descriptor(spec))
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.grounder: Any = None
        self.worker: Optional[GroundingWorker] = None
        self.last_error = ''
        self.configured = False
        # Commands are let in only while active; the gate makes "check active, enqueue"
        # atomic against deactivation, so no command is enqueued after the queue is drained.
        self._gate = threading.Lock()
        self._active = False
        self._closing = ''  # why commands are refused while the process shuts down
        self.transport = 'as configured by the process'  # main() says which it chose
        self._vision = None  # vision_msgs.msg while its publishers exist
        self.results_published = 0
        self._input_groups = {name: MutuallyExclusiveCallbackGroup() for name in INPUTS}
        # one service call at a time: a waiting call holds one executor thread, never more
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._create_interface()

    def _create_interface(self) -> None:
        """Create every subscription, the service, the publishers and the timer, once.

        They live as long as the node and are gated by its state, never destroyed by a
        transition: destroying a subscription or service while the executor waits on it
        crashes rclpy (ros2/rclpy#1142, ``InvalidHandle``), and a command that arrives while
        the node is inactive must still get its DROPPED result.
        """
        reliable = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self._result_pub = self.create_publisher(GroundingResultMsg, 'grounding', COMMAND_QOS)
        self._debug_pub = self.create_publisher(Image, 'debug_image', 1)
        self._point_pub = self.create_publisher(PointStamped, 'target_point', reliable)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diagnostics_timer = self.create_timer(
            self.param('diagnostics_period'), self._publish_diagnostics,
            callback_group=self._timer_group)
        reliability = (QoSReliabilityPolicy.RELIABLE
                       if self.param('image_qos_reliability') == 'reliable'
                       else QoSReliabilityPolicy.BEST_EFFORT)
        image_qos = QoSProfile(depth=1, history=qos_profile_sensor_data.history,
                               reliability=reliability)
        # depth images are kept by stamp: take every one that arrives, not only the newest
        depth_qos = QoSProfile(depth=DEPTH_HISTORY, history=qos_profile_sensor_data.history,
                               reliability=reliability)

        def sub(msg_type, topic, callback, qos):
            return self.create_subscription(msg_type, topic, callback, qos,
                                            callback_group=self._input_groups[topic])

        self._inputs = [
            sub(Image, 'image', self._on_image, image_qos),
            sub(String, 'command', self._on_command, COMMAND_QOS),
            self.create_service(Ground, '~/ground', self._on_ground, qos_profile=COMMAND_QOS,
                                callback_group=self._service_group),
        ]
        if self.param('subscribe_compressed'):
            self._inputs.append(sub(CompressedImage, 'image/compressed',
                                    self._on_compressed, image_qos))
        if self.param('use_depth'):
            self._inputs += [sub(Image, 'depth', self._on_depth, depth_qos),
                             sub(CameraInfo, 'camera_info', self._on_camera_info, image_qos)]
        if self.param('use_proposals_topic'):
            self._inputs.append(sub(Proposals, 'proposals', self._on_proposals, 10))

    def executor_threads(self) -> int:
        """Threads a multi-threaded executor needs so every callback group can run at once.

        The inputs, the service, the diagnostics timer and the default group (lifecycle and
        parameter services), plus one spare.
        """
        return len(self._input_groups) + 3 + 1

    def param(self, name: str) -> Any:
        """Return the current value of parameter *name*."""
        return self.get_parameter(name).value

    # -- parameters ------------------------------------------------------------------------

    def _validate_parameters(self, params: Sequence[rclpy.parameter.Parameter]):
        for p in params:
            problem = validate(p.name, p.value)
            spec = SPECS.get(p.name)
            if problem is None and spec is not None and spec.on_configure and self.configured:
                problem = (f'{p.name} is applied on configure: deactivate and clean up the '
                           'node, set it, then configure again')
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: Sequence[rclpy.parameter.Parameter]) -> None:
        if self.worker is not None:
            self._update_settings(self.worker.settings)
        if self.grounder is not None:
            self.grounder.center_offset = float(self.param('center_offset'))

    def _update_settings(self, settings: WorkerSettings) -> None:
        for name in DYNAMIC_SETTINGS:
            setattr(settings, name, self.param(name))

    def _options(self):
        from reclip_ros.core.grounder import GroundingOptions
        return GroundingOptions(use_relations=bool(self.param('use_relations')),
                                size_prior=float(self.param('size_prior')),
                                relations=str(self.param('relations')))

    # -- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters and load the models; FAILURE (with the reason) when not possible."""
        from reclip_ros.core.grounder import Grounder, GrounderConfig
        problem = validate_all({spec.name: self.param(spec.name) for spec in PARAMETERS})
        if problem is None:
            try:
                config = GrounderConfig(
                    models=tuple(m for m in self.param('models') if m.strip()),
                    device=self.param('device'), precision=self.param('precision'),
                    spacy_model=self.param('spacy_model'), detector=self.param('detector'),
                    blur_sigma=self.param('blur_sigma'), size_prior=self.param('size_prior'),
                    methods=tuple(self.param('isolation_methods').split(',')),
                    batch_size=self.param('batch_size'),
                    max_expression_chars=self.param('max_expression_chars'),
                    detector_score_threshold=self.param('detector_score_threshold'),
                    detector_top_k=self.param('detector_top_k'),
                    center_offset=self.param('center_offset'),
                    relations=self.param('relations'),
                    max_proposals=self.param('max_proposals'),
                    max_image_pixels=self.param('max_image_pixels'))
                self.get_logger().info(f'loading models {list(config.models)} on '
                                       f'{config.device} (detector {config.detector!r})')
                self.grounder = Grounder.from_config(config)
                if config.detector:
                    self.get_logger().info(f'detector {config.detector!r}: '
                                           f'{self.grounder.detector_name}')
            except Exception as exc:  # noqa: BLE001 - the reason goes to the log
                problem = f'{type(exc).__name__}: {exc}'
        if problem is not None:
            self.last_error = f'configure failed: {problem}'
            self.get_logger().error(self.last_error)
            self._release()
            return FAILURE
        self.last_error = ''
        if not self._create_vision_publishers():
            self._release()
            return FAILURE
        settings = WorkerSettings(max_expression_chars=self.param('max_expression_chars'),
                                  has_detector=bool(self.param('detector')))
        self._update_settings(settings)
        self.worker = GroundingWorker(
            self.grounder, CommandQueue(self.param('queue_size')), self._publish,
            self._now_ns, settings, options=self._options, log_error=self.get_logger().error)
        self.configured = True
        self.get_logger().info(f'configured: models {self.grounder.model_names} on '
                               f'{self.grounder.device}')
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the worker and let inputs and commands in."""
        if self.grounder is not None:
            self.grounder.restore()  # back to the GPU after a deactivation
        self.worker.start()
        with self._gate:
            self._active = True
        self.get_logger().info('active: listening on '
                               f'{self.resolve_topic_name("image")} and '
                               f'{self.resolve_topic_name("command")}')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking commands; the command in progress finishes, waiting ones get DROPPED.

        The models stay loaded: on CUDA their weights move to host memory until the next
        activation, so an inactive node holds no GPU memory and reactivates in seconds.
        """
        self._stop_worker('the node was deactivated')
        if self.grounder is not None and self.grounder.offload():
            self.get_logger().info('inactive: models moved to host memory, GPU memory freed')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the models (and GPU memory)."""
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop and free everything from any state, fast (see :meth:`release`)."""
        self.release()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything and go back to unconfigured."""
        self.get_logger().error('error processing: releasing models')
        return self.on_shutdown(state)

    def release(self, reason: str = 'the node is shutting down',
                in_flight_timeout: float = 0.5) -> None:
        """Stop the worker and free the models (shutdown transition, process exit).

        Waiting commands get DROPPED at once; the command in progress gets its result if it
        finishes within *in_flight_timeout* seconds, else DROPPED (its late result is never
        published: every command has exactly one).
        """
        self._stop_worker(reason, in_flight_timeout)
        self._release()

    def wait_results_delivered(self, timeout_s: float = 1.0) -> bool:
        """Wait until every reliable subscriber acknowledged the results published so far."""
        from rclpy.duration import Duration
        try:
            return bool(self._result_pub.wait_for_all_acked(Duration(seconds=timeout_s)))
        except Exception:  # noqa: BLE001 - best effort at exit
            return False

    def begin_shutdown(self, reason: str = 'the node is shutting down') -> None:
        """Refuse new commands with *reason* (DROPPED) from now on; stop the worker."""
        self._closing = reason
        self._stop_worker(reason, in_flight_timeout=0.5)

    def _stop_worker(self, reason: str, in_flight_timeout: Optional[float] = None) -> None:
        with self._gate:
            self._active = False
        if self.worker is not None:
            self.worker.stop(reason=reason, in_flight_timeout=in_flight_timeout)

    def _create_vision_publishers(self) -> bool:
        """Create the vision_msgs publishers per ``publish_vision_msgs``; False: cannot."""
        mode = self.param('publish_vision_msgs')
        vision = conv.vision_msgs_module() if mode != 'false' else None
        if mode == 'true' and vision is None:
            self.last_error = ('configure failed: publish_vision_msgs is true but vision_msgs '
                               'is not installed (install ros-<distro>-vision-msgs, or set '
                               "publish_vision_msgs to 'auto' or 'false')")
            self.get_logger().error(self.last_error)
            return False
        self._vision = vision
        if vision is not None:
            self._detections_pub = self.create_publisher(vision.Detection2DArray,
                                                         'detections', 10)
            self._detections_3d_pub = self.create_publisher(vision.Detection3DArray,
                                                            'detections_3d', 10)
        return True

    def _destroy_vision_publishers(self) -> None:
        if self._vision is not None:
            self.destroy_publisher(self._detections_pub)
            self.destroy_publisher(self._detections_3d_pub)
        self._vision = None

    def _release(self) -> None:
        self._destroy_vision_publishers()
        self.worker = None
        if self.grounder is not None:
            self.grounder.close()
            self.grounder = None
        self.configured = False

    # -- inputs (executor threads: store and enqueue only) ---------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _frame(self, msg: Any, decoder) -> Frame:
        max_pixels = self.param('max_image_pixels')
        return Frame(conv.stamp_to_ns(msg.header.stamp), self._now_ns(), msg.header,
                     functools.partial(decoder, msg, max_pixels=max_pixels))

    def _active_worker(self) -> Optional[GroundingWorker]:
        worker = self.worker
        return worker if self._active and worker is not None else None

    def _on_image(self, msg: Image) -> None:
        worker = self._active_worker()
        if worker is not None:
            worker.feed_image(self._frame(msg, conv.image_to_rgb))

    def _on_compressed(self, msg: CompressedImage) -> None:
        worker = self._active_worker()
        if worker is not None:
            worker.feed_image(self._frame(msg, conv.compressed_to_rgb))

    def _on_depth(self, msg: Image) -> None:
        worker = self._active_worker()
        if worker is not None:
            worker.feed_depth(self._frame(msg, conv.depth_image_to_meters))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        worker = self._active_worker()
        if worker is None:
            return
        try:
            intrinsics = conv.camera_info_to_intrinsics(msg)
        except ValueError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=10.0)
            return
        worker.feed_camera_info(intrinsics, int(msg.width), int(msg.height))

    def _on_proposals(self, msg: Proposals) -> None:
        worker = self._active_worker()
        if worker is None:
            return
        try:
            boxes = conv.proposals_to_boxes(msg)
        except ValueError as exc:
            self.get_logger().warning(f'bad Proposals message: {exc}',
                                      throttle_duration_sec=10.0)
            return
        worker.feed_proposals(conv.stamp_to_ns(msg.header.stamp), boxes)

    def _submit(self, job: GroundingJob) -> None:
        """Queue *job*, or answer it DROPPED at once when the node is not active."""
        with self._gate:
            worker = self._active_worker()
            if worker is not None:
                worker.submit(job)
                return
        state = 'inactive' if self.configured else 'unconfigured'
        why = self._closing or f'the node is {state}'
        outcome = JobOutcome(GroundingResult.failure(
            job.expression, Status.DROPPED, f'not grounded: {why}'))
        if job.complete(outcome):
            self._publish(job, outcome)

    def _on_command(self, msg: String) -> None:
        self._submit(GroundingJob(msg.data, SOURCE_TOPIC, self._now_ns()))

    def _on_ground(self, request: Ground.Request, response: Ground.Response):
        job = GroundingJob(request.expression, SOURCE_SERVICE, self._now_ns())
        if request.image.width > 0 and request.image.height > 0:
            job.frame = self._frame(request.image, conv.image_to_rgb)
        if request.boxes:
            job.boxes = conv.rois_to_boxes(request.boxes)[0]
        self._submit(job)
        timeout = self.param('service_timeout')
        outcome = job.wait(timeout)
        if outcome is None:
            outcome = JobOutcome(GroundingResult.failure(
                job.expression, Status.ERROR, f'no result within service_timeout={timeout:g} s'))
            if job.complete(outcome):
                self._publish(job, outcome)
            outcome = job.wait(0)
        response.result = self._to_msg(job, outcome)
        return response

    # -- outputs (worker thread) -----------------------------------------------------------

    def _to_msg(self, job: GroundingJob, outcome: JobOutcome) -> GroundingResultMsg:
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

    def _publish(self, job: GroundingJob, outcome: JobOutcome) -> None:
        msg = self._to_msg(job, outcome)
        # the point first: a client reacting to the result finds its point already sent
        if msg.has_position:
            self._point_pub.publish(conv.position_to_point(outcome.result.position,
                                                           msg.header))
        self._result_pub.publish(msg)
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
                and self._debug_pub.get_subscription_count() > 0):
            from reclip_ros.core.drawing import draw_result
            drawn = draw_result(outcome.frame.decode(), outcome.result,
                                top_k=self.param('debug_top_k'))
            self._debug_pub.publish(conv.array_to_image(drawn, 'rgb8', msg.header))

    def _publish_diagnostics(self) -> None:
        worker, grounder = self.worker, self.grounder
        if worker is None or grounder is None:
            return
        frame = worker.newest_frame()
        values = {'device': grounder.device, 'models': grounder.model_names,
                  'detector': grounder.detector_name or '(proposals topic only)',
                  'continuous': self.param('continuous'), 'transport': self.transport}
        values.update(worker.status_values(self._now_ns()))
        level, message = DiagnosticStatus.OK, 'ok'
        if worker.running and frame is None:
            level, message = DiagnosticStatus.WARN, 'no image received yet'
        elif worker.queue_full():
            level, message = DiagnosticStatus.WARN, 'command queue full'
        status = conv.diagnostic_status(f'{self.get_name()}: grounding', grounder.device,
                                        level[0], message, values)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


class _StopSignals:
    """SIGINT and SIGTERM ask the spin loop to stop (the process exits with code 0).

    rclpy's own handler would shut the context down at once, so the results of waiting
    commands could no longer be published ("publisher's context is invalid"); here the
    node first answers them, then shuts down (bounded: about a second). Further signals
    while stopping are ignored: Ctrl-C under launch delivers two (the terminal's to the
    process group, then launch's own), and the second must not cut the clean-up short.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous = {}

    def __enter__(self) -> _StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested.set()

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _answer_pending_commands(executor, node: ReclipNode, quiet_s: float = 0.05,
                             limit_s: float = 0.5) -> None:
    """Take the commands DDS has already delivered and answer them DROPPED.

    Spins until no new result was published for *quiet_s* seconds (at most *limit_s*): a
    command sent before the signal must not go unanswered because its callback had not run.
    """
    deadline = time.monotonic() + limit_s
    last_count, last_change = node.results_published, time.monotonic()
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
        if node.results_published != last_count:
            last_count, last_change = node.results_published, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            return


def main(argv: Optional[Sequence[str]] = None, fast_exit: bool = True) -> int:
    """Run the node until SIGINT/SIGTERM; configure and activate it when ``autostart`` is true.

    On a signal the node stops within about a second: waiting commands are answered
    DROPPED, the command in progress gets its result if it ends within a second (else
    DROPPED), the models are released, and the process exits with code 0. With
    *fast_exit* the process then ends at once (``os._exit`` after flushing): everything
    was released explicitly, and the interpreter's own teardown of torch and transformers
    takes seconds more, which launch would count against its SIGINT grace period.
    """
    from rclpy.signals import SignalHandlerOptions

    from reclip_ros.ros.transport import apply_large_frame_default
    transport = apply_large_frame_default()  # before the DDS participant exists
    args = ['reclip_node'] + list(sys.argv[1:] if argv is None else argv)
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # noqa: BLE001 - rcl reports malformed --ros-args this way
        print(f'error: invalid ROS arguments {args[1:]}: {exc} (an empty string parameter '
              "is written -p \"detector:=''\")", file=sys.stderr)
        return 2
    with _StopSignals() as stop:
        try:
            node = ReclipNode()
        except Exception as exc:  # noqa: BLE001 - e.g. a parameter override of the wrong type
            print(f'error: cannot start the node: {type(exc).__name__}: {exc}',
                  file=sys.stderr)
            rclpy.try_shutdown()
            return 2
        node.get_logger().info(f'transport: {transport}')
        node.transport = transport
        executor = MultiThreadedExecutor(num_threads=node.executor_threads())
        executor.add_node(node)
        code = 0
        try:
            if node.param('autostart') and not stop.requested.is_set():
                if node.trigger_configure() == SUCCESS:
                    node.trigger_activate()
                else:
                    node.get_logger().error('autostart: configure failed; the node stays '
                                            'unconfigured (fix the parameters and configure '
                                            'again)')
            while not stop.requested.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            start = time.monotonic()
            try:
                node.begin_shutdown('the node is shutting down')
                _answer_pending_commands(executor, node)
                node.release(reason='the node is shutting down')
                # the last results (DROPPED answers) must reach their subscribers before
                # the process ends: DDS delivers a reliable sample until acknowledged
                node.wait_results_delivered(0.5)
            except Exception as exc:  # noqa: BLE001 - best effort at exit
                print(f'reclip_node: shutdown: {exc}', file=sys.stderr)
                code = 1
            executor.shutdown(timeout_sec=0.5)
            node.destroy_node()
            rclpy.try_shutdown()
            print(f'reclip_node: stopped in {time.monotonic() - start:.2f} s', file=sys.stderr)
    if fast_exit:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == '__main__':
    sys.exit(main())
