"""The node as its own process (``python -m reclip_ros.cli node --ros-args ...``) over DDS.

A test process publishes images, proposals, depth and commands, calls ``~/ground`` and the
parameter and lifecycle services, and checks what comes back. Models are tiny random CLIPs
built by the tests, so only the plumbing and the invariants of results are checked.
"""

import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from lifecycle_msgs.srv import GetState
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import CameraInfo, Image

from node_helpers import (RELIABLE, running_node, scene,
                          scene_boxes, wait_until)
from reclip_ros.ros import conversions as conv
from reclip_ros.msg import GroundingResult
from reclip_ros.srv import Ground

WIDTH, HEIGHT = 96, 64


@pytest.fixture(scope='module')
def node_process(tiny_clip_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp('node_process') / 'node.log'
    with running_node(tiny_clip_dir, 'process', log, diagnostics_period='0.2',
                      max_candidates='2') as (proc, client):
        yield proc, client, tiny_clip_dir


def _call(client, node, srv_type, name, request):
    cli = client.node.create_client(srv_type, name)
    try:
        assert cli.wait_for_service(timeout_sec=60.0), f'{name} not offered'
        future = cli.call_async(request)
        assert wait_until(future.done, 60.0)
        return future.result()
    finally:
        client.node.destroy_client(cli)


def check_ok_result(result: GroundingResult, width=WIDTH, height=HEIGHT, n_boxes=None):
    assert result.status == GroundingResult.OK, result.status_message
    box = result.box
    assert box.width > 0 and box.height > 0
    assert box.x_offset + box.width <= width and box.y_offset + box.height <= height
    assert 0.0 <= result.confidence <= 1.0
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    first = result.candidates[0].box
    assert (first.x_offset, first.y_offset, first.width, first.height) == (
        box.x_offset, box.y_offset, box.width, box.height)
    assert math.isclose(result.candidates[0].score, result.confidence, rel_tol=1e-6)
    if n_boxes is not None:
        assert len(result.candidates) == n_boxes
    assert result.latency_total_ms >= 0.0 and result.queue_wait_ms >= 0.0


def test_autostart_makes_the_node_active(node_process):
    proc, client, _ = node_process
    response = _call(client, proc, GetState, '/reclip/get_state', GetState.Request())
    assert response.current_state.label == 'active'


def test_command_on_topic(node_process):
    _, client, _ = node_process
    header = client.publish_image(boxes=scene_boxes(WIDTH, HEIGHT))
    result = client.command('the red block')
    check_ok_result(result, n_boxes=2)  # max_candidates:=2 keeps the best two of three
    assert result.header == header
    assert result.expression == 'the red block'
    assert len(client.results_for('the red block')) == 1


def test_service_uses_the_newest_frame_and_publishes_the_result(node_process):
    _, client, _ = node_process
    header = client.publish_image(boxes=scene_boxes(WIDTH, HEIGHT))
    text = 'pick up the blue block right of the red block'
    response = client.call(Ground.Request(expression=text))
    check_ok_result(response.result)
    assert response.result.header == header
    assert wait_until(lambda: len(client.results_for(text)) == 1, 10.0)
    assert client.results_for(text)[0].header == header


def test_service_with_its_own_image_and_boxes(node_process):
    _, client, _ = node_process
    rgb = scene(160, 120)
    header = client.header(frame_id='wrist_camera')
    image = conv.array_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), 'bgr8', header)
    request = Ground.Request(expression='the left block', image=image,
                             boxes=scene_boxes(160, 120))
    result = client.call(request).result
    check_ok_result(result, 160, 120, n_boxes=2)
    assert result.header == header


def test_service_without_any_proposals(node_process):
    _, client, _ = node_process
    image = conv.array_to_image(scene(), 'rgb8', client.header(stamp_ns=12345))
    result = client.call(Ground.Request(expression='the block', image=image)).result
    assert result.status == GroundingResult.NO_PROPOSALS
    assert 'detector' in result.status_message


def test_debug_image_is_drawn_on_the_grounded_frame(node_process):
    _, client, _ = node_process
    debug = []
    client.node.create_subscription(Image, 'debug_image', debug.append, RELIABLE)
    header = client.publish_image(boxes=scene_boxes(WIDTH, HEIGHT))
    for attempt in range(20):  # the node draws only once it sees our subscription
        client.command(f'the red block {attempt}')
        if wait_until(lambda: len(debug) > 0, 1.0):
            break
    assert debug, 'no debug image'
    image = debug[-1]
    assert (image.width, image.height, image.encoding) == (WIDTH, HEIGHT, 'rgb8')
    assert image.header == header
    drawn = conv.image_to_rgb(image)
    assert not np.array_equal(drawn, scene(WIDTH, HEIGHT)), 'nothing was drawn'


def test_diagnostics_report_device_models_and_queue(node_process):
    _, client, tiny = node_process
    arrays = []
    client.node.create_subscription(DiagnosticArray, '/diagnostics', arrays.append, 10)
    assert wait_until(lambda: len(arrays) > 0, 20.0)
    status = arrays[-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert 'reclip' in status.name
    assert values['device'] == 'cpu' and status.hardware_id == 'cpu'
    assert tiny in values['models']
    assert int(values['queue_capacity']) == 10
    assert values['state'] == 'active'
    # no Fast DDS setting in the test environment: the node loaded the large-frames profile
    assert 'fastdds_large_frames.xml' in values['transport']


def test_parameters_over_the_wire_and_continuous_mode(node_process):
    _, client, _ = node_process
    params = AsyncParameterClient(client.node, 'reclip')
    assert params.wait_for_services(timeout_sec=20.0)

    def set_params(*parameters):
        future = params.set_parameters(list(parameters))
        assert wait_until(future.done, 20.0)
        return future.result().results

    rejected = set_params(Parameter('continuous_rate', value=-2.0))[0]
    assert not rejected.successful and rejected.reason
    rejected = set_params(Parameter('models', value=['other']))[0]
    assert not rejected.successful and 'configure' in rejected.reason
    assert all(r.successful for r in set_params(Parameter('continuous', value=True),
                                                Parameter('continuous_rate', value=20.0)))
    try:
        text = 'the blue block'
        client.publish_image(boxes=scene_boxes(WIDTH, HEIGHT))
        client.command(text)
        stamps = set()
        for _ in range(4):
            header = client.publish_image(boxes=scene_boxes(WIDTH, HEIGHT), settle=0.0)
            stamps.add((header.stamp.sec, header.stamp.nanosec))
            wait_until(lambda h=header: any(r.header == h for r in client.results_for(text)),
                       5.0)
        regrounded = {(r.header.stamp.sec, r.header.stamp.nanosec)
                      for r in client.results_for(text)} & stamps
        assert len(regrounded) >= 2, 'continuous mode did not re-ground on new frames'
        assert all(r.status == GroundingResult.OK for r in client.results_for(text))
    finally:
        assert all(r.successful for r in set_params(Parameter('continuous', value=False)))


# The depth tests come last: once a depth image has arrived, the node expects one for
# every frame (and says so in status_message when it is missing).

@pytest.fixture(scope='module')
def depth_publishers(node_process):
    _, client, _ = node_process
    depth_pub = client.node.create_publisher(Image, 'depth', RELIABLE)
    info_pub = client.node.create_publisher(CameraInfo, 'camera_info', RELIABLE)
    assert wait_until(lambda: depth_pub.get_subscription_count() > 0
                      and info_pub.get_subscription_count() > 0, 20.0)
    return depth_pub, info_pub


def _publish_info(info_pub, header):
    info = CameraInfo(header=header, width=WIDTH, height=HEIGHT)
    info.k = [80.0, 0.0, WIDTH / 2, 0.0, 80.0, HEIGHT / 2, 0.0, 0.0, 1.0]
    info_pub.publish(info)


def test_depth_and_camera_info_give_a_3d_point(node_process, depth_publishers):
    _, client, _ = node_process
    depth_pub, info_pub = depth_publishers
    import vision_msgs.msg as vision  # built into the venv by make setup where not installed
    points, arrays = [], []
    client.node.create_subscription(PointStamped, 'target_point', points.append, RELIABLE)
    client.node.create_subscription(vision.Detection3DArray, 'detections_3d', arrays.append,
                                    RELIABLE)
    assert wait_until(lambda: client.node.count_publishers('/detections_3d') > 0, 10.0)
    header = client.header()
    _publish_info(info_pub, header)
    depth_pub.publish(conv.array_to_image(np.full((HEIGHT, WIDTH), 1500, np.uint16), '16UC1',
                                          header))
    client.publish_image(boxes=scene_boxes(WIDTH, HEIGHT), header=header)
    result = client.command('the red block on the table')
    check_ok_result(result)
    assert result.has_position, result.status_message
    # the point lies behind the visible surface (center_offset 0.6 half-widths)
    push = 0.6 * 0.5 * result.box.width * 1.5 / 80.0  # metres along the viewing ray
    assert 1.5 < result.position.z <= 1.5 + push + 1e-3
    assert wait_until(lambda: len(points) > 0, 10.0)
    assert points[-1].header == header
    assert points[-1].point.z == pytest.approx(result.position.z, abs=1e-6)
    # vision_msgs/Detection3DArray: the chosen object at the result's position
    assert wait_until(lambda: any(a.header == header for a in arrays), 10.0)
    (detection,) = next(a for a in arrays if a.header == header).detections
    center = detection.bbox.center
    assert (center.position.x, center.position.y, center.position.z) == pytest.approx(
        (result.position.x, result.position.y, result.position.z), abs=1e-9)
    assert center.orientation.w == 1.0
    assert detection.results[0].hypothesis.class_id == 'the red block on the table'
    assert detection.results[0].hypothesis.score == pytest.approx(result.confidence, rel=1e-6)

    # a depth image of another size is reported, not used
    header2 = client.header()
    depth_pub.publish(conv.array_to_image(np.full((10, 10), 1000, np.uint16), '16UC1', header2))
    client.publish_image(boxes=scene_boxes(WIDTH, HEIGHT), header=header2)
    result = client.command('the blue block on the table')
    assert result.status == GroundingResult.OK
    assert not result.has_position
    assert 'depth' in result.status_message and '10x10' in result.status_message


def test_lost_depth_uses_the_previous_frame_and_missing_depth_is_reported(node_process,
                                                                         depth_publishers):
    _, client, _ = node_process
    depth_pub, info_pub = depth_publishers
    # frame A with its depth, then frame B whose depth is lost
    header_a = client.header()
    _publish_info(info_pub, header_a)
    depth_pub.publish(conv.array_to_image(np.full((HEIGHT, WIDTH), 1200, np.uint16), '16UC1',
                                          header_a))
    client.publish_image(boxes=scene_boxes(WIDTH, HEIGHT), header=header_a, settle=0.1)
    header_b = client.publish_image(boxes=scene_boxes(WIDTH, HEIGHT))
    result = client.command('the red block left of the blue block')
    check_ok_result(result)
    assert result.header == header_a, 'not grounded on the frame whose depth arrived'
    assert result.has_position and result.position.z > 1.2, result.status_message
    assert 'before the newest' in result.status_message
    assert header_b != header_a

    # no kept frame has depth: the newest frame is used, and the message says why
    for _ in range(4):
        header_c = client.publish_image(boxes=scene_boxes(WIDTH, HEIGHT), settle=0.1)
    result = client.command('the blue block right of the red block')
    check_ok_result(result)
    assert result.header == header_c and not result.has_position
    assert 'no depth image within depth_max_skew' in result.status_message
