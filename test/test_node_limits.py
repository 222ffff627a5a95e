"""Hostile input over DDS to the node as its own process: every limit gives a clear status.

2000 boxes on `proposals`, an 8000x8000 rgb8 frame on `image` and a small PNG that decodes
to 8000x8000 on `image/compressed`: each command gets one result, the node stays alive and
its resident memory (now and at its peak) stays below 1.5 GB.
"""

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest

from node_helpers import RELIABLE_IMAGE, rss_kb, running_node, scene, wait_until
from reclip_ros.ros import conversions as conv
from reclip_ros.msg import GroundingResult, Proposals

GB_KB = 1024 * 1024


@pytest.fixture(scope='module')
def node(tiny_clip_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp('node_limits') / 'node.log'
    with running_node(tiny_clip_dir, 'limits', log, max_image_age='60.0',
                      subscribe_compressed='true', max_candidates='0') as (proc, client):
        compressed = client.node.create_publisher(CompressedImage, 'image/compressed',
                                                  RELIABLE_IMAGE)
        assert wait_until(lambda: compressed.get_subscription_count() > 0, 30.0)
        yield proc, client, compressed


def _wait_for_frame(client, header):
    """Wait until the node grounds on the frame *header* with its proposals (both arrived).

    Image and proposals travel on two topics; we ask until an answer is OK and carries
    *header* (a condition, not a sleep).
    """
    seen = []

    def grounded_on_it():
        result = client.command('the red block')
        seen.append(result)
        return (result.status == GroundingResult.OK and result.header.stamp == header.stamp
                and result.header.frame_id == header.frame_id)
    assert wait_until(grounded_on_it, 60.0, period=0.2), seen[-1:]


def _answer_on(client, frame_id, timeout):
    """Ask until an answer comes on the frame *frame_id* (a condition); return it."""
    answers = []

    def on_it():
        answers.append(client.command('the red block'))
        return answers[-1].header.frame_id == frame_id
    assert wait_until(on_it, timeout, period=0.3), answers[-1:]
    return answers[-1]


def test_2000_proposals_are_cut_to_max_proposals_with_a_message(node):
    proc, client, _ = node
    rng = np.random.default_rng(0)
    xy = np.stack([rng.integers(0, 80, 2000), rng.integers(0, 48, 2000)], axis=1)
    wh = rng.integers(4, 16, size=(2000, 2))
    boxes = [RegionOfInterest(x_offset=int(x), y_offset=int(y), width=int(w), height=int(h))
             for (x, y), (w, h) in zip(xy, wh)]
    scores = rng.random(2000).astype(np.float32)
    header = client.header(frame_id='many_boxes')
    client.proposals_pub.publish(Proposals(header=header, boxes=boxes, scores=list(scores)))
    client.image_pub.publish(conv.array_to_image(scene(), 'rgb8', header))
    _wait_for_frame(client, header)
    result = client.command('the blue block between the red block and the red block')
    assert result.status == GroundingResult.OK, result.status_message
    assert '1900 of 2000 proposal boxes left out (max_proposals=100)' in result.status_message
    assert len(result.candidates) == 100
    # the boxes kept are the 100 best-scored ones
    best = {(b.x_offset, b.y_offset, b.width, b.height)
            for b in (boxes[i] for i in np.argsort(-scores, kind='stable')[:100])}
    kept = {(c.box.x_offset, c.box.y_offset, c.box.width, c.box.height)
            for c in result.candidates}
    assert kept == best
    assert proc.alive() and rss_kb(proc.pid, 'VmHWM') < 1.5 * GB_KB


def test_8000x8000_rgb8_frame_gets_bad_image_naming_the_limit(node):
    proc, client, _ = node
    header = client.header(frame_id='huge_raw')
    huge = Image(header=header, height=8000, width=8000, encoding='rgb8', step=8000 * 3,
                 data=bytes(8000 * 8000 * 3))
    client.image_pub.publish(huge)
    del huge
    result = _answer_on(client, 'huge_raw', 90.0)
    assert result.status == GroundingResult.BAD_IMAGE
    assert 'max_image_pixels' in result.status_message
    assert '8000x8000' in result.status_message
    assert proc.alive() and rss_kb(proc.pid, 'VmHWM') < 1.5 * GB_KB


def test_small_png_of_8000x8000_is_refused_from_its_header(node):
    proc, client, compressed = node
    ok, png = cv2.imencode('.png', np.zeros((8000, 8000, 3), np.uint8),
                           [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok and png.nbytes < 300_000  # a small message that decodes to 192 MB
    header = client.header(frame_id='png_bomb')
    compressed.publish(CompressedImage(header=header, format='png', data=png.tobytes()))
    result = _answer_on(client, 'png_bomb', 60.0)
    assert result.status == GroundingResult.BAD_IMAGE
    assert 'max_image_pixels' in result.status_message
    assert proc.alive() and rss_kb(proc.pid, 'VmHWM') < 1.5 * GB_KB


def test_the_node_still_grounds_afterwards(node):
    proc, client, _ = node
    header = client.publish_image(rgb=scene(), boxes=[
        RegionOfInterest(x_offset=9, y_offset=16, width=24, height=32)])
    _wait_for_frame(client, header)
    assert client.command('the red block').status == GroundingResult.OK
    assert proc.alive()
    print(f'\nnode RSS {rss_kb(proc.pid) / 1024:.0f} MB, '
          f'peak {rss_kb(proc.pid, "VmHWM") / 1024:.0f} MB')
