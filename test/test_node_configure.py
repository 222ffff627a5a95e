"""Nothing waits behind configure, and frames are judged when the command arrives.

- In process: configure is requested through the node's own ``change_state`` service (as
  ``ros2 lifecycle set`` does) and held inside model loading (the real loader, wrapped by
  the node's ``grounder_factory`` so the test decides when loading ends). Meanwhile a
  command and a ``~/ground`` call are answered DROPPED "configuring", parameters are read
  and /diagnostics says ``configuring``.
- As a process with ``autostart`` (what the launch file runs): a command sent while the
  node loads its models is answered DROPPED "configuring" at once; once active, a command
  sent 0.3 s after the last frame of a burst is grounded OK on that frame; after oversized
  frames a command gets BAD_IMAGE naming the limit, with the refused frame's header.
"""

import threading
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import GetParameters
from rclpy.duration import Duration
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String

from node_helpers import (RELIABLE, NodeProcess, TestClient, domain_id, init_context,
                          node_in_process, scene, scene_boxes, wait_until)

from reclip_ros.msg import GroundingResult, Proposals
from reclip_ros.ros import conversions as conv
from reclip_ros.ros.node import ReclipNode
from reclip_ros.srv import Ground


class HeldLoader:
    """``Grounder.from_config`` that waits, once inside, until the test releases it."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, config):
        from reclip_ros.core.grounder import Grounder
        self.entered.set()
        assert self.release.wait(60.0)
        return Grounder.from_config(config)


@pytest.fixture()
def held_node(tiny_clip_dir):
    context = init_context(domain_id('configure'))
    loader = HeldLoader()
    node = ReclipNode(context=context, grounder_factory=loader, parameter_overrides=[
        Parameter('models', value=[tiny_clip_dir]), Parameter('detector', value=''),
        Parameter('diagnostics_period', value=0.1)])
    with node_in_process(node, context) as (client, crashed, _):
        try:
            yield node, client, loader
        finally:
            loader.release.set()
        assert not crashed, crashed


def _call(node, srv_type, name, request, timeout=10.0):
    client = node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout)
        future = client.call_async(request)
        assert wait_until(future.done, timeout), f'{name} did not answer'
        return future.result()
    finally:
        node.destroy_client(client)


def test_configure_through_the_service_blocks_nothing(held_node):
    node, client, loader = held_node
    diagnostics = []
    client.node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    assert client.wait_connected(active=False)
    changer = client.node.create_client(ChangeState, '/reclip/change_state')
    assert changer.wait_for_service(timeout_sec=10.0)
    configure = changer.call_async(ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
    assert loader.entered.wait(30.0)
    # models are "loading" until the test says so; everything else answers meanwhile
    result = client.command('the red block')
    assert result.status == GroundingResult.DROPPED
    assert result.status_message == 'not grounded: the node is configuring (loading its models)'
    request = Ground.Request(expression='the blue block', boxes=scene_boxes())
    request.image = conv.array_to_image(scene(), 'rgb8', client.header())
    answer = _call(client.node, Ground, '/reclip/ground', request)
    assert answer.result.status == GroundingResult.DROPPED
    assert 'configuring' in answer.result.status_message
    params = _call(client.node, GetParameters, '/reclip/get_parameters',
                   GetParameters.Request(names=['queue_size']))
    assert params.values[0].integer_value == 10
    assert wait_until(lambda: any(kv.key == 'state' and kv.value == 'configuring'
                                  for a in diagnostics for s in a.status for kv in s.values),
                      10.0)
    assert not configure.done()
    loader.release.set()
    assert wait_until(configure.done, 60.0)
    assert configure.result().success
    state = _call(client.node, GetState, '/reclip/get_state', GetState.Request())
    assert state.current_state.id == State.PRIMARY_STATE_INACTIVE
    client.node.destroy_client(changer)


@pytest.fixture()
def process(tmp_path):
    domain = domain_id('configure')
    context = init_context(domain)
    client = TestClient(context)  # before the node starts: it connects as early as it can
    proc = NodeProcess({'models': '[sim]', 'detector': "''", 'autostart': 'true',
                        'image_qos_reliability': 'reliable', 'max_image_pixels': '20000',
                        'spacy_model': 'en_core_web_sm'}, domain, tmp_path / 'node.log')
    yield proc, client
    client.close()
    rclpy.shutdown(context=context)
    proc.stop()


def _state(client):
    return _call(client.node, GetState, '/reclip/get_state', GetState.Request(),
                 timeout=30.0).current_state.id


def test_autostart_answers_during_configure_then_grounds_on_the_last_frame(process):
    proc, client = process
    assert client.wait_connected(timeout=60.0, active=False), proc.log()
    if _state(client) == State.TRANSITION_STATE_CONFIGURING:
        sent = time.monotonic()
        result = client.command('the red block during configure')
        waited = time.monotonic() - sent
        assert result.status == GroundingResult.DROPPED, result.status_message
        assert 'configuring' in result.status_message
        print(f'\nanswered during configure after {waited:.3f} s')
    else:  # loading the sim model takes seconds, discovery a fraction of one
        pytest.fail(f'configure was over before the client connected: {proc.log()[-2000:]}')
    assert client.wait_connected(timeout=120.0), proc.log()[-3000:]
    # a burst of frames at 20 Hz as a camera sends them (no wait for acknowledgements,
    # which DDS may send only with its next heartbeat), then a command 0.3 s after the last
    client.publish_image(boxes=scene_boxes())  # one frame that surely arrived
    burst = []
    for _ in range(5):
        header = client.header()
        client.proposals_pub.publish(Proposals(header=header, boxes=scene_boxes()))
        client.image_pub.publish(conv.array_to_image(scene(), 'rgb8', header))
        burst.append(header)
        time.sleep(0.05)
    time.sleep(0.3)
    result = client.command('the red block')
    assert result.status == GroundingResult.OK, result.status_message
    assert result.header in burst, 'not grounded on a frame of the burst'
    print(f'\ngrounded on burst frame {burst.index(result.header) + 1} of {len(burst)}')
    # oversized frames (max_image_pixels 20000): BAD_IMAGE naming the limit, on that frame
    big = np.zeros((200, 200, 3), np.uint8)
    for _ in range(3):
        refused = client.publish_image(rgb=big, boxes=scene_boxes(200, 200), settle=0.05)
    result = client.command('the red block')
    assert result.status == GroundingResult.BAD_IMAGE, result.status_message
    assert 'max_image_pixels' in result.status_message and '20000' in result.status_message
    assert result.header == refused
    assert proc.alive()


def test_commands_on_the_command_topic_before_activation_are_answered_once(process):
    proc, client = process
    assert client.wait_connected(timeout=60.0, active=False), proc.log()
    texts = [f'the blue block early {k}' for k in range(5)]
    for text in texts:
        client.command_pub.publish(String(data=text))
    assert client.wait_connected(timeout=120.0), proc.log()[-3000:]
    assert wait_until(lambda: all(client.results_for(t) for t in texts), 30.0)
    assert all(len(client.results_for(t)) == 1 for t in texts)


def test_the_log_lists_every_input_and_warns_once_about_depth_without_camera_info(process):
    proc, client = process
    assert client.wait_connected(timeout=120.0), proc.log()[-3000:]
    active = next(line for line in proc.log().splitlines() if 'active: listening on' in line)
    for topic in ('/image', '/command', '/depth', '/camera_info', '/proposals'):
        assert topic in active, active
    depth_pub = client.node.create_publisher(Image, 'depth', RELIABLE)
    assert wait_until(lambda: depth_pub.get_subscription_count() > 0, 20.0)
    depth = np.full((64, 96), 1500, np.uint16)
    warning = 'but none on /camera_info: results will have no 3D position'

    def send(n):
        for _ in range(n):
            depth_pub.publish(conv.array_to_image(depth, '16UC1', client.header()))
            time.sleep(0.05)  # a camera's pace
        return warning in proc.log()

    # until the node has taken enough depth images to warn (the reader keeps the last 6)
    assert wait_until(lambda: send(5), 60.0, period=0.0), proc.log()[-2000:]
    send(20)
    assert depth_pub.wait_for_all_acked(Duration(seconds=20.0))
    assert proc.log().count(warning) == 1
