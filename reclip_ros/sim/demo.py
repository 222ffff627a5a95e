"""``reclip demo``: the simulated camera and the node as real processes, scripted commands.

The demo starts two child processes in a ROS domain of their own (real DDS):

- the simulated RGB-D camera (``reclip sim --publish-proposals``), and
- the grounding node (``reclip node``) with the embedded model ``sim`` and the
  ground-truth boxes of the ``proposals`` topic as proposals,

then, for each scene, reads the scene's ground truth from the ``ground_truth`` topic,
writes referring expressions for it (:mod:`reclip_ros.sim.expressions`), publishes them
on ``command`` one by one and reads the answers on ``grounding`` and ``target_point``.
For every command it prints the chosen object (the ground-truth object whose box overlaps
the answer most), the confidence and whether it is right (IoU > 0.5 with the referent, the
rule of every evaluation), and writes an annotated PNG; ``summary.md`` and ``summary.json``
end the run.

:class:`SimStack` (the two processes) and :class:`GroundingClient` (the ROS client) are
reused by the end-to-end tests.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from reclip_ros.core.types import Box, Status
from reclip_ros.evaluation.tally import AccuracyTally
from reclip_ros.evaluation.variants import IOU_THRESHOLD, best_iou, is_correct
from reclip_ros.ros import conversions as conv
from reclip_ros.ros.transport import large_frames_profile

# GroundingResult status codes that mean "not ready yet, ask again".
_RETRY_STATUSES = {int(Status.NO_IMAGE), int(Status.NO_PROPOSALS), int(Status.DROPPED)}
TARGET_COLOUR = (255, 0, 255)  # RGB of the referent's ground-truth box in the PNGs


class DemoError(RuntimeError):
    """The pipeline itself failed (a process died, no answers, a timeout)."""


def _source_root() -> Path:
    """Directory that holds the ``reclip_ros`` package being run (for PYTHONPATH)."""
    return Path(__file__).resolve().parents[2]


def pick_domain_id() -> int:
    """Return a ROS domain id for a private run (``RECLIP_DEMO_DOMAIN_ID`` or random 120-149)."""
    value = os.environ.get('RECLIP_DEMO_DOMAIN_ID')
    if value:
        return int(value)
    return random.Random(os.getpid() ^ time.time_ns()).randint(120, 149)


# ---------------------------------------------------------------------- processes
class SimStack:
    """The simulated camera and the grounding node as child processes in one ROS domain.

    Args:
        seed: first scene seed of the camera.
        domain_id: ROS_DOMAIN_ID of the children (None: :func:`pick_domain_id`).
        models: CLIP models of the node (default: the embedded ``sim`` model).
        rate: camera rate in Hz.
        width, height: image size.
        log_dir: where ``sim_camera.log`` and ``reclip_node.log`` go (None: not kept).
        node_params: extra ``name:=value`` parameters of the node.
    """

    def __init__(self, seed: int, domain_id: Optional[int] = None,
                 models: Sequence[str] = ('sim',), rate: float = 5.0, width: int = 640,
                 height: int = 480, log_dir: Optional[Path] = None,
                 node_params: Sequence[str] = ()) -> None:
        self.seed = int(seed)
        self.domain_id = pick_domain_id() if domain_id is None else int(domain_id)
        self.models = list(models)
        self.rate, self.width, self.height = float(rate), int(width), int(height)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.node_params = list(node_params)
        self.processes: Dict[str, subprocess.Popen] = {}
        self._logs: Dict[str, object] = {}

    def commands(self) -> Dict[str, List[str]]:
        """The command lines of the two processes."""
        python = [sys.executable, '-m', 'reclip_ros.cli']
        sim = python + ['sim', '--seed', str(self.seed), '--rate', str(self.rate),
                        '--width', str(self.width), '--height', str(self.height),
                        '--publish-proposals', '--reliable']
        models = '[' + ','.join(self.models) + ']'
        # the camera publishes reliable: a reliable reader repairs lost fragments of the
        # ~1 MB frames, which best effort drops
        node = python + ['node', '--ros-args', '-p', f'models:={models}',
                         '-p', "detector:=''", '-p', 'autostart:=true',
                         '-p', 'device:=cpu', '-p', 'image_qos_reliability:=reliable']
        for param in self.node_params:
            node += ['-p', param]
        return {'sim_camera': sim, 'reclip_node': node}

    def environment(self) -> Dict[str, str]:
        """Environment of the children: own domain id, this package first on the path."""
        env = dict(os.environ)
        env['ROS_DOMAIN_ID'] = str(self.domain_id)
        root = str(_source_root())
        env['PYTHONPATH'] = os.pathsep.join(
            [root] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
        env.setdefault('OMP_NUM_THREADS', '1')
        env['PYTHONUNBUFFERED'] = '1'
        # Fast DDS's default 512 KB shared-memory segment loses ~1 MB frames between the
        # camera and the node (docs/node.md); use the large-frames profile unless the user
        # chose a profile
        profile = large_frames_profile()
        if profile is not None and not (env.get('FASTDDS_DEFAULT_PROFILES_FILE')
                                        or env.get('FASTRTPS_DEFAULT_PROFILES_FILE')):
            env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
        return env

    def start(self) -> SimStack:
        """Start both processes (each in its own process group)."""
        env = self.environment()
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, argv in self.commands().items():
            if self.log_dir is not None:
                log = open(self.log_dir / f'{name}.log', 'w')  # noqa: SIM115 - closed in stop
                self._logs[name] = log
                out = log
            else:
                out = subprocess.DEVNULL
            self.processes[name] = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def check_alive(self) -> None:
        """Raise :class:`DemoError` when a child has exited."""
        for name, proc in self.processes.items():
            code = proc.poll()
            if code is not None:
                raise DemoError(f'{name} exited with code {code}' + self.log_tail(name))

    def log_tail(self, name: str, chars: int = 1500) -> str:
        """The end of a child's log (empty when logs are not kept)."""
        if self.log_dir is None:
            return ''
        path = self.log_dir / f'{name}.log'
        try:
            return f'; last lines of {path}:\n' + path.read_text()[-chars:]
        except OSError:
            return ''

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the children: SIGINT, then SIGTERM, then SIGKILL (each process group)."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0),
                          (signal.SIGKILL, 3.0)):
            running = [p for p in self.processes.values() if p.poll() is None]
            if not running:
                break
            for proc in running:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            for proc in running:
                try:
                    proc.wait(max(deadline - time.monotonic(), 0.01))
                except subprocess.TimeoutExpired:
                    pass
        for log in self._logs.values():
            log.close()
        self._logs.clear()

    def __enter__(self) -> SimStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------- ROS client
@dataclass
class Answer:
    """The node's answer to one command, with what came with it."""

    result: object  # reclip_ros.msg.GroundingResult
    target_points: List[object] = field(default_factory=list)  # PointStamped, same stamp
    image: Optional[np.ndarray] = None  # the grounded camera frame (RGB), when received
    attempts: int = 1
    stamp_seen: bool = False  # the result's stamp is that of an image the camera published


class GroundingClient:
    """A ROS client of the sim camera and the node, in its own context and domain.

    It spins in a background thread; the methods block until their answer arrives.
    """

    def __init__(self, domain_id: int, node_name: str = 'reclip_demo_client',
                 camera_node: str = 'sim_camera', grounding_node: str = 'reclip',
                 reliable_images: bool = True) -> None:
        import rclpy
        from geometry_msgs.msg import PointStamped
        from lifecycle_msgs.msg import TransitionEvent
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter_client import AsyncParameterClient
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from reclip_ros.msg import GroundingResult
        from reclip_ros.sim.camera_node import _latched_qos

        self._rclpy = rclpy
        self._String = String
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(domain_id))
        self.node = rclpy.create_node(node_name, context=self.context)
        self._cond = threading.Condition()
        self._truths: List[dict] = []
        self._results: List[object] = []
        self._points: List[object] = []
        self._frames: Dict[tuple, np.ndarray] = {}
        self._frame_order: List[tuple] = []
        self.image_stamps: set = set()  # (sec, nanosec) of every camera image received
        self.node_failure = ''
        self.node.create_subscription(String, 'ground_truth', self._on_truth, _latched_qos())
        self.node.create_subscription(GroundingResult, 'grounding', self._on_result, 100)
        self.node.create_subscription(PointStamped, 'target_point', self._on_point, 100)
        self.node.create_subscription(Image, 'image', self._on_image,
                                      10 if reliable_images else qos_profile_sensor_data)
        self.node.create_subscription(TransitionEvent, f'{grounding_node}/transition_event',
                                      self._on_transition, 10)
        self._command_pub = self.node.create_publisher(String, 'command', 100)
        self._params = AsyncParameterClient(self.node, camera_node)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    # -- callbacks
    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - shutdown races end the spin thread quietly
            pass

    def _on_truth(self, msg) -> None:
        with self._cond:
            self._truths.append(json.loads(msg.data))
            self._cond.notify_all()

    def _on_result(self, msg) -> None:
        with self._cond:
            self._results.append(msg)
            self._cond.notify_all()

    def _on_point(self, msg) -> None:
        with self._cond:
            self._points.append(msg)
            self._cond.notify_all()

    def _on_transition(self, msg) -> None:
        # configuring -> unconfigured (or errorprocessing): the models did not load
        failed = {'configuring': ('unconfigured', 'errorprocessing'),
                  'activating': ('inactive', 'errorprocessing')}
        if msg.goal_state.label in failed.get(msg.start_state.label, ()):
            with self._cond:
                self.node_failure = f'{msg.start_state.label} -> {msg.goal_state.label}'
                self._cond.notify_all()

    def _on_image(self, msg) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if msg.encoding != 'rgb8':
            return
        array = np.frombuffer(bytes(msg.data), np.uint8).reshape(
            msg.height, msg.step)[:, :msg.width * 3].reshape(msg.height, msg.width, 3)
        with self._cond:
            self.image_stamps.add(key)
            self._frames[key] = array
            self._frame_order.append(key)
            while len(self._frame_order) > 30:
                self._frames.pop(self._frame_order.pop(0), None)
            self._cond.notify_all()

    def _wait(self, predicate, timeout: float):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    # -- API
    def wait_until_ready(self, timeout: float, check=None) -> None:
        """Wait until the node subscribes to ``command`` and publishes ``grounding``.

        *check* is called every 0.2 s (e.g. :meth:`SimStack.check_alive`).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check is not None:
                check()
            if self.node_failure:
                raise DemoError(f'the node failed to start ({self.node_failure}); see its log')
            if (self._command_pub.get_subscription_count() > 0
                    and self.node.count_publishers('grounding') > 0):
                break
            time.sleep(0.2)
        else:
            raise DemoError(f'the node did not come up within {timeout:.0f} s')
        # commands before the node is active are answered DROPPED: wait for its models
        from reclip_ros.ros.lifecycle_client import wait_active
        if not wait_active(self.node, '/reclip', max(deadline - time.monotonic(), 0.1), check):
            raise DemoError(f'the node did not become active within {timeout:.0f} s')

    def wait_for_truth(self, seed: int, timeout: float = 30.0) -> dict:
        """Return the ground truth of scene *seed* (waits for the camera to publish it)."""
        truth = self._wait(lambda: next((t for t in reversed(self._truths)
                                         if t['seed'] == seed), None), timeout)
        if truth is None:
            raise DemoError(f'no ground truth for seed {seed} within {timeout:.0f} s')
        return truth

    def set_seed(self, seed: int, timeout: float = 30.0) -> dict:
        """Ask the camera for scene *seed*; return its ground truth."""
        from rclpy.parameter import Parameter
        if not self._params.wait_for_services(timeout_sec=timeout):
            raise DemoError('the sim camera parameter service is not available')
        future = self._params.set_parameters([Parameter('seed', value=int(seed))])
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not future.done():
            raise DemoError(f'setting the camera seed to {seed} timed out')
        outcome = future.result().results[0]
        if not outcome.successful:
            raise DemoError(f'the camera refused seed {seed}: {outcome.reason}')
        return self.wait_for_truth(seed, timeout)

    def wait_for_frame(self, min_stamp: dict, timeout: float = 10.0) -> None:
        """Wait until a camera frame stamped at or after *min_stamp* has arrived."""
        floor = (min_stamp['sec'], min_stamp['nanosec'])
        if not self._wait(lambda: any(k >= floor for k in self._frame_order), timeout):
            raise DemoError(f'no camera frame of the new scene within {timeout:.0f} s')

    def ground(self, text: str, min_stamp: Optional[dict] = None, timeout: float = 30.0,
               retry_for: float = 20.0) -> Answer:
        """Publish *text* on ``command`` and return the node's answer.

        Answers on a frame older than *min_stamp* (the previous scene) or with a
        not-ready status (NO_IMAGE, NO_PROPOSALS, DROPPED) are asked again, for at most
        *retry_for* seconds; *timeout* bounds the wait for each answer.
        """
        floor = (min_stamp['sec'], min_stamp['nanosec']) if min_stamp else (0, 0)
        deadline = time.monotonic() + retry_for
        attempts = 0
        while True:
            attempts += 1
            with self._cond:
                start = len(self._results)
            self._command_pub.publish(self._String(data=text))
            msg = self._wait(functools.partial(self._answer_to, text, start), timeout)
            if msg is None:
                raise DemoError(f'no answer to {text!r} within {timeout:.0f} s')
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            stale = msg.status == 0 and stamp < floor
            if (not stale and msg.status not in _RETRY_STATUSES) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        answer = Answer(result=msg, attempts=attempts)
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        answer.stamp_seen = bool(self._wait(lambda: key in self.image_stamps, 1.0))
        if msg.status == 0:
            if msg.has_position:
                # target_point is published just before the result, on another topic: wait
                # for the point of *this* result (same header, same coordinates), not for
                # any point of the frame (several commands share a frame and its header)
                self._wait(lambda: [p for p in self._points if _same_point(p, msg)], 2.0)
            with self._cond:
                answer.target_points = [p for p in self._points if _same_point(p, msg)]
                # the scene is static: any frame of it shows what was grounded
                same_scene = [k for k in self._frame_order if k >= floor]
                answer.image = self._frames.get(key)
                if answer.image is None and same_scene:
                    answer.image = self._frames[same_scene[-1]]
        return answer

    def _answer_to(self, text: str, start: int):
        """The first result for *text* received after index *start* (lock held)."""
        return next((r for r in self._results[start:] if r.expression == text), None)

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        try:
            self._executor.shutdown(timeout_sec=1.0)
        except Exception:  # noqa: BLE001
            pass
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)

    def __enter__(self) -> GroundingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _same_stamp(a, b) -> bool:
    return (a.header.stamp.sec == b.header.stamp.sec
            and a.header.stamp.nanosec == b.header.stamp.nanosec)


# ---------------------------------------------------------------------- scoring
def truth_objects(truth: dict) -> list:
    """Rebuild :class:`reclip_ros.sim.world.SimObject` values from a ground-truth dict."""
    from reclip_ros.sim.world import SimObject
    return [SimObject(name=o['name'], colour=o['colour'], size=o['size'],
                      box=Box.from_list(o['box']), center=tuple(o['center']),
                      body_id=int(o.get('body_id', -1)), pixels=int(o.get('pixels', 0)))
            for o in truth['objects']]


@dataclass
class Outcome:
    """One scripted command and how the node answered it."""

    seed: int
    text: str
    category: str
    target: str  # e.g. 'big red cube'
    target_index: int
    status: str
    message: str = ''  # the result's status_message (notes such as a missing depth image)
    chosen: Optional[str] = None  # ground-truth object best matching the answer
    chosen_index: Optional[int] = None
    iou: float = 0.0
    confidence: float = 0.0
    correct: bool = False
    position: Optional[List[float]] = None
    position_error_m: Optional[float] = None  # |position - true centre|
    target_point_error_m: Optional[float] = None  # |target_point - true centre|
    header_matches_camera: bool = False  # frame id and stamp of a frame of this scene
    latency_ms: float = 0.0
    attempts: int = 1
    image: Optional[str] = None


def _same_point(point, result) -> bool:
    """True when *point* is the ``target_point`` of *result* (header and coordinates)."""
    return (_same_stamp(point, result) and point.header.frame_id == result.header.frame_id
            and (point.point.x, point.point.y, point.point.z)
            == (result.position.x, result.position.y, result.position.z))


def score_answer(seed: int, expression, truth: dict, objects: list, answer: Answer) -> Outcome:
    """Compare the node's answer with the ground truth of the scene."""
    msg = answer.result
    target = objects[expression.target_index]
    out = Outcome(seed=seed, text=expression.text, category=expression.category,
                  target=target.description, target_index=expression.target_index,
                  status=conv.status_name(msg.status),
                  message=msg.status_message,
                  attempts=answer.attempts, latency_ms=float(msg.latency_total_ms))
    out.header_matches_camera = (msg.header.frame_id == truth['frame_id'] and answer.stamp_seen
                                 and (msg.header.stamp.sec, msg.header.stamp.nanosec)
                                 >= (truth['stamp']['sec'], truth['stamp']['nanosec']))
    box = conv.roi_to_box_or_none(msg.box) if msg.status == 0 else None
    if box is None:
        return out
    ious = [box.iou(o.box) for o in objects]
    best = int(np.argmax(ious))
    out.chosen, out.chosen_index = objects[best].description, best
    out.iou = best_iou(box, [target.box])
    out.confidence = float(msg.confidence)
    out.correct = is_correct(box, [target.box])
    centre = np.asarray(target.center, dtype=float)
    if msg.has_position:
        position = np.array([msg.position.x, msg.position.y, msg.position.z])
        out.position = [float(v) for v in position]
        out.position_error_m = float(np.linalg.norm(position - centre))
    if answer.target_points:
        errors = [np.linalg.norm(np.array([p.point.x, p.point.y, p.point.z]) - centre)
                  for p in answer.target_points]
        out.target_point_error_m = float(min(errors))
    return out


def accuracy_table(outcomes: Sequence[Outcome]) -> Dict[str, dict]:
    """Per category and ``overall``: ``{n, correct, accuracy}``."""
    tally = AccuracyTally(sorted({o.category for o in outcomes}))
    for outcome in outcomes:
        tally.add(outcome.category, outcome.correct)
    return tally.table()


# ---------------------------------------------------------------------- drawing
def annotate(image_rgb: np.ndarray, objects: list, outcome: Outcome, answer: Answer
             ) -> np.ndarray:
    """Draw the answer (:func:`reclip_ros.core.drawing.draw_result`), the referent and verdict.

    The referent's ground-truth box is outlined in magenta; a banner at the bottom says
    whether the answer is right and which object was chosen.
    """
    from reclip_ros.core.drawing import draw_label, draw_labeled_box, draw_result
    canvas = draw_result(image_rgb, conv.msg_to_result(answer.result), top_k=2)
    draw_labeled_box(canvas, objects[outcome.target_index].box, TARGET_COLOUR, 1, 'target',
                     scale=max(canvas.shape[0] / 1200.0, 0.3))
    verdict = 'RIGHT' if outcome.correct else 'WRONG'
    text = (f'{verdict}: chose {outcome.chosen or outcome.status}; '
            f'target {outcome.target} (magenta)')
    colour = (0, 150, 0) if outcome.correct else (200, 0, 0)
    scale = max(canvas.shape[0] / 960.0, 0.35)
    draw_label(canvas, text, 0, canvas.shape[0] - 2, colour, scale, 1)
    return canvas


# ---------------------------------------------------------------------- the demo
def run_session(client: GroundingClient, seeds: Sequence[int], per_category: int = 2,
                on_outcome=None, out_dir: Optional[Path] = None, check=None,
                first_truth: Optional[dict] = None) -> List[Outcome]:
    """Ground generated expressions on each scene; return the outcomes.

    Args:
        client: a connected :class:`GroundingClient`.
        seeds: scene seeds; the camera is switched to each in turn.
        per_category: expressions per category and scene (0 = all).
        on_outcome: called with ``(outcome, answer, objects)`` after each command.
        out_dir: where annotated PNGs go (None: none written).
        check: called between commands (e.g. :meth:`SimStack.check_alive`).
        first_truth: ground truth of ``seeds[0]`` when the camera already shows it.
    """
    from reclip_ros.sim.expressions import generate_expressions
    outcomes: List[Outcome] = []
    for scene_index, seed in enumerate(seeds):
        if scene_index == 0 and first_truth is not None and first_truth['seed'] == seed:
            truth = first_truth
        else:
            truth = client.set_seed(seed)
        client.wait_for_frame(truth['stamp'])
        objects = truth_objects(truth)
        expressions = generate_expressions(objects, np.random.default_rng(seed),
                                           max_per_category=per_category)
        for number, expression in enumerate(expressions):
            if check is not None:
                check()
            answer = client.ground(expression.text, min_stamp=truth['stamp'])
            outcome = score_answer(seed, expression, truth, objects, answer)
            if out_dir is not None and answer.image is not None:
                name = f'scene{seed}_{number:02d}_{expression.category}.png'
                canvas = annotate(answer.image, objects, outcome, answer)
                cv2.imwrite(str(out_dir / name), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
                outcome.image = name
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome, answer, objects)
    return outcomes


def _print_outcome(outcome: Outcome, answer: Answer, objects: list) -> None:
    verdict = 'right' if outcome.correct else 'WRONG'
    chosen = outcome.chosen or f'nothing ({outcome.status})'
    print(f'[seed {outcome.seed}] {outcome.category:<11} "{outcome.text}"\n'
          f'    -> {chosen}, confidence {outcome.confidence:.2f}, {verdict}'
          f' (target: {outcome.target})', flush=True)


def write_summary(out_dir: Path, outcomes: Sequence[Outcome], info: dict) -> dict:
    """Write ``summary.json`` and ``summary.md``; return the summary dict."""
    table = accuracy_table(outcomes)
    summary = dict(info, accuracy=table, commands=[asdict(o) for o in outcomes])
    (out_dir / 'summary.json').write_text(json.dumps(summary, indent=2))
    lines = ['# reclip demo', '',
             f"Scenes (seeds): {', '.join(str(s) for s in info['seeds'])}; model "
             f"`{','.join(info['models'])}`; ground-truth proposals; "
             f"{info['wall_s']:.1f} s wall time.", '',
             '| category | n | correct | accuracy |', '| --- | --- | --- | --- |']
    for key, row in table.items():
        lines.append(f"| {key} | {row['n']} | {row['correct']} | {row['accuracy']:.1%} |")
    lines += ['', '| seed | command | chosen | confidence | right | target | image |',
              '| --- | --- | --- | --- | --- | --- | --- |']
    for o in outcomes:
        image = f'[png]({o.image})' if o.image else ''
        lines.append(f'| {o.seed} | {o.text} | {o.chosen or o.status} | '
                     f'{o.confidence:.2f} | {"yes" if o.correct else "no"} | {o.target} | '
                     f'{image} |')
    (out_dir / 'summary.md').write_text('\n'.join(lines) + '\n')
    return summary


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``reclip demo`` options to *parser*."""
    parser.add_argument('--out', default='demo_output',
                        help='output directory (default demo_output)')
    parser.add_argument('--seed', type=int, default=100000,
                        help='first scene seed (default 100000, outside the training seeds)')
    parser.add_argument('--scenes', type=int, default=3, help='number of scenes (default 3)')
    parser.add_argument('--per-category', type=int, default=2,
                        help='commands per category and scene (default 2, 0 = all)')
    parser.add_argument('--model', action='append', default=None,
                        help='CLIP model of the node, repeatable (default: the embedded sim)')
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS_DOMAIN_ID of the demo (default: random 30-99)')
    parser.add_argument('--startup-timeout', type=float, default=90.0,
                        help='seconds to wait for the node to come up (default 90)')


def _raise_interrupt(signum, frame) -> None:
    """SIGTERM handler: unwind like Ctrl-C so the child processes are stopped."""
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Run the demo; return 0 when every command got an answer, 1 when the pipeline failed."""
    if args.scenes < 1 or args.seed < 0 or args.per_category < 0:
        print('error: need --scenes >= 1, --seed >= 0 and --per-category >= 0',
              file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = args.model or ['sim']
    seeds = [args.seed + k for k in range(args.scenes)]
    stack = SimStack(seeds[0], domain_id=args.domain_id, models=models,
                     log_dir=out_dir / 'logs')
    started = time.monotonic()
    client = None
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        print(f'starting the sim camera and the node (ROS_DOMAIN_ID={stack.domain_id}, '
              f'model {",".join(models)}) ...', flush=True)
        stack.start()
        client = GroundingClient(stack.domain_id)
        first_truth = client.wait_for_truth(seeds[0], timeout=args.startup_timeout)
        client.wait_until_ready(args.startup_timeout, check=stack.check_alive)
        print(f'ready after {time.monotonic() - started:.1f} s', flush=True)
        outcomes = run_session(client, seeds, per_category=args.per_category,
                               on_outcome=_print_outcome, out_dir=out_dir,
                               check=stack.check_alive, first_truth=first_truth)
    except DemoError as exc:
        print(f'error: the demo pipeline failed: {exc}', file=sys.stderr)
        if 'exited' not in str(exc):
            print(stack.log_tail('reclip_node'), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
    wall = time.monotonic() - started
    info = {'seeds': seeds, 'models': models, 'domain_id': stack.domain_id, 'wall_s': wall}
    summary = write_summary(out_dir, outcomes, info)
    answered = [o for o in outcomes if o.status == 'OK']
    print(f'\naccuracy (IoU > {IOU_THRESHOLD} with the referent):')
    for key, row in summary['accuracy'].items():
        print(f"  {key:<12} {row['correct']:>3}/{row['n']:<3} {row['accuracy']:.1%}")
    print(f'wrote {out_dir}/summary.md, summary.json and {sum(bool(o.image) for o in outcomes)}'
          f' annotated images in {wall:.1f} s')
    if not answered:
        print('error: the node answered no command', file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for ``python -m reclip_ros.sim.demo``."""
    parser = argparse.ArgumentParser(prog='reclip demo', description=__doc__.splitlines()[0])
    register(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
