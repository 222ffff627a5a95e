"""``reclip bench node``: command-to-result latency of the running node, seen by a client.

The node runs as its own process (``reclip node``, in a private ROS domain); this process
is its camera and its client, as on a robot:

- a camera thread publishes a static scene (``--boxes`` coloured blocks, ``--width`` x
  ``--height`` rgb8) at ``--camera-rate`` Hz, each frame stamped when it is sent, with its
  ``Proposals`` (the block boxes) unless a detector proposes them;
- after a warm-up command, ``--commands`` commands go out one at a time: each is sent
  ``--interval`` seconds after the previous result arrived plus a random fraction of a
  frame period (seeded), so commands fall anywhere between two frames, as a person's do
  (without it, every command would arrive at the same phase of the camera), and its
  latency is the time from publishing it to receiving its result.

The report gives client-side latency p50 / p95 / max, the node's own
``latency_total_ms`` and ``latency_receipt_to_publish_ms``, the statuses, the detector in
use and the node's precompute figures, with the machine (CPU count, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

from reclip_ros.tools.machine import describe_machine, machine_line

EXPRESSIONS = ('the red block', 'the blue block on the left', 'the leftmost green block',
               'the yellow block', 'the block to the right of the red block',
               'the biggest blue block', 'pick up the green block',
               'the red block on the right', 'the second block from the left',
               'the yellow block next to the blue block', 'the top red block',
               'grab the blue block on the right')
STATUS_NAMES = {0: 'OK', 1: 'NO_IMAGE', 2: 'NO_PROPOSALS', 3: 'INVALID_COMMAND',
                4: 'BAD_IMAGE', 5: 'DROPPED', 6: 'ERROR'}


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``reclip bench node`` arguments."""
    from reclip_ros.tools.soak import add_camera_arguments
    add_camera_arguments(parser, camera_rate=5.0, domains='10-19')
    from reclip_ros.core.models import PRECISIONS
    parser.add_argument('--precision', default='auto', choices=PRECISIONS,
                        help='precision of the node (default auto)')
    parser.add_argument('--precompute', action='store_true',
                        help='run the node with precompute on')
    parser.add_argument('--precompute-rate', type=float, default=5.0, metavar='HZ',
                        help='precompute_rate of the node (default 5)')
    parser.add_argument('--detector', default='', metavar='ID',
                        help="detector of the node: an id or directory, or 'auto'; default: "
                             'none (the camera publishes the boxes as Proposals)')
    parser.add_argument('--random-detector', default='', metavar='PRESET',
                        help='use a random-weight detector of this architecture '
                             "('owlvit-base-32', the CPU choice of 'auto', or 'owlv2-base-16'), "
                             'built offline: the compute of the real one')
    parser.add_argument('--commands', type=int, default=30, help='timed commands (default 30)')
    parser.add_argument('--interval', type=float, default=1.0, metavar='S',
                        help='seconds between a result and the next command (default 1)')
    parser.add_argument('--boxes', type=int, default=8, help='blocks in the scene (default 8)')
    parser.add_argument('--timeout', type=float, default=120.0, metavar='S',
                        help='seconds to wait for one result (default 120)')
    parser.add_argument('--json', action='store_true', help='print the report as JSON')


def _percentiles(values: List[float]) -> Dict[str, Optional[float]]:
    from reclip_ros.tools.soak import _percentiles as percentiles
    return percentiles(values)


def run(args: argparse.Namespace) -> int:
    """Start the node, time the commands, print the report."""
    from reclip_ros.tools.soak import NodeClient, start_node, wait_until_answering

    if args.commands < 1 or args.camera_rate <= 0 or args.interval < 0 or args.boxes < 1:
        print('error: --commands and --boxes must be >= 1, --camera-rate > 0, --interval >= 0',
              file=sys.stderr)
        return 2
    temporary = ''
    detector = args.detector
    if args.random_detector:
        from reclip_ros.tools.random_models import OWL_PRESETS, save_random_owl
        if args.random_detector not in OWL_PRESETS:
            print(f'error: --random-detector must be one of {OWL_PRESETS}', file=sys.stderr)
            return 2
        temporary = tempfile.mkdtemp(prefix='reclip_bench_node_')
        detector = str(save_random_owl(Path(temporary) / args.random_detector,
                                       preset=args.random_detector))
    domain = args.domain if args.domain is not None else random.randint(10, 19)
    params = [f'models:=[{args.model}]', f'detector:={detector!r}' if detector else
              "detector:=''", f'precision:={args.precision}',
              f"precompute:={'true' if args.precompute else 'false'}",
              f'precompute_rate:={args.precompute_rate}']
    log = open(args.log, 'w') if args.log else subprocess.DEVNULL  # noqa: SIM115
    node = start_node(params, domain, log)
    client = NodeClient(args.width, args.height, blocks=args.boxes,
                        proposals=not detector, name='reclip_bench_node')
    stop = threading.Event()
    report: dict = {}
    try:
        problem = wait_until_answering(client, node, time.monotonic() + 300.0)
        if problem:
            print(f'error: {problem}', file=sys.stderr)
            return 1

        def camera():
            period, nxt = 1.0 / args.camera_rate, time.monotonic()
            while not stop.is_set():
                client.publish_frame()
                nxt += period
                stop.wait(max(nxt - time.monotonic(), 0.0))

        threading.Thread(target=camera, daemon=True).start()
        samples = []
        rng = random.Random(0)
        for k in range(args.commands):
            stop.wait(args.interval + rng.uniform(0.0, 1.0 / args.camera_rate))
            text = f'{EXPRESSIONS[k % len(EXPRESSIONS)]}'
            if k >= len(EXPRESSIONS):  # unique, so each result is matched to its command
                text += ' ' * (k // len(EXPRESSIONS))
            client.send(text)
            sent = client.sent[text]
            deadline = time.monotonic() + args.timeout
            got = None
            while got is None and time.monotonic() < deadline and node.poll() is None:
                time.sleep(0.005)
                with client.lock:
                    if client.results.get(text):
                        got = client.results[text][0]
            samples.append((text, sent, got))
        report = _report(args, samples, detector, domain, node)
    finally:
        stop.set()
        client.close()
        if node.poll() is None:
            node.send_signal(2)
            try:
                node.wait(10.0)
            except subprocess.TimeoutExpired:
                node.kill()
        if log is not subprocess.DEVNULL:
            log.close()
        if temporary:
            import shutil
            shutil.rmtree(temporary, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print(report)
    return 0 if report.get('missing') == 0 else 1


def _report(args, samples, detector: str, domain: int, node) -> dict:
    client_ms, total_ms, receipt_ms = [], [], []
    stages: Dict[str, List[float]] = {k: [] for k in ('proposals', 'isolation',
                                                      'image_encoding', 'text_encoding',
                                                      'resolve')}
    statuses: Counter = Counter()
    missing = 0
    for _, sent, got in samples:
        if got is None:
            missing += 1
            continue
        received, msg = got
        statuses[STATUS_NAMES.get(int(msg.status), str(msg.status))] += 1
        client_ms.append((received - sent) * 1000.0)
        total_ms.append(float(msg.latency_total_ms))
        receipt_ms.append(float(msg.latency_receipt_to_publish_ms))
        for stage, values in stages.items():
            values.append(float(getattr(msg, f'latency_{stage}_ms')))
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        'model': args.model, 'precision': args.precision,
        'detector': args.detector or (f'random {args.random_detector}'
                                      if args.random_detector else ''),
        'detector_path': detector, 'precompute': bool(args.precompute),
        'precompute_rate_hz': args.precompute_rate if args.precompute else None,
        'boxes': None if detector else args.boxes, 'camera_rate_hz': args.camera_rate,
        'interval_s': args.interval, 'frame': f'{args.width}x{args.height}',
        'commands': len(samples), 'answered': len(samples) - missing, 'missing': missing,
        'statuses': dict(statuses),
        'client_latency_ms': _percentiles(client_ms),
        'first_command_ms': round(client_ms[0], 1) if client_ms else None,
        'node_total_ms': _percentiles(total_ms),
        'node_stage_ms_p50': {k: _percentiles(v)['p50'] for k, v in stages.items()},
        'node_receipt_to_publish_ms': _percentiles(receipt_ms),
        'machine': dict(describe_machine(), load_average_at_end=load),
        'domain': domain, 'node_alive_at_end': node.poll() is None,
    }


def _print(report: dict) -> None:
    if not report:
        return
    c = report['client_latency_ms']
    print(f"node benchmark: model {report['model']}, detector "
          f"{report['detector'] or 'none (Proposals topic)'}, precompute "
          f"{'on' if report['precompute'] else 'off'}, {report['frame']} at "
          f"{report['camera_rate_hz']} Hz, a command {report['interval_s']} s after each result")
    print(f"commands {report['commands']}, answered {report['answered']}, statuses "
          f"{report['statuses']}")
    print(f"client command-to-result ms: p50 {c['p50']}, p95 {c['p95']}, max {c['max']} "
          f"(first command {report['first_command_ms']})")
    print(f"node latency_total_ms: {report['node_total_ms']}")
    print(f"node stages, p50 ms: {report['node_stage_ms_p50']}")
    print(f"node latency_receipt_to_publish_ms: {report['node_receipt_to_publish_ms']}")
    machine = report['machine']
    print(f"{machine_line(machine)} (at the end: {machine['load_average_at_end']})")
