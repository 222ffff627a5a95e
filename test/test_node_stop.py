"""Stopping and cycling the node: SIGINT with work queued, and lifecycle transitions under load.

- SIGINT to the node process while commands wait: the process exits in at most 2 s with
  code 0, and every command got exactly one result first (waiting ones DROPPED).
- 50 deactivate/activate cycles, each with a ``~/ground`` call in flight and a stream of
  commands: the node never crashes, and every command and call gets exactly one answer.
- Memory: repeated commands over 20 deactivate/activate and 5 cleanup/configure cycles end
  within 50 MB of the first cycle.
"""

import os
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import RegionOfInterest

from node_helpers import (NodeProcess, TestClient, domain_id, init_context, rss_kb, scene,
                          scene_boxes, wait_until)
from reclip_ros.msg import GroundingResult
from reclip_ros.ros.node import ReclipNode
from reclip_ros.srv import Ground

SUCCESS = TransitionCallbackReturn.SUCCESS


def _many_boxes(width, height, n=100, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = int(rng.integers(20, width // 2)), int(rng.integers(20, height // 2))
        out.append(RegionOfInterest(x_offset=int(rng.integers(0, width - w)),
                                    y_offset=int(rng.integers(0, height - h)),
                                    width=w, height=h))
    return out


def test_sigint_answers_every_command_and_exits_before_launch_escalates(tiny_clip_dir,
                                                                         tmp_path):
    """SIGINT with 60 commands queued: every one answered once, exit code 0.

    The process must end by itself (no SIGKILL) with code 0; how long it takes is measured
    by ``reclip soak`` (``node_stop_s``) and printed here, not asserted (about 1.1 s on an
    idle machine, 0.6-0.8 s under launch: docs/node.md).
    """
    domain = domain_id('stop')
    proc = NodeProcess({
        'models': f"['{tiny_clip_dir}']", 'detector': "''", 'spacy_model': 'en_core_web_sm',
        'autostart': 'true', 'max_image_age': '60.0', 'image_qos_reliability': 'reliable',
        'queue_size': '200',
    }, domain, tmp_path / 'node.log')
    context = init_context(domain)
    client = TestClient(context)
    try:
        assert client.wait_connected(timeout=120.0), proc.log()
        width, height = 1280, 960
        rgb = np.tile(scene(), (15, 14, 1))[:height, :width]
        header = client.publish_image(rgb=rgb, boxes=_many_boxes(width, height))
        assert wait_until(lambda: client.command('the red block').status
                          == GroundingResult.OK, 60.0, period=0.2)
        # a queue of different commands (each a fresh frame encoding is cached: vary text)
        texts = [f'the red block number {k}' for k in range(60)]
        for text in texts:
            client.command_pub.publish(_string(text))
        # the node is busy with the queue: at least one answered, more waiting
        assert wait_until(lambda: any(client.results_for(t) for t in texts), 60.0)
        start = time.monotonic()
        proc.proc.send_signal(signal.SIGINT)
        code = proc.proc.wait(10.0)
        elapsed = time.monotonic() - start
        assert code == 0, proc.log()[-3000:]
        # every command had its one result published before the process exited
        got = wait_until(lambda: all(client.results_for(t) for t in texts), 10.0)
        missing = [t for t in texts if not client.results_for(t)]
        assert got, f"{len(missing)} commands without a result: {missing[:5]}"
        counts = Counter(r.expression for r in client.results if r.expression in texts)
        assert set(counts.values()) == {1}, counts
        statuses = Counter(client.results_for(t)[0].status for t in texts)
        assert statuses[GroundingResult.DROPPED] >= 1, statuses
        assert set(statuses) <= {GroundingResult.OK, GroundingResult.DROPPED}
        dropped = [client.results_for(t)[0] for t in texts
                   if client.results_for(t)[0].status == GroundingResult.DROPPED]
        assert all('shutting down' in r.status_message for r in dropped)
        assert all(r.header.frame_id == '' for r in dropped)
        assert header.frame_id
        print(f'\nSIGINT to exit: {elapsed:.2f} s; {dict(statuses)}')
    finally:
        client.close()
        rclpy.shutdown(context=context)
        proc.stop()


def _string(text):
    from std_msgs.msg import String
    return String(data=text)


@pytest.fixture()
def in_process(tiny_clip_dir):
    context = init_context(domain_id('cycles'))
    node = ReclipNode(context=context, parameter_overrides=[
        Parameter('models', value=[tiny_clip_dir]), Parameter('detector', value=''),
        Parameter('max_image_age', value=600.0), Parameter('queue_size', value=1000)])
    executor = MultiThreadedExecutor(num_threads=node.executor_threads(), context=context)
    executor.add_node(node)
    client = TestClient(context)
    crashed = []

    def spin():
        try:
            executor.spin()
        except Exception as exc:  # noqa: BLE001 - a crash of the executor fails the test
            if rclpy.ok(context=context):
                crashed.append(exc)
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    yield node, client, crashed, thread
    client.close()
    executor.shutdown(timeout_sec=2.0)
    node.release()
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_50_deactivations_with_calls_in_flight_and_commands_streaming(in_process):
    node, client, crashed, thread = in_process
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    assert client.wait_connected()
    client.publish_image(boxes=scene_boxes())
    assert wait_until(lambda: client.command('the red block').status == GroundingResult.OK,
                      30.0, period=0.1)
    texts, futures = [], []
    for cycle in range(50):
        # a call in flight (with its own image, so it grounds whatever the node's state)
        request = Ground.Request(expression=f'the blue block call {cycle}')
        futures.append(client.ground.call_async(request))
        for k in range(4):
            text = f'the red block cycle {cycle} command {k}'
            texts.append(text)
            client.command_pub.publish(_string(text))
        assert node.trigger_deactivate() == SUCCESS
        assert node.trigger_activate() == SUCCESS
    assert thread.is_alive() and not crashed, crashed
    assert wait_until(lambda: all(f.done() for f in futures), 120.0)
    assert wait_until(lambda: all(client.results_for(t) for t in texts), 120.0)
    counts = Counter(r.expression for r in client.results if r.expression in set(texts))
    assert len(counts) == len(texts) and set(counts.values()) == {1}
    calls = Counter(r.expression for r in client.results if 'call' in r.expression)
    assert len(calls) == 50 and set(calls.values()) == {1}
    for future in futures:
        result = future.result().result
        assert result.status in (GroundingResult.OK, GroundingResult.DROPPED)
        if result.status == GroundingResult.DROPPED:
            assert 'deactivated' in result.status_message or 'inactive' in result.status_message
    statuses = Counter(client.results_for(t)[0].status for t in texts)
    assert set(statuses) <= {GroundingResult.OK, GroundingResult.DROPPED}, statuses
    print(f'\ncommands: {dict(statuses)}')


def test_cycles_return_memory(in_process):
    node, client, crashed, _ = in_process
    pid = os.getpid()

    def commands(n=10):
        for k in range(n):
            assert client.command(f'the red block {k % 3}').status in (
                GroundingResult.OK, GroundingResult.NO_IMAGE)

    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    assert client.wait_connected()
    client.publish_image(boxes=scene_boxes())
    commands()
    first = rss_kb(pid)
    for _ in range(20):
        assert node.trigger_deactivate() == SUCCESS and node.trigger_activate() == SUCCESS
        client.publish_image(boxes=scene_boxes())
        commands()
    after_activations = rss_kb(pid)
    for _ in range(5):
        assert node.trigger_deactivate() == SUCCESS and node.trigger_cleanup() == SUCCESS
        assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
        client.publish_image(boxes=scene_boxes())
        commands()
    last = rss_kb(pid)
    print(f'\nRSS MB: first {first / 1024:.0f}, after 20 deactivate/activate '
          f'{after_activations / 1024:.0f}, after 5 cleanup/configure {last / 1024:.0f}')
    assert not crashed
    assert after_activations - first < 50 * 1024
    assert last - first < 50 * 1024
