"""The ``reclip`` lifecycle node: camera + text commands in, grounded boxes out.

An adapter only: messages are converted in :mod:`reclip_ros.ros.conversions`, jobs are queued
in :mod:`reclip_ros.runtime.jobs` and grounded on the worker thread of
:mod:`reclip_ros.runtime.worker`, which calls :class:`reclip_ros.core.grounder.Grounder`.
What it publishes is in :mod:`reclip_ros.ros.outputs`; the process around it (signals,
clean exit) in :mod:`reclip_ros.ros.node_process`. Run it with ``reclip node [--ros-args
...]`` or ``ros2 run reclip_ros reclip_node``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional, Sequence

import rclpy
import rclpy.node
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import String

from reclip_ros.core.types import Status
from reclip_ros.ros import conversions as conv
from reclip_ros.ros.outputs import COMMAND_QOS, ResultOutputs
from reclip_ros.runtime.jobs import SOURCE_SERVICE, SOURCE_TOPIC, CommandQueue, GroundingJob
from reclip_ros.runtime.jobs import reject as reject_job
from reclip_ros.runtime.parameters import (PARAMETERS, change_problem, grounder_config,
                                           grounding_options, validate_all)
from reclip_ros.ros.inputs import SensorInputs
from reclip_ros.runtime.worker import GroundingWorker, WorkerSettings
from reclip_ros.srv import Ground

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


class ReclipNode(LifecycleNodeMixin, rclpy.node.Node):
    """Lifecycle node grounding text commands in the newest camera frame (see docs/node.md).

    A lifecycle node (``rclpy.lifecycle.Node`` is the same two classes) whose lifecycle
    services have a callback group of their own: a configure that loads models for seconds
    holds that group only, so parameters (the default group), commands, the service and the
    diagnostics are answered meanwhile.

    Args:
        node_name: the node's name.
        grounder_factory: builds the grounder from its ``GrounderConfig`` on configure
            (default ``Grounder.from_config``; tests wrap the real one to hold a call).
        kwargs: as ``rclpy.node.Node`` (context, parameter_overrides, ...).
    """

    def __init__(self, node_name: str = 'reclip',
                 grounder_factory: Optional[Callable[[Any], Any]] = None,
                 **kwargs: Any) -> None:
        rclpy.node.Node.__init__(self, node_name, **kwargs)
        self._grounder_factory = grounder_factory
        self._lifecycle_group = MutuallyExclusiveCallbackGroup()
        LifecycleNodeMixin.__init__(self, callback_group=self._lifecycle_group)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, conv.parameter_descriptor(spec))
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.grounder: Any = None
        self.worker: Optional[GroundingWorker] = None
        self.last_error = ''
        self.configured = False
        self.configuring = False  # models are being loaded (commands: DROPPED at once)
        # Commands are let in only while active; the gate makes "check active, enqueue"
        # atomic against deactivation, so no command is enqueued after the queue is drained.
        self._gate = threading.Lock()
        self._active = False
        self._closing = ''  # why commands are refused while the process shuts down
        self.transport = 'as configured by the process'  # main() says which it chose
        self._command_group = MutuallyExclusiveCallbackGroup()
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
        self.outputs = ResultOutputs(self, self.param)
        self._diagnostics_timer = self.create_timer(
            self.param('diagnostics_period'), self._publish_diagnostics,
            callback_group=self._timer_group)
        self.inputs = SensorInputs(self, self.param, self._active_worker, self._now_ns)
        self._command_sub = self.create_subscription(String, 'command', self._on_command,
                                                     COMMAND_QOS,
                                                     callback_group=self._command_group)
        self._service = self.create_service(Ground, '~/ground', self._on_ground,
                                            qos_profile=COMMAND_QOS,
                                            callback_group=self._service_group)

    def executor_threads(self) -> int:
        """Threads a multi-threaded executor needs so every callback group can run at once.

        The sensor inputs, the command, the service, the diagnostics timer, the lifecycle
        services and the default group (parameter services), plus one spare.
        """
        return len(self.inputs.groups) + 5 + 1

    def param(self, name: str) -> Any:
        """Return the current value of parameter *name*."""
        return self.get_parameter(name).value

    # -- parameters ------------------------------------------------------------------------

    def _validate_parameters(self, params: Sequence[rclpy.parameter.Parameter]):
        for p in params:
            problem = change_problem(p.name, p.value, self.configured)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _values(self) -> dict:
        return {spec.name: self.param(spec.name) for spec in PARAMETERS}

    def _apply_parameters(self, params: Sequence[rclpy.parameter.Parameter]) -> None:
        if self.worker is not None:
            self.worker.update_settings(self._values())
        if self.grounder is not None:
            self.grounder.update_live(center_offset=self.param('center_offset'))

    def _options(self):
        return grounding_options(self._values())

    # -- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters and load the models; FAILURE (with the reason) when not possible.

        Commands and calls that arrive meanwhile are answered DROPPED at once ("the node is
        configuring"); the models are warmed (spaCy, tokenizers, one forward pass) before
        the transition ends, so the first command pays none of it.
        """
        self.configuring = True
        try:
            return self._configure()
        finally:
            self.configuring = False

    def _configure(self) -> TransitionCallbackReturn:
        from reclip_ros.core.grounder import Grounder
        values = self._values()
        problem = validate_all(values)
        if problem is None:
            try:
                config = grounder_config(values)
                self.get_logger().info(f'loading models {list(config.models)} on '
                                       f'{config.device} (detector {config.detector!r})')
                start = time.monotonic()
                self.grounder = (self._grounder_factory or Grounder.from_config)(config)
                loaded = time.monotonic()
                warm_ms = self.grounder.warm_up()
                self.get_logger().info(f'models loaded in {loaded - start:.2f} s, warmed up in '
                                       f'{warm_ms / 1000:.2f} s')
                if self._closing:
                    problem = f'not configured: {self._closing}'
                elif config.detector:
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
        problem = self.outputs.create_vision_publishers()
        if problem:
            self.last_error = problem
            self.get_logger().error(problem)
            self._release()
            return FAILURE
        settings = WorkerSettings(max_expression_chars=self.param('max_expression_chars'),
                                  has_detector=bool(self.param('detector')))
        self.worker = GroundingWorker(
            self.grounder, CommandQueue(self.param('queue_size')), self.outputs.publish,
            self._now_ns, settings, options=self._options, log_error=self.get_logger().error)
        self.worker.update_settings(values)
        self.configured = True
        self.get_logger().info(f'configured: models {self.grounder.model_names} on '
                               f'{self.grounder.device}')
        return SUCCESS

    @property
    def closing(self) -> bool:
        """True once the process began shutting down (no further activation)."""
        return bool(self._closing)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the worker and let inputs and commands in."""
        if self._closing or self.worker is None:
            return FAILURE
        if self.grounder is not None:
            self.grounder.restore()  # back to the GPU after a deactivation
        self.worker.start()
        with self._gate:
            self._active = True
        self.get_logger().info('active: listening on '
                               f'{self.resolve_topic_name("image")} and '
                               f'{self.resolve_topic_name("command")}; all inputs: '
                               + ', '.join(self.inputs.topic_names()
                                           + [self._command_sub.topic_name]))
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
        return self.outputs.wait_delivered(timeout_s)

    def begin_shutdown(self, reason: str = 'the node is shutting down') -> None:
        """Refuse new commands with *reason* (DROPPED) from now on; stop the worker."""
        self._closing = reason
        self._stop_worker(reason, in_flight_timeout=0.5)

    def _stop_worker(self, reason: str, in_flight_timeout: Optional[float] = None) -> None:
        with self._gate:
            self._active = False
        if self.worker is not None:
            self.worker.stop(reason=reason, in_flight_timeout=in_flight_timeout)

    def _release(self) -> None:
        self.outputs.destroy_vision_publishers()
        self.worker = None
        if self.grounder is not None:
            self.grounder.close()
            self.grounder = None
        self.configured = False

    # -- inputs (executor threads: store and enqueue only) ---------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _active_worker(self) -> Optional[GroundingWorker]:
        worker = self.worker
        return worker if self._active and worker is not None else None

    def _submit(self, job: GroundingJob) -> None:
        """Queue *job*, or answer it DROPPED at once when the node is not active."""
        with self._gate:
            worker = self._active_worker()
            if worker is not None:
                worker.submit(job)
                return
        state = ('configuring (loading its models)' if self.configuring else
                 'inactive' if self.configured else 'unconfigured')
        why = self._closing or f'the node is {state}'
        self._reject(job, Status.DROPPED, f'not grounded: {why}')

    def _reject(self, job: GroundingJob, status: Status, message: str) -> None:
        outcome = reject_job(job, status, message)
        if outcome is not None:
            self.outputs.publish(job, outcome)

    def _on_command(self, msg: String) -> None:
        self._submit(GroundingJob(msg.data, SOURCE_TOPIC, self._now_ns()))

    def _on_ground(self, request: Ground.Request, response: Ground.Response):
        job = GroundingJob(request.expression, SOURCE_SERVICE, self._now_ns())
        if request.image.width > 0 and request.image.height > 0:
            job.frame = self.inputs.frame(request.image, conv.image_to_rgb)
        if request.boxes:
            job.boxes = conv.rois_to_boxes(request.boxes)[0]
        self._submit(job)
        timeout = self.param('service_timeout')
        outcome = job.wait(timeout)
        if outcome is None:
            self._reject(job, Status.ERROR, f'no result within service_timeout={timeout:g} s')
            outcome = job.wait(0)
        response.result = self.outputs.to_msg(job, outcome)
        return response

    def _publish_diagnostics(self) -> None:
        worker, grounder = self.worker, self.grounder
        if worker is None or grounder is None:
            state = 'configuring' if self.configuring else 'unconfigured'
            level = DiagnosticStatus.WARN if self.last_error else DiagnosticStatus.OK
            self.outputs.publish_state(state, level, self.last_error or state,
                                       self.get_clock().now().to_msg())
            return
        self.outputs.publish_diagnostics(worker, {
            'device': grounder.device, 'models': grounder.model_names,
            'detector': grounder.detector_name or '(proposals topic only)',
            'continuous': self.param('continuous'), 'transport': self.transport},
            self.get_clock().now().to_msg())
