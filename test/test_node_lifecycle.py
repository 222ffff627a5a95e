"""In-process lifecycle tests of the reclip node over real DDS (tiny CLIP, CPU)."""

import threading

import numpy as np
import pytest
import rclpy
from lifecycle_msgs.srv import GetState
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String

from node_helpers import (RELIABLE_IMAGE, TestClient, domain_id, init_context, rss_kb, scene,
                          scene_boxes, wait_until)
from reclip_ros.ros import conversions as conv
from reclip_ros.msg import GroundingResult
from reclip_ros.ros.node import ReclipNode
from reclip_ros.srv import Ground

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


@pytest.fixture(scope='module')
def context():
    ctx = init_context(domain_id('lifecycle'))
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.fixture()
def spun(context):
    """Start nodes on a multi-threaded executor; shut everything down afterwards."""
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    thread = threading.Thread(target=executor.spin, daemon=True)
    nodes, clients = [], []

    def add(node=None, client=False):
        if node is not None:
            nodes.append(node)
            executor.add_node(node)
            if not thread.is_alive():
                thread.start()
            return node
        test_client = TestClient(context)
        clients.append(test_client)
        return test_client

    yield add
    for c in clients:
        c.close()
    executor.shutdown(timeout_sec=2.0)
    for n in nodes:
        n.release()
        n.destroy_node()


def make_node(context, **params):
    overrides = [Parameter(name, value=value) for name, value in params.items()]
    return ReclipNode(context=context, parameter_overrides=overrides)


def tiny_params(tiny_clip_dir, **extra):
    params = dict(models=[tiny_clip_dir], detector='', spacy_model='en_core_web_sm',
                  max_image_age=30.0, diagnostics_period=0.2)
    params.update(extra)
    return params


def state_label(client: TestClient) -> str:
    getter = client.node.create_client(GetState, '/reclip/get_state')
    try:
        assert getter.wait_for_service(timeout_sec=10.0)
        future = getter.call_async(GetState.Request())
        assert wait_until(future.done, 10.0)
        return future.result().current_state.label
    finally:
        client.node.destroy_client(getter)


def test_full_lifecycle(context, spun, tiny_clip_dir):
    rss_start = rss_kb(__import__('os').getpid())
    node = spun(make_node(context, **tiny_params(tiny_clip_dir)))
    client = spun(client=True)
    assert state_label(client) == 'unconfigured'
    assert node.grounder is None

    assert node.trigger_configure() == SUCCESS
    assert state_label(client) == 'inactive'
    assert node.grounder.device == 'cpu'
    assert node.grounder.model_names == [tiny_clip_dir]
    rss_configured = rss_kb(__import__('os').getpid())
    # inactive: the interface exists for the node's whole life; commands are answered
    assert client.wait_connected(active=False)
    inactive = client.command('the red block')
    assert inactive.status == GroundingResult.DROPPED
    assert inactive.status_message == 'not grounded: the node is inactive'
    assert inactive.header.frame_id == ''

    assert node.trigger_activate() == SUCCESS
    assert state_label(client) == 'active'
    assert client.wait_connected(), 'the active node did not subscribe / offer ~/ground'
    header = client.publish_image(boxes=scene_boxes())
    result = client.command('the red block')
    assert result.status == GroundingResult.OK, result.status_message
    assert result.header.frame_id == header.frame_id
    assert result.header.stamp == header.stamp
    assert 0.0 <= result.confidence <= 1.0

    assert node.trigger_deactivate() == SUCCESS
    assert state_label(client) == 'inactive'
    # still subscribed and offering ~/ground: both answer DROPPED while inactive
    assert client.command('the red block').status == GroundingResult.DROPPED
    request = Ground.Request(expression='the red block')
    assert client.call(request).result.status == GroundingResult.DROPPED
    assert node.grounder is not None, 'deactivate keeps the models loaded'

    # activate again: the same models answer again
    assert node.trigger_activate() == SUCCESS
    assert client.wait_connected()
    client.publish_image(boxes=scene_boxes())
    assert client.command('the blue block').status == GroundingResult.OK

    assert node.trigger_deactivate() == SUCCESS
    assert node.trigger_cleanup() == SUCCESS
    assert state_label(client) == 'unconfigured'
    assert node.grounder is None and node.worker is None
    rss_cleaned = rss_kb(__import__('os').getpid())
    print(f'\nRSS kB: start {rss_start}, configured {rss_configured}, cleaned {rss_cleaned}')

    # configure again after cleanup: the models load again
    assert node.trigger_configure() == SUCCESS
    assert node.grounder is not None


def test_configure_fails_cleanly_with_a_missing_model(context, spun, tiny_clip_dir, tmp_path):
    missing = str(tmp_path / 'no_such_model')
    node = spun(make_node(context, **tiny_params(missing)))
    client = spun(client=True)
    assert node.trigger_configure() == FAILURE
    assert state_label(client) == 'unconfigured'
    assert 'no_such_model' in node.last_error
    assert node.grounder is None and node.worker is None
    # while unconfigured, the model can be fixed and configure retried
    result = node.set_parameters([Parameter('models', value=[tiny_clip_dir])])[0]
    assert result.successful, result.reason
    assert node.trigger_configure() == SUCCESS
    assert node.grounder.model_names == [tiny_clip_dir]


def test_configure_fails_with_a_bad_parameter_given_at_start(context, spun, tiny_clip_dir):
    node = spun(make_node(context, **tiny_params(tiny_clip_dir, device='gpu')))
    assert node.trigger_configure() == FAILURE
    assert 'device' in node.last_error and 'gpu' in node.last_error


def test_configure_fails_when_cuda_is_absent(context, spun, tiny_clip_dir):
    torch = pytest.importorskip('torch')
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA; the test checks the error without it')
    node = spun(make_node(context, **tiny_params(tiny_clip_dir, device='cuda')))
    assert node.trigger_configure() == FAILURE
    assert 'cuda' in node.last_error.lower()


def test_parameters_are_validated_with_a_reason(context, spun, tiny_clip_dir):
    node = spun(make_node(context, **tiny_params(tiny_clip_dir)))
    bad = node.set_parameters([Parameter('continuous_rate', value=-1.0)])[0]
    assert not bad.successful and bad.reason
    bad = node.set_parameters([Parameter('precision', value='int4')])[0]
    assert not bad.successful and 'precision' in bad.reason
    bad = node.set_parameters([Parameter('models', value=['  '])])[0]
    assert not bad.successful and 'models' in bad.reason
    bad = node.set_parameters([Parameter('autostart', value=True)])[0]
    assert not bad.successful, 'autostart is read-only'

    assert node.trigger_configure() == SUCCESS
    refused = node.set_parameters([Parameter('detector', value='other')])[0]
    assert not refused.successful and 'configure' in refused.reason
    assert node.get_parameter('detector').value == ''
    ok = node.set_parameters([Parameter('max_image_age', value=5.0),
                              Parameter('continuous', value=True)])
    assert all(r.successful for r in ok)
    assert node.worker.settings.max_image_age == 5.0
    assert node.worker.settings.continuous is True
    descriptor = node.describe_parameter('max_image_age')
    assert descriptor.description and descriptor.floating_point_range


def test_each_input_has_its_own_callback_group(context, spun, tiny_clip_dir):
    node = spun(make_node(context, **tiny_params(tiny_clip_dir, subscribe_compressed=True)))
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    subs = {sub.topic_name: sub.callback_group for sub in node.subscriptions}
    inputs = ['/image', '/image/compressed', '/depth', '/camera_info', '/proposals',
              '/command']
    assert set(inputs) <= set(subs), subs
    groups = [subs[name] for name in inputs]
    assert len({id(g) for g in groups}) == len(inputs), 'inputs share a callback group'
    others = [s.callback_group for s in node.services] + [t.callback_group
                                                          for t in node.timers]
    assert not {id(g) for g in groups} & {id(g) for g in others}
    every_group = {id(g) for g in groups + others}
    assert node.executor_threads() > len(every_group), (
        'the executor needs a thread for every callback group')


class GatedGrounder:
    """Delegates to a real Grounder once *gate* is set (holds the worker busy)."""

    def __init__(self, grounder):
        self.grounder = grounder
        self.entered = threading.Event()
        self.gate = threading.Event()

    def ground(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(120.0), 'the test never opened the gate'
        return self.grounder.ground(*args, **kwargs)


def test_inputs_are_not_starved_while_service_calls_wait(context, tiny_clip_dir):
    """Many ~/ground calls waiting on a busy worker must not block images or commands."""
    node = make_node(context, **tiny_params(tiny_clip_dir))
    executor = MultiThreadedExecutor(num_threads=node.executor_threads(), context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    client = TestClient(context)
    gated = None
    try:
        assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
        gated = GatedGrounder(node.worker.grounder)
        node.worker.grounder = gated
        assert client.wait_connected()
        depth_pub = client.node.create_publisher(Image, 'depth', RELIABLE_IMAGE)
        image = conv.array_to_image(scene(), 'rgb8', client.header())
        futures = [client.ground.call_async(Ground.Request(
            expression=f'the red block {i}', image=image, boxes=scene_boxes()))
            for i in range(12)]
        assert gated.entered.wait(60.0), 'the worker never got a service request'
        frames, depths = node.worker.frames.count, node.worker.depth.count
        accepted = node.worker.queue.accepted
        assert wait_until(lambda: depth_pub.get_subscription_count() > 0, 20.0)
        for _ in range(3):
            header = client.publish_image(boxes=scene_boxes(), settle=0.1)
            depth_pub.publish(conv.array_to_image(np.full((64, 96), 1.0, np.float32),
                                                  '32FC1', header))
        client.command_pub.publish(String(data='the blue block'))
        starved = not wait_until(lambda: node.worker.frames.count > frames
                                 and node.worker.depth.count > depths
                                 and node.worker.queue.accepted > accepted, 30.0)
        gated.gate.set()
        assert not starved, 'image, depth or command callbacks did not run'
        assert wait_until(lambda: all(f.done() for f in futures), 120.0)
        statuses = [f.result().result.status for f in futures]
        assert statuses == [GroundingResult.OK] * 12, [
            f.result().result.status_message for f in futures]
        assert wait_until(lambda: client.results_for('the blue block'), 60.0)
    finally:
        if gated is not None:
            gated.gate.set()
        client.close()
        executor.shutdown(timeout_sec=2.0)
        node.release()
        node.destroy_node()


def test_center_offset_reaches_the_grounder_and_changes_at_run_time(context, spun,
                                                                     tiny_clip_dir):
    node = spun(make_node(context, **tiny_params(tiny_clip_dir, center_offset=0.0)))
    assert node.trigger_configure() == SUCCESS
    assert node.grounder.center_offset == 0.0
    result = node.set_parameters([Parameter('center_offset', value=1.5)])[0]
    assert result.successful, result.reason
    assert node.grounder.center_offset == 1.5
    refused = node.set_parameters([Parameter('center_offset', value=2.5)])[0]
    assert not refused.successful and 'center_offset' in refused.reason
    assert node.grounder.center_offset == 1.5
    assert node.get_parameter('center_offset').value == 1.5


@pytest.mark.parametrize('value, methods', [('crop', ('crop',)), ('blur', ('blur',)),
                                            ('crop,blur', ('crop', 'blur'))])
def test_isolation_methods_reach_the_region_scorer(context, spun, tiny_clip_dir, value,
                                                   methods):
    node = spun(make_node(context, **tiny_params(tiny_clip_dir, isolation_methods=value)))
    assert node.trigger_configure() == SUCCESS
    assert tuple(node.grounder.scorer.methods) == methods


def test_unknown_isolation_method_is_refused(context, spun, tiny_clip_dir):
    node = spun(make_node(context, **tiny_params(tiny_clip_dir)))
    refused = node.set_parameters([Parameter('isolation_methods', value='crop,zoom')])[0]
    assert not refused.successful and 'isolation_methods' in refused.reason
    assert node.get_parameter('isolation_methods').value == 'crop,blur'


def test_relations_mode_is_a_dynamic_parameter(context, spun, tiny_clip_dir):
    node = spun(make_node(context, **tiny_params(tiny_clip_dir)))
    client = spun(client=True)
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    assert client.wait_connected()
    client.publish_image(boxes=scene_boxes())
    command = 'pick up the blue block behind the red block'

    def scores():
        result = client.command(command)
        assert result.status == GroundingResult.OK, result.status_message
        return [round(c.score, 6) for c in result.candidates]

    extended = scores()
    ok = node.set_parameters([Parameter('relations', value='paper')])[0]
    assert ok.successful, ok.reason
    # paper mode scores the whole sentence (no command reduction, no head entity), extended
    # mode the reduced command with its relation: different distributions on the same frame
    paper = scores()
    assert paper != extended
    refused = node.set_parameters([Parameter('relations', value='fancy')])[0]
    assert not refused.successful and 'relations' in refused.reason
    assert node.get_parameter('relations').value == 'paper'
    assert node.set_parameters([Parameter('relations', value='extended')])[0].successful
    assert scores() == extended


VISION = conv.vision_msgs_module()


def test_publish_vision_msgs_true_without_vision_msgs_fails_configure(context, spun,
                                                                     tiny_clip_dir,
                                                                     monkeypatch):
    # vision_msgs is built into the venv (make setup): its absence is the lookup's answer
    monkeypatch.setattr(conv, 'vision_msgs_module', lambda: None)
    node = spun(make_node(context, **tiny_params(tiny_clip_dir, publish_vision_msgs='true')))
    assert node.trigger_configure() == FAILURE
    assert 'vision_msgs is not installed' in node.last_error
    assert node.grounder is None
    # 'auto' configures without it
    assert node.set_parameters([Parameter('publish_vision_msgs', value='auto')])[0].successful
    assert node.trigger_configure() == SUCCESS


def test_detections_arrive_as_vision_msgs_with_the_image_header(context, spun, tiny_clip_dir):
    node = spun(make_node(context, **tiny_params(tiny_clip_dir, publish_vision_msgs='true')))
    client = spun(client=True)
    received = []
    client.node.create_subscription(VISION.Detection2DArray, 'detections', received.append, 10)
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    assert client.wait_connected()
    assert wait_until(lambda: client.node.count_publishers('/detections') > 0, 10.0)
    header = client.publish_image(boxes=scene_boxes())
    result = client.command('the red block')
    assert result.status == GroundingResult.OK
    assert wait_until(lambda: any(a.header == header for a in received), 10.0)
    array = next(a for a in received if a.header == header)
    assert len(array.detections) == len(result.candidates)
    best = array.detections[0]
    assert best.results[0].hypothesis.class_id == 'the red block'
    assert best.results[0].hypothesis.score == pytest.approx(result.confidence, rel=1e-6)
    assert best.bbox.size_x == result.box.width and best.bbox.size_y == result.box.height
    assert best.bbox.center.position.x == result.box.x_offset + result.box.width / 2.0
