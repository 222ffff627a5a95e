"""The simulated RGB-D camera node over real DDS: topics, stamps, intrinsics, truth, seeds."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from reclip_ros.ros.conversions import camera_info_to_intrinsics, image_to_array
from reclip_ros.msg import Proposals
from reclip_ros.sim.camera_node import DEFAULT_FRAME_ID, SimCameraNode, _latched_qos
from reclip_ros.sim.world import COLOURS, SIZES, TabletopScene, kind_names

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 160, 120


def _domain_id() -> int:
    from node_helpers import domain_id
    return domain_id('sim_camera')


class Recorder:
    """A client node in the test's context that keeps everything it receives."""

    def __init__(self, context, reliable=True):
        self.node = rclpy.create_node(f'recorder_{random.randrange(1 << 30)}', context=context)
        self.msgs = {name: [] for name in ('image', 'depth', 'camera_info', 'proposals',
                                            'ground_truth')}
        qos = 10 if reliable else qos_profile_sensor_data
        for name, kind in (('image', Image), ('depth', Image), ('camera_info', CameraInfo)):
            self.node.create_subscription(kind, name, self.msgs[name].append, qos)
        self.node.create_subscription(Proposals, 'proposals', self.msgs['proposals'].append, 10)
        self.node.create_subscription(String, 'ground_truth',
                                      lambda m: self.msgs['ground_truth'].append(
                                          json.loads(m.data)), _latched_qos())


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=_domain_id())
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _spin_until(executor, predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return False


def _stamp(msg):
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


@pytest.fixture
def camera(context):
    node = SimCameraNode(seed=11, rate=20.0, width=WIDTH, height=HEIGHT,
                         publish_proposals=True, reliable=True, context=context)
    recorder = Recorder(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(recorder.node)
    yield node, recorder, executor
    executor.shutdown()
    recorder.node.destroy_node()
    node.destroy_node()


def test_publishes_the_scene_with_one_stamp_and_true_intrinsics(camera):
    node, rec, executor = camera
    assert _spin_until(executor, lambda: all(len(rec.msgs[k]) >= 3 for k in
                                             ('image', 'depth', 'camera_info', 'proposals')))
    with TabletopScene(11, width=WIDTH, height=HEIGHT) as scene:
        frame = scene.render()
    # every stamp of one topic also appears on the others (one tick = one stamp)
    stamps = {k: {_stamp(m) for m in rec.msgs[k]} for k in
              ('image', 'depth', 'camera_info', 'proposals')}
    common = stamps['image'] & stamps['depth'] & stamps['camera_info'] & stamps['proposals']
    assert len(common) >= 2
    for key in ('image', 'depth', 'camera_info', 'proposals'):
        assert all(m.header.frame_id == DEFAULT_FRAME_ID for m in rec.msgs[key])
    image, depth, info = rec.msgs['image'][-1], rec.msgs['depth'][-1], rec.msgs['camera_info'][-1]
    assert (image.encoding, image.width, image.height) == ('rgb8', WIDTH, HEIGHT)
    np.testing.assert_array_equal(image_to_array(image), frame.rgb)
    assert depth.encoding == '32FC1'
    np.testing.assert_allclose(image_to_array(depth), frame.depth)
    assert info.distortion_model == 'plumb_bob' and list(info.d) == [0.0] * 5
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    intr = camera_info_to_intrinsics(info)
    assert intr == pytest.approx(frame.intrinsics)
    assert list(info.p) == pytest.approx([intr.fx, 0, intr.cx, 0, 0, intr.fy, intr.cy, 0,
                                          0, 0, 1, 0])
    boxes = [(r.x_offset, r.y_offset, r.width, r.height) for r in rec.msgs['proposals'][-1].boxes]
    assert len(boxes) == len(frame.objects) >= 1
    for (x, y, w, h), obj in zip(boxes, frame.objects):
        assert obj.box.iou(type(obj.box)(x, y, w, h)) > 0.8


def test_ground_truth_is_latched_and_consistent_with_the_images(camera, context):
    node, rec, executor = camera
    assert _spin_until(executor, lambda: rec.msgs['ground_truth'] and rec.msgs['depth'])
    truth = rec.msgs['ground_truth'][-1]
    assert truth['seed'] == 11 and truth['frame_id'] == DEFAULT_FRAME_ID
    assert (truth['width'], truth['height']) == (WIDTH, HEIGHT)
    assert 1 <= len(truth['objects']) <= 8
    first_image = min(_stamp(m) for m in rec.msgs['image'])
    assert (truth['stamp']['sec'], truth['stamp']['nanosec']) <= first_image
    depth = image_to_array(rec.msgs['depth'][-1])
    k = truth['intrinsics']
    for obj in truth['objects']:
        assert obj['name'] in kind_names() and obj['colour'] in COLOURS
        assert obj['size'] in SIZES
        x, y, w, h = obj['box']
        cx, cy, cz = obj['center']
        # the 3D centre projects into the object's box, and the depth there is close to it
        u, v = k['fx'] * cx / cz + k['cx'], k['fy'] * cy / cz + k['cy']
        assert x - 2 <= u <= x + w + 2 and y - 2 <= v <= y + h + 2, obj
        patch = depth[int(y):int(y + h), int(x):int(x + w)]
        assert abs(float(np.median(patch[patch > 0])) - cz) < 0.1, obj
    # a subscriber that joins later still gets the truth (transient local)
    late = Recorder(context)
    executor.add_node(late.node)
    assert _spin_until(executor, lambda: late.msgs['ground_truth'])
    assert late.msgs['ground_truth'][0] == truth
    assert node.ground_truth == truth


def test_setting_the_seed_rebuilds_the_scene(camera):
    node, rec, executor = camera
    assert _spin_until(executor, lambda: rec.msgs['ground_truth'] and rec.msgs['image'])
    old_image = image_to_array(rec.msgs['image'][-1]).copy()
    result = node.set_parameters([Parameter('seed', value=12)])[0]
    assert result.successful
    assert _spin_until(executor, lambda: rec.msgs['ground_truth'][-1]['seed'] == 12)
    truth = rec.msgs['ground_truth'][-1]
    floor = (truth['stamp']['sec'], truth['stamp']['nanosec'])
    assert _spin_until(executor, lambda: any(_stamp(m) >= floor for m in rec.msgs['image']))
    new_image = next(image_to_array(m) for m in rec.msgs['image'] if _stamp(m) >= floor)
    with TabletopScene(12, width=WIDTH, height=HEIGHT) as scene:
        np.testing.assert_array_equal(new_image, scene.render().rgb)
    assert not np.array_equal(new_image, old_image)
    for name, value in (('seed', -1), ('rate', 0.0), ('width', 320)):
        outcome = node.set_parameters([Parameter(name, value=value)])[0]
        assert not outcome.successful and outcome.reason, name
    assert node.get_parameter('seed').value == 12


def test_sensor_data_qos_by_default(context):
    node = SimCameraNode(seed=1, rate=1.0, width=64, height=48, context=context)
    try:
        for topic in ('image', 'depth', 'camera_info'):
            (info,) = node.get_publishers_info_by_topic(topic)
            assert info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        (info,) = node.get_publishers_info_by_topic('proposals')
        assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        # a sensor-data subscriber receives the frames
        rec = Recorder(context, reliable=False)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(rec.node)
        assert _spin_until(executor, lambda: rec.msgs['image'] and rec.msgs['camera_info'])
        assert not rec.msgs['proposals'], 'proposals are off unless asked for'
        executor.shutdown()
        rec.node.destroy_node()
    finally:
        node.destroy_node()


def _env(domain_id):
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONPATH=str(ROOT))
    return env


def test_command_line_runs_with_ros_arguments_and_stops_on_sigint(context):
    domain_id = context.get_domain_id()
    proc = subprocess.Popen(
        [sys.executable, '-m', 'reclip_ros.cli', 'sim', '--seed', '5', '--width', '64',
         '--height', '48', '--rate', '10', '--ros-args', '-p', 'publish_proposals:=true',
         '-r', '__node:=cam'], env=_env(domain_id), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        rec = Recorder(context, reliable=False)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(rec.node)
        ok = _spin_until(executor, lambda: rec.msgs['ground_truth'] and rec.msgs['proposals']
                         and rec.msgs['image'], timeout=60.0)
        assert ok, proc.stdout.read() if proc.poll() is not None else 'no messages'
        assert rec.msgs['ground_truth'][-1]['seed'] == 5
        assert (rec.msgs['image'][-1].width, rec.msgs['image'][-1].height) == (64, 48)
        # the -r __node:=cam remapping reached the node (graph updates may lag the data)
        assert _spin_until(executor, lambda: 'cam' in rec.node.get_node_names(), timeout=10.0)
        executor.shutdown()
        rec.node.destroy_node()
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output


def test_command_line_rejects_bad_options():
    proc = subprocess.run([sys.executable, '-m', 'reclip_ros.cli', 'sim', '--rate', '0'],
                          env=_env(0), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert '--rate > 0' in proc.stderr
