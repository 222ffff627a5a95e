"""Shared utilities of the node tests: domain ids, the node as a process, a test client.

Everything here uses real rclpy over real DDS. Each test module picks its own
``ROS_DOMAIN_ID`` with :func:`domain_id` so modules (and other people's tests running at
the same time) do not see each other's topics.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header, String

from reclip_ros.ros import conversions as conv
from reclip_ros.ros.lifecycle_client import wait_active
from reclip_ros.msg import GroundingResult, Proposals
from reclip_ros.srv import Ground

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / '.venv' / 'bin' / 'python'
RELIABLE = QoSProfile(depth=1000, reliability=QoSReliabilityPolicy.RELIABLE)
# images: reliable but only the newest kept (4000x3000 frames must not pile up in history)
RELIABLE_IMAGE = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE)

# Each test module has an offset; the pid spreads parallel pytest runs apart.
MODULE_OFFSETS = {'lifecycle': 0, 'process': 1, 'bad_input': 2, 'launch': 3, 'limits': 4,
                  'stop': 5, 'soak': 6, 'cycles': 7, 'sim_camera': 8, 'node_bench': 9,
                  'offline': 10, 'configure': 11}


def domain_id(module: str) -> int:
    """A ROS_DOMAIN_ID in [20, 119] for one test module of this pytest process.

    Ranges never overlap: ``reclip bench node`` 10-19, tests 20-119, the demo 120-149,
    ``reclip soak`` 150-199, ``reclip delivery`` 200-230.
    """
    return 20 + (os.getpid() * 10 + MODULE_OFFSETS[module]) % 100


def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Poll *predicate* until it is true or *timeout* seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


def scene(width: int = 96, height: int = 64) -> np.ndarray:
    """A small RGB scene: a red block on the left, a blue block on the right."""
    image = np.full((height, width, 3), 235, np.uint8)
    image[height // 4: 3 * height // 4, width // 10: width // 10 + width // 4] = (220, 30, 30)
    image[height // 3: 5 * height // 6, 6 * width // 10: 6 * width // 10 + width // 4] = (
        30, 40, 220)
    return image


def scene_boxes(width: int = 96, height: int = 64) -> List[RegionOfInterest]:
    """Proposal boxes around the two blocks of :func:`scene` plus one background box."""
    return [
        RegionOfInterest(x_offset=width // 10, y_offset=height // 4, width=width // 4,
                         height=height // 2),
        RegionOfInterest(x_offset=6 * width // 10, y_offset=height // 3, width=width // 4,
                         height=height // 2),
        RegionOfInterest(x_offset=0, y_offset=0, width=width // 2, height=height // 5),
    ]


def rss_kb(pid: int, field: str = 'VmRSS') -> int:
    """Resident memory of process *pid* in kB (VmRSS of /proc/<pid>/status; VmHWM: peak)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(f'{field}:'):
            return int(line.split()[1])
    raise RuntimeError(f'no {field} for pid {pid}')


class NodeProcess:
    """The node started as its own process through ``python -m reclip_ros.cli node``.

    Args:
        params: ``-p name:=value`` parameters (values written as on the command line).
        domain: the ROS_DOMAIN_ID of the process.
        log_path: where stdout and stderr go.
        namespace: optional ``__ns`` remapping.
    """

    def __init__(self, params: Dict[str, str], domain: int, log_path: Path,
                 namespace: str = '') -> None:
        args = [str(PYTHON), '-m', 'reclip_ros.cli', 'node', '--ros-args']
        for name, value in params.items():
            args += ['-p', f'{name}:={value}']
        if namespace:
            args += ['-r', f'__ns:={namespace}']
        env = dict(os.environ, PYTHONPATH=str(REPO), ROS_DOMAIN_ID=str(domain),
                   HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', OMP_NUM_THREADS='1',
                   MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
        self.log_path = log_path
        self._log = open(log_path, 'w')
        self.proc = subprocess.Popen(args, cwd=str(REPO), env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the process printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """Interrupt the process (SIGINT, then SIGKILL); return its exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


class TestClient:
    """A test-side node: publishes images, proposals and commands; collects results.

    Args:
        context: an initialised rclpy context.
        namespace: the namespace the reclip node runs in ('' for the root).
        node_name: the reclip node's name (for its ``~/ground`` service).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, context: Context, namespace: str = '', node_name: str = 'reclip',
                 image_qos: QoSProfile = RELIABLE_IMAGE) -> None:
        self.node = Node('reclip_test_client', namespace=namespace, context=context)
        prefix = f'/{namespace.strip("/")}' if namespace.strip('/') else ''
        self._target = f'{prefix}/{node_name}'
        self.image_pub = self.node.create_publisher(Image, 'image', image_qos)
        self.command_pub = self.node.create_publisher(String, 'command', RELIABLE)
        self.proposals_pub = self.node.create_publisher(Proposals, 'proposals', RELIABLE)
        self.results: List[GroundingResult] = []
        self._lock = threading.Lock()
        self.node.create_subscription(GroundingResult, 'grounding', self._on_result, RELIABLE)
        self.ground = self.node.create_client(Ground, f'{prefix}/{node_name}/ground')
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down at the end of a test
            pass

    def _on_result(self, msg: GroundingResult) -> None:
        with self._lock:
            self.results.append(msg)

    def results_for(self, expression: str) -> List[GroundingResult]:
        """The results received so far whose expression is *expression*."""
        with self._lock:
            return [r for r in self.results if r.expression == expression]

    def wait_connected(self, timeout: float = 60.0, service: bool = True,
                       active: bool = True) -> bool:
        """Wait until the node subscribes our topics (and offers the service) and is active.

        The topics and the service exist from the node's start; commands are grounded
        only once it is active (before, they are answered DROPPED at once).
        """
        deadline = time.monotonic() + timeout
        connected = wait_until(
            lambda: (self.command_pub.get_subscription_count() > 0
                     and self.image_pub.get_subscription_count() > 0
                     and self.node.count_publishers(self._resolved('grounding')) > 0
                     and (not service or self.ground.service_is_ready())), timeout, 0.1)
        if not connected or not active:
            return connected
        return wait_active(self.node, self._target, max(deadline - time.monotonic(), 0.1))

    def _resolved(self, name: str) -> str:
        return self.node.resolve_topic_name(name)

    def header(self, frame_id: str = 'camera_optical', stamp_ns: Optional[int] = None):
        """A header stamped now (or *stamp_ns*) with *frame_id*."""
        ns = self.node.get_clock().now().nanoseconds if stamp_ns is None else stamp_ns
        return Header(stamp=conv.ns_to_stamp(ns), frame_id=frame_id)

    def publish_image(self, image: Optional[Image] = None, rgb: Optional[np.ndarray] = None,
                      boxes: Optional[Sequence[RegionOfInterest]] = None,
                      header: Optional[Header] = None, settle: float = 0.3) -> Header:
        """Publish proposals (when given) and an image with the same header; return it."""
        header = header or self.header()
        if image is None:
            image = conv.array_to_image(scene() if rgb is None else rgb, 'rgb8', header)
        image.header = header
        if boxes is not None:
            self.proposals_pub.publish(Proposals(header=header, boxes=list(boxes)))
        self.image_pub.publish(image)
        # a condition, not a sleep: the node's readers acknowledged both samples (reliable
        # QoS), so a command sent next finds the frame in the node
        from rclpy.duration import Duration
        wait = Duration(seconds=max(settle, 10.0))
        if boxes is not None:
            self.proposals_pub.wait_for_all_acked(wait)
        self.image_pub.wait_for_all_acked(wait)
        return header

    def command(self, text: str, timeout: float = 60.0) -> GroundingResult:
        """Publish *text* on `command` and return the one result for it."""
        before = len(self.results_for(text))
        self.command_pub.publish(String(data=text))
        assert wait_until(lambda: len(self.results_for(text)) > before, timeout), (
            f'no result for {text[:60]!r} within {timeout} s')
        return self.results_for(text)[before]

    def call(self, request: Ground.Request, timeout: float = 60.0) -> Ground.Response:
        """Call `~/ground` and return the response."""
        future = self.ground.call_async(request)
        assert wait_until(future.done, timeout), 'the ground service did not answer'
        return future.result()

    def close(self) -> None:
        """Stop spinning and destroy the node."""
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


@contextlib.contextmanager
def running_node(tiny_clip_dir: str, module: str, log_path: Path, **params: str):
    """The node as its own process (tiny CLIP, autostart) and a connected test client.

    Yields ``(process, client)``; *params* add or override ``-p`` parameters (as written
    on the command line). Everything is stopped afterwards.
    """
    domain = domain_id(module)
    values = {'models': f"['{tiny_clip_dir}']", 'detector': "''",
              'spacy_model': 'en_core_web_sm', 'autostart': 'true', 'max_image_age': '30.0',
              'image_qos_reliability': 'reliable'}
    values.update(params)
    proc = NodeProcess(values, domain, log_path)
    context = init_context(domain)
    client = TestClient(context)
    try:
        if not client.wait_connected(timeout=120.0):
            raise AssertionError(f'the node did not come up; its log:\n{proc.log()}')
        yield proc, client
    finally:
        client.close()
        rclpy.shutdown(context=context)
        code = proc.stop()
        print(f'\nnode exit code {code}; log tail:\n{proc.log()[-2000:]}')


def init_context(domain: int) -> Context:
    """A fresh rclpy context on *domain*."""
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    return context


@contextlib.contextmanager
def node_in_process(node, context):
    """Spin *node* on a multi-threaded executor; yield (client, crashed, spin thread).

    *crashed* collects an exception that ends the executor's spin while the context is
    still valid (a test fails on it). On exit the client, executor, node and context are
    shut down in that order.
    """
    from rclpy.executors import MultiThreadedExecutor
    executor = MultiThreadedExecutor(num_threads=node.executor_threads(), context=context)
    executor.add_node(node)
    crashed: List[BaseException] = []

    def spin() -> None:
        try:
            executor.spin()
        except Exception as exc:  # noqa: BLE001 - a crash of the executor fails the test
            if rclpy.ok(context=context):
                crashed.append(exc)
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    client = TestClient(context)
    try:
        yield client, crashed, thread
    finally:
        client.close()
        executor.shutdown(timeout_sec=2.0)
        node.release()
        node.destroy_node()
        rclpy.shutdown(context=context)
