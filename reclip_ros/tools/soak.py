"""``reclip soak``: drive the node for a long time and report whether it stays healthy.

The node runs as its own process (``reclip node``, embedded ``sim`` model by default, in a
private ROS domain); this process is its camera and its client:

- a camera thread publishes a synthetic scene (coloured blocks on a table, ``--width`` x
  ``--height`` rgb8) with its ``Proposals`` at ``--camera-rate`` Hz, stamped as a camera does;
- commands go out at ``--command-rate`` Hz, mixing simple ("the red block"), relational
  ("the blue block to the right of the red block", "the leftmost block") and invalid ones
  (empty, blank, over-long, no words). Every command text is unique (a running number, in
  each noun phrase), so
  each result can be matched to its command and the text cache fills as in a long run;
- the node's resident memory (VmRSS) is sampled every ``--rss-period`` seconds.

The report: commands sent vs results received, commands without a result and with more
than one, results per status, client-side command-to-result latency (p50 / p95 / max) next
to the node's own ``latency_receipt_to_publish_ms`` and ``latency_total_ms``, RSS over
time with its least-squares slope after ``--warmup`` seconds (MB per minute), and the time
from SIGINT to the node's exit at the end (``node_stop_s``). The exit code
is 0 when every command got exactly one result and the node is still alive.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from reclip_ros.tools.machine import describe_machine, machine_line

# {k} is the command's running number: every text is unique, and so is every noun phrase
# ("b17" reads as a label on the block), so the text cache fills within minutes, as in a
# long run with varied commands.
SIMPLE = ('the red b{k} block', 'the blue b{k} block', 'the green b{k} block',
          'the yellow b{k} block')
RELATIONAL = ('the blue b{k} block to the right of the red b{k} block',
              'the leftmost b{k} block',
              'the b{k} block between the red b{k} block and the blue b{k} block',
              'the biggest b{k} block', 'pick up the green b{k} block on the left')
INVALID = ('', 'x' * 2000, '... !!')
COLOURS = {'red': (220, 30, 30), 'blue': (30, 40, 220), 'green': (40, 180, 60),
           'yellow': (230, 210, 40)}


def add_camera_arguments(parser: argparse.ArgumentParser, camera_rate: float,
                         domains: str) -> None:
    """The camera and node options ``reclip soak`` and ``reclip bench node`` share."""
    parser.add_argument('--camera-rate', type=float, default=camera_rate, metavar='HZ',
                        help=f'frames per second (default {camera_rate:g})')
    parser.add_argument('--width', type=int, default=640, help='frame width (default 640)')
    parser.add_argument('--height', type=int, default=480, help='frame height (default 480)')
    parser.add_argument('--model', default='sim',
                        help="CLIP model of the node (default 'sim', the embedded one)")
    parser.add_argument('--domain', type=int, default=None,
                        help=f'ROS_DOMAIN_ID (default: random in {domains})')
    parser.add_argument('--log', metavar='FILE', default='', help="the node's log file")


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``reclip soak`` arguments."""
    parser.add_argument('--duration', type=float, default=300.0, metavar='S',
                        help='seconds of traffic (default 300; the issue asks for 1800)')
    add_camera_arguments(parser, camera_rate=15.0, domains='150-199')
    parser.add_argument('--command-rate', type=float, default=5.0, metavar='HZ',
                        help='commands per second (default 5)')
    parser.add_argument('--warmup', type=float, default=None, metavar='S',
                        help='seconds left out of the RSS slope (default: a fifth of the run)')
    parser.add_argument('--rss-period', type=float, default=5.0, metavar='S',
                        help='seconds between RSS samples (default 5)')
    parser.add_argument('--json', metavar='FILE', default='',
                        help='also write the report (with the RSS series) as JSON')


def scene(width: int, height: int, blocks: int = 4):
    """A table with coloured blocks in rows of four; returns (rgb, boxes as [x, y, w, h]).

    One row (up to four blocks) sits in the middle of the frame; more rows share its height.
    """
    image = np.full((height, width, 3), 225, np.uint8)
    boxes = []
    rows = max(1, -(-int(blocks) // len(COLOURS)))
    colours = list(COLOURS.values())
    for n in range(max(int(blocks), 0)):
        row, k = divmod(n, len(colours))
        colour = colours[(k + row) % len(colours)]
        w = width // 8
        if rows == 1:
            h, y = height // (3 + k % 2), height // 3
        else:
            h = height // (2 * rows + 1 + k % 2)
            y = height // 10 + row * (height * 4 // 5) // rows
        x = width // 10 + k * (width // 5)
        image[y:y + h, x:x + w] = colour
        boxes.append([x, y, w, h])
    return image, boxes


def _percentiles(values: List[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {'p50': None, 'p95': None, 'max': None, 'n': 0}
    arr = np.asarray(values, dtype=np.float64)
    return {'p50': round(float(np.percentile(arr, 50)), 1),
            'p95': round(float(np.percentile(arr, 95)), 1),
            'max': round(float(arr.max()), 1), 'n': int(arr.size)}


def rss_slope_mb_per_min(samples: List[tuple], warmup_s: float) -> Optional[float]:
    """Least-squares slope of RSS (MB) over time (minutes) for samples after *warmup_s*."""
    points = [(t, kb) for t, kb in samples if t >= warmup_s]
    if len(points) < 3:
        return None
    t = np.array([p[0] for p in points]) / 60.0
    mb = np.array([p[1] for p in points]) / 1024.0
    return float(np.polyfit(t, mb, 1)[0])


def _rss_kb(pid: int) -> Optional[int]:
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class NodeClient:
    """Camera, command sender and result collector in one rclpy node (its own context)."""

    def __init__(self, width: int, height: int, blocks: int = 4, proposals: bool = True,
                 name: str = 'reclip_soak'):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import Image, RegionOfInterest
        from std_msgs.msg import Header, String

        from reclip_ros.ros import conversions as conv
        from reclip_ros.msg import GroundingResult, Proposals

        self._rclpy, self._conv = rclpy, conv
        self._Header, self._String, self._Proposals = Header, String, Proposals
        self._ROI, self._Image = RegionOfInterest, Image
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        reliable = QoSProfile(depth=1000, reliability=QoSReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(
            Image, 'image', QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE))
        self.proposals_pub = self.node.create_publisher(Proposals, 'proposals', reliable)
        self.command_pub = self.node.create_publisher(String, 'command', reliable)
        self.lock = threading.Lock()
        self.sent: Dict[str, float] = {}
        self.results: Dict[str, list] = {}
        self.node.create_subscription(GroundingResult, 'grounding', self._on_result, reliable)
        from diagnostic_msgs.msg import DiagnosticArray
        self.diagnostics: Dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_forever, daemon=True)
        self._spin.start()
        self.with_proposals = proposals
        self.rgb, boxes = scene(width, height, blocks)
        self.rois = [RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)
                     for x, y, w, h in boxes]
        self.frames = 0

    def _spin_forever(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down at the end
            pass

    def _on_result(self, msg) -> None:
        now = time.monotonic()
        with self.lock:
            self.results.setdefault(msg.expression, []).append((now, msg))

    def _on_diagnostics(self, msg) -> None:
        with self.lock:
            for status in msg.status:
                self.diagnostics.update({kv.key: kv.value for kv in status.values})

    def caches_full(self) -> bool:
        """True once the node's diagnostics report its text cache full."""
        with self.lock:
            entries = self.diagnostics.get('text_cache_entries')
            capacity = self.diagnostics.get('text_cache_capacity')
        return entries is not None and entries == capacity

    def connected(self) -> bool:
        """True once the node subscribes to both the commands and the images."""
        return (self.command_pub.get_subscription_count() > 0
                and self.image_pub.get_subscription_count() > 0)

    def publish_frame(self) -> None:
        """Publish the scene stamped now (and its Proposals, unless a detector proposes)."""
        ns = self.node.get_clock().now().nanoseconds
        header = self._Header(stamp=self._conv.ns_to_stamp(ns), frame_id='soak_camera')
        if self.with_proposals:
            self.proposals_pub.publish(self._Proposals(header=header, boxes=self.rois))
        self.image_pub.publish(self._conv.array_to_image(self.rgb, 'rgb8', header))
        self.frames += 1

    def send(self, text: str) -> None:
        """Publish the command *text* and note when it was sent."""
        with self.lock:
            self.sent[text] = time.monotonic()
        self.command_pub.publish(self._String(data=text))

    def close(self) -> None:
        """Stop spinning and shut this client's context down."""
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def _command_text(k: int, rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        base = INVALID[k % len(INVALID)]
        if not base.strip():  # blank, and still unique: k encoded in the whitespace
            return ' ' * (k % 997 + 1) + '\n' * (k // 997)
        return f'{base} {k}'
    pool = SIMPLE if kind < 0.55 else RELATIONAL
    return pool[k % len(pool)].format(k=k)


def start_node(params: List[str], domain: int, log) -> subprocess.Popen:
    """Start ``reclip node`` (autostart, reliable images) in ROS domain *domain*.

    *params* are extra ``name:=value`` parameters. This process joins the same domain
    (and the same large-frame transport profile) so its client can talk to the node.
    """
    from reclip_ros.ros.transport import large_frames_profile
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED='1')
    profile = large_frames_profile()
    if profile is not None and not (env.get('FASTDDS_DEFAULT_PROFILES_FILE')
                                    or env.get('FASTRTPS_DEFAULT_PROFILES_FILE')):
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    os.environ['ROS_DOMAIN_ID'] = env['ROS_DOMAIN_ID']
    if 'FASTDDS_DEFAULT_PROFILES_FILE' in env:
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = env['FASTDDS_DEFAULT_PROFILES_FILE']
    argv = [sys.executable, '-m', 'reclip_ros.cli', 'node', '--ros-args',
            '-p', 'autostart:=true', '-p', 'image_qos_reliability:=reliable',
            '-p', 'max_image_age:=5.0']
    for param in params:
        argv += ['-p', param]
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_until_answering(client: NodeClient, node: subprocess.Popen,
                         deadline: float) -> Optional[str]:
    """Wait until the node is connected and answers a command OK; None, or what failed."""
    while not client.connected():
        if node.poll() is not None or time.monotonic() > deadline:
            return 'the node did not come up'
        time.sleep(0.2)
    # wait until the node answers (models loaded, first frame in)
    text = 'the red block warm-up'
    while True:
        client.publish_frame()
        client.send(text)
        wait_until = time.monotonic() + 5.0
        ok = False
        while time.monotonic() < wait_until and not ok:
            time.sleep(0.1)
            with client.lock:
                ok = any(r.status == 0 for _, r in client.results.get(text, []))
        with client.lock:
            client.results.pop(text, None)
            client.sent.pop(text, None)
        if ok:
            return None
        if node.poll() is not None or time.monotonic() > deadline:
            return 'the node never answered OK'


def run(args: argparse.Namespace) -> int:
    """Start the node, drive it for ``--duration`` seconds, print (and write) the report."""
    if args.duration <= 0 or args.camera_rate <= 0 or args.command_rate <= 0:
        print('error: --duration, --camera-rate and --command-rate must be > 0',
              file=sys.stderr)
        return 2
    domain = args.domain if args.domain is not None else random.randint(150, 199)
    warmup = args.warmup if args.warmup is not None else args.duration / 5.0
    params = [f'models:=[{args.model}]', "detector:=''"]
    log = open(args.log, 'w') if args.log else subprocess.DEVNULL  # noqa: SIM115
    node = start_node(params, domain, log)
    client = NodeClient(args.width, args.height)
    rng = random.Random(0)
    report: dict = {}
    try:
        problem = wait_until_answering(client, node, time.monotonic() + 180.0)
        if problem:
            print(f'error: {problem}', file=sys.stderr)
            return 1
        start = time.monotonic()
        stop = threading.Event()

        def camera():
            period, nxt = 1.0 / args.camera_rate, time.monotonic()
            while not stop.is_set():
                client.publish_frame()
                nxt += period
                stop.wait(max(nxt - time.monotonic(), 0.0))

        cam = threading.Thread(target=camera, daemon=True)
        cam.start()
        rss: List[tuple] = []
        full_at: Optional[float] = None
        period, nxt, next_rss, k = 1.0 / args.command_rate, time.monotonic(), 0.0, 0
        while time.monotonic() - start < args.duration and node.poll() is None:
            now = time.monotonic()
            if full_at is None and client.caches_full():
                full_at = round(now - start, 1)
            if now - start >= next_rss:
                kb = _rss_kb(node.pid)
                if kb is not None:
                    rss.append((round(now - start, 1), kb))
                next_rss += args.rss_period
            client.send(_command_text(k, rng))
            k += 1
            nxt += period
            time.sleep(max(nxt - time.monotonic(), 0.0))
        stop.set()
        cam.join(2.0)
        # let the last results arrive: wait until every command is answered (or 60 s)
        settle = time.monotonic() + 60.0
        while time.monotonic() < settle:
            with client.lock:
                if all(t in client.results for t in client.sent):
                    break
            time.sleep(0.2)
        report = _report(client, rss, warmup, args, node, domain, time.monotonic() - start,
                         full_at)
    finally:
        client.close()
        stop_s = None
        if node.poll() is None:
            stop_start = time.monotonic()
            node.send_signal(2)
            try:
                node.wait(10.0)
                stop_s = round(time.monotonic() - stop_start, 2)
            except subprocess.TimeoutExpired:
                node.kill()
        if report:
            report['node_stop_s'] = stop_s  # SIGINT to exit (None: killed after 10 s)
        if log is not subprocess.DEVNULL:
            log.close()
    _print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + '\n')
    healthy = (report.get('missing') == 0 and report.get('duplicates') == 0
               and report.get('node_alive_at_end'))
    return 0 if healthy else 1


def _report(client: NodeClient, rss, warmup, args, node, domain, elapsed,
            full_at: Optional[float] = None) -> dict:
    with client.lock:
        sent = dict(client.sent)
        results = {t: list(v) for t, v in client.results.items()}
    missing = [t for t in sent if t not in results]
    duplicates = [t for t, v in results.items() if t in sent and len(v) > 1]
    statuses: Counter = Counter()
    client_ms, receipt_ms, total_ms = [], [], []
    names = {0: 'OK', 1: 'NO_IMAGE', 2: 'NO_PROPOSALS', 3: 'INVALID_COMMAND', 4: 'BAD_IMAGE',
             5: 'DROPPED', 6: 'ERROR'}
    for text, when in sent.items():
        if text not in results:
            continue
        received, msg = results[text][0]
        statuses[names.get(int(msg.status), str(msg.status))] += 1
        client_ms.append((received - when) * 1000.0)
        if msg.status == 0:
            receipt_ms.append(float(msg.latency_receipt_to_publish_ms))
            total_ms.append(float(msg.latency_total_ms))
    slope = rss_slope_mb_per_min(rss, warmup)
    full_slope = rss_slope_mb_per_min(rss, full_at) if full_at is not None else None
    return {
        'duration_s': round(elapsed, 1), 'camera_rate_hz': args.camera_rate,
        'command_rate_hz': args.command_rate, 'frame': f'{args.width}x{args.height}',
        'model': args.model, 'domain': domain, 'frames_published': client.frames,
        'commands_sent': len(sent), 'commands_answered': len(sent) - len(missing),
        'missing': len(missing), 'duplicates': len(duplicates),
        'missing_examples': missing[:5], 'statuses': dict(statuses),
        'client_latency_ms': _percentiles(client_ms),
        'receipt_to_publish_ms_ok': _percentiles(receipt_ms),
        'grounding_total_ms_ok': _percentiles(total_ms),
        'rss_mb': {'first': round(rss[0][1] / 1024, 1) if rss else None,
                   'last': round(rss[-1][1] / 1024, 1) if rss else None,
                   'max': round(max(kb for _, kb in rss) / 1024, 1) if rss else None,
                   'slope_after_warmup_mb_per_min': (round(slope, 3)
                                                     if slope is not None else None),
                   'warmup_s': warmup,
                   'text_cache_full_at_s': full_at,
                   'slope_after_caches_full_mb_per_min': (round(full_slope, 3)
                                                          if full_slope is not None else None)},
        'rss_series_s_kb': rss,
        'node_alive_at_end': node.poll() is None,
        'machine': describe_machine(),
    }


def _print_report(report: dict) -> None:
    if not report:
        return
    lines = [machine_line(report['machine']) if 'machine' in report else '',
             f"soak: {report['duration_s']} s, {report['frame']} frames at "
             f"{report['camera_rate_hz']} Hz ({report['frames_published']} sent), commands at "
             f"{report['command_rate_hz']} Hz, model {report['model']}",
             f"commands {report['commands_sent']}, answered {report['commands_answered']}, "
             f"missing {report['missing']}, duplicates {report['duplicates']}",
             f"statuses {report['statuses']}",
             f"client latency ms {report['client_latency_ms']}",
             f"node receipt-to-publish ms (OK) {report['receipt_to_publish_ms_ok']}",
             f"node grounding total ms (OK) {report['grounding_total_ms_ok']}",
             f"RSS MB {report['rss_mb']}",
             f"node alive at the end: {report['node_alive_at_end']}",
             f"SIGINT to node exit: {report.get('node_stop_s')} s"]
    print('\n'.join(lines))
