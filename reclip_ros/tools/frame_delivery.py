"""``reclip delivery``: how many camera frames reach a subscriber, per Fast DDS transport.

A receiver process subscribes ``image`` with the node's QoS (sensor data: best effort,
depth 1) and counts what arrives; this process publishes ``--frames`` rgb8 frames of
``--width`` x ``--height`` at ``--rate`` Hz, as a camera driver does. Each transport setting
is measured in turn, in its own ROS domain:

- ``default``: Fast DDS as installed (UDPv4 + 512 KB shared-memory segments);
- ``large_data``: ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (Fast DDS's own large-data mode);
- ``profile``: the shipped ``config/fastdds_large_frames.xml`` (8 MB shared memory).

``--sides both`` configures the camera and the receiver alike; ``--sides receiver`` only the
receiver, as when the node applies its default and the camera driver is left as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from typing import Dict

from reclip_ros.ros.transport import LARGE_DATA_ENV, transport_env

TRANSPORTS = ('default', 'large_data', 'profile')

_RECEIVER = r'''
import sys, time, rclpy
from rclpy.qos import qos_profile_sensor_data, QoSProfile
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('delivery_receiver')
count = [0]
node.create_subscription(Image, 'image', lambda m: count.__setitem__(0, count[0] + 1),
                         QoSProfile(depth=1, history=qos_profile_sensor_data.history,
                                    reliability=qos_profile_sensor_data.reliability))
print('ready', flush=True)
deadline = None
while True:
    rclpy.spin_once(node, timeout_sec=0.05)
    line = None
    if deadline is None and sys.stdin in __import__('select').select([sys.stdin], [], [], 0)[0]:
        sys.stdin.readline()
        deadline = time.monotonic() + 2.0
    if deadline is not None and time.monotonic() > deadline:
        break
print('received', count[0], flush=True)
'''


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``reclip delivery`` arguments."""
    parser.add_argument('--transports', default=','.join(TRANSPORTS),
                        help=f'comma-separated subset of {",".join(TRANSPORTS)}')
    parser.add_argument('--sides', choices=('both', 'receiver'), default='both',
                        help='configure the camera and the receiver, or the receiver only')
    parser.add_argument('--frames', type=int, default=300, help='frames sent (default 300)')
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second (30)')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--json', action='store_true', help='print the result as JSON')


def _measure(transport: str, sides: str, args: argparse.Namespace) -> Dict[str, float]:
    domain = random.randint(200, 230)
    base = {k: v for k, v in os.environ.items()
            if k not in ('FASTDDS_BUILTIN_TRANSPORTS', 'FASTDDS_DEFAULT_PROFILES_FILE',
                         'FASTRTPS_DEFAULT_PROFILES_FILE')}
    base['ROS_DOMAIN_ID'] = str(domain)
    configured = dict(base, **transport_env(transport))
    receiver_env = configured
    camera_env = configured if sides == 'both' else base
    receiver = subprocess.Popen([sys.executable, '-c', _RECEIVER], env=receiver_env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    camera = subprocess.Popen(
        [sys.executable, '-c', 'from reclip_ros.tools.frame_delivery import _camera; _camera()',
         str(args.frames), str(args.rate), str(args.width), str(args.height)],
        env=camera_env, stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == 'ready'
        sent = int(camera.stdout.readline().split()[-1])
        camera.wait(30)
        receiver.stdin.write('stop\n')
        receiver.stdin.flush()
        received = int(receiver.stdout.readline().split()[-1])
        receiver.wait(30)
    finally:
        for proc in (camera, receiver):
            if proc.poll() is None:
                proc.kill()
    return {'transport': transport, 'sides': sides, 'sent': sent, 'received': received,
            'delivered_percent': round(100.0 * received / max(sent, 1), 1)}


def _camera() -> None:
    """The camera process: wait for the receiver, publish frames at the rate, print the count."""
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from reclip_ros.ros import conversions as conv
    frames, rate, width, height = (int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]),
                                   int(sys.argv[4]))
    rclpy.init()
    node = rclpy.create_node('delivery_camera')
    pub = node.create_publisher(Image, 'image', QoSProfile(
        depth=1, history=qos_profile_sensor_data.history,
        reliability=qos_profile_sensor_data.reliability))
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(1.0)  # discovery of the reader's locators settles
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    period, nxt = 1.0 / rate, time.monotonic()
    for _ in range(frames):
        msg = conv.array_to_image(rgb, 'rgb8')
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        nxt += period
        time.sleep(max(nxt - time.monotonic(), 0.0))
    print('sent', frames, flush=True)
    time.sleep(1.0)


def run(args: argparse.Namespace) -> int:
    """Measure each transport; print a table (or JSON)."""
    transports = [t.strip() for t in args.transports.split(',') if t.strip()]
    unknown = [t for t in transports if t not in TRANSPORTS]
    if unknown or args.frames < 1 or args.rate <= 0:
        print(f'error: bad arguments (unknown transports {unknown}?)', file=sys.stderr)
        return 2
    rows = [_measure(t, args.sides, args) for t in transports]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f'{args.width}x{args.height} rgb8 at {args.rate:g} Hz, {args.frames} frames, '
              f'configured: {args.sides}')
        for row in rows:
            print(f"{row['transport']:<11} {row['received']:>5}/{row['sent']:<5} "
                  f"{row['delivered_percent']:5.1f}%")
    return 0


__all__ = ['LARGE_DATA_ENV', 'TRANSPORTS', 'register', 'run']
