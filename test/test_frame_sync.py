"""Choosing the frame a command is grounded on when depth or proposals are lost or late.

ROS-free: frames, depth and proposals are put into the node's buffers directly; the
worker tests use a real tiny Grounder (CLIP built by the tests, real spaCy).
"""

import threading

import numpy as np
import pytest

from reclip_ros.runtime.jobs import SOURCE_CONTINUOUS, SOURCE_TOPIC, CommandQueue, GroundingJob
from reclip_ros.core.geometry import CameraIntrinsics
from reclip_ros.core.types import Box, Status
from reclip_ros.runtime.frame_buffer import Frame, FrameHistory, StampedHistory
from reclip_ros.runtime.frame_sync import SyncSettings, choose_frame, missing_depth_note
from reclip_ros.runtime.worker import GroundingWorker, WorkerSettings

NOW = 1_000 * 10**9
PERIOD = 200 * 10**6  # 5 Hz camera
W, H = 64, 48


def _frame(stamp):
    image = np.zeros((H, W, 3), np.uint8)
    image[10:30, 5:25] = (220, 30, 30)
    return Frame(stamp, NOW, {'stamp': stamp}, lambda: image)


def _depth(stamp, metres=1.5):
    return Frame(stamp, NOW, None, lambda: np.full((H, W), metres, np.float32))


def _stream(n=3):
    """*n* colour frames, the newest stamped NOW, one camera period apart."""
    frames = FrameHistory(maxlen=3)
    for i in reversed(range(n)):
        frames.put(_frame(NOW - i * PERIOD))
    return frames


def _choose(frames, depth, proposals=None, need_proposals=True, **settings):
    return choose_frame(frames.get(), frames.recent(), depth,
                        proposals if proposals is not None else StampedHistory(),
                        SyncSettings(**settings), NOW, need_proposals=need_proposals)


def test_frame_history_keeps_the_newest_few():
    frames = _stream(3)
    frames.put(_frame(NOW + PERIOD))
    recent = frames.recent()
    assert [f.stamp_ns for f in recent] == [NOW + PERIOD, NOW, NOW - PERIOD]
    assert frames.get() is recent[0] and frames.count == 4


def test_newest_frame_with_its_depth_is_used():
    frames, depth = _stream(), StampedHistory()
    for f in frames.recent():
        depth.put(f.stamp_ns, _depth(f.stamp_ns))
    choice = _choose(frames, depth)
    assert choice.frame is frames.get()
    assert choice.depth.stamp_ns == NOW and choice.depth_expected and not choice.note


def test_lost_depth_of_the_newest_frame_falls_back_to_the_previous_frame():
    frames, depth = _stream(), StampedHistory()
    depth.put(NOW - 2 * PERIOD, _depth(NOW - 2 * PERIOD))
    depth.put(NOW - PERIOD, _depth(NOW - PERIOD))  # the newest frame's depth was lost
    choice = _choose(frames, depth, sync_wait=0.0)
    assert choice.frame.stamp_ns == NOW - PERIOD
    assert choice.depth.stamp_ns == NOW - PERIOD
    assert 'depth image' in choice.note and '0.200 s before the newest' in choice.note


def test_late_depth_of_the_newest_frame_is_waited_for():
    frames, depth = _stream(), StampedHistory()
    depth.put(NOW - PERIOD, _depth(NOW - PERIOD))
    late = threading.Timer(0.05, lambda: depth.put(NOW, _depth(NOW)))
    late.start()
    try:
        choice = _choose(frames, depth, sync_wait=30.0)
    finally:
        late.cancel()
    assert choice.frame is frames.get() and choice.depth.stamp_ns == NOW and not choice.note


def test_no_matching_depth_anywhere_keeps_the_newest_frame_and_explains():
    frames, depth = _stream(), StampedHistory()
    depth.put(NOW - 10 * PERIOD, _depth(NOW - 10 * PERIOD))
    choice = _choose(frames, depth, sync_wait=0.0)
    assert choice.frame is frames.get() and choice.depth is None and choice.depth_expected
    note = missing_depth_note(choice.frame, depth, SyncSettings(sync_wait=0.0))
    assert 'no depth image within depth_max_skew=0.05 s' in note
    assert '2.000 s away' in note and 'no 3D position' in note


def test_depth_is_not_expected_before_any_arrived():
    frames = _stream()
    choice = _choose(frames, StampedHistory(), sync_wait=30.0)  # returns at once
    assert choice.frame is frames.get() and not choice.depth_expected and not choice.note


def test_earlier_frames_older_than_max_image_age_are_not_used():
    frames, depth = _stream(), StampedHistory()
    depth.put(NOW - PERIOD, _depth(NOW - PERIOD))
    choice = _choose(frames, depth, sync_wait=0.0, max_image_age=0.1)
    assert choice.frame is frames.get() and choice.depth is None


def test_lost_proposals_of_the_newest_frame_fall_back_like_depth():
    frames, proposals = _stream(), StampedHistory()
    proposals.put(NOW - PERIOD, [Box(1, 1, 5, 5)])
    choice = _choose(frames, StampedHistory(), proposals, sync_wait=0.0)
    assert choice.frame.stamp_ns == NOW - PERIOD and 'proposals' in choice.note
    # a command with its own boxes does not need the topic's proposals
    own = _choose(frames, StampedHistory(), proposals, need_proposals=False, sync_wait=0.0)
    assert own.frame is frames.get()


def test_wait_match_returns_at_once_or_after_the_timeout():
    history = StampedHistory(maxlen=4)
    assert history.wait_match(NOW, 0.01, 0.0) is None and history.count == 0
    history.put(NOW, 'a')
    assert history.wait_match(NOW + 10**6, 0.01, 30.0) == 'a'
    assert history.wait_match(NOW + 10**9, 0.01, 0.05) is None
    assert history.nearest_skew_s(NOW + 10**9) == pytest.approx(1.0)


# -- the worker, with a real tiny Grounder ------------------------------------------------

BOXES = [Box(5, 10, 20, 20), Box(35, 8, 20, 30)]


def _worker(grounder, **settings):
    worker = GroundingWorker(grounder, CommandQueue(10), lambda job, outcome: None,
                             lambda: NOW, WorkerSettings(**settings))
    worker.intrinsics.put((CameraIntrinsics(50.0, 50.0, W / 2, H / 2), W, H))
    return worker


def test_worker_grounds_on_the_frame_whose_depth_arrived(grounder):
    worker = _worker(grounder, sync_wait=0.0)
    for i in (2, 1, 0):
        stamp = NOW - i * PERIOD
        worker.frames.put(_frame(stamp))
        worker.proposals.put(stamp, BOXES)
        if i > 0:  # the newest frame's depth is lost
            worker.depth.put(stamp, _depth(stamp))
    outcome = worker.handle(GroundingJob('the red box', SOURCE_TOPIC, NOW))
    assert outcome.result.status == Status.OK, outcome.result.message
    assert outcome.frame.stamp_ns == NOW - PERIOD
    assert outcome.result.position is not None and outcome.result.position[2] > 1.5
    assert 'before the newest' in outcome.result.message


def test_worker_reports_expected_but_missing_depth(grounder):
    worker = _worker(grounder, sync_wait=0.0)
    worker.depth.put(NOW - 50 * PERIOD, _depth(NOW - 50 * PERIOD))
    worker.frames.put(_frame(NOW))
    worker.proposals.put(NOW, BOXES)
    outcome = worker.handle(GroundingJob('the red box', SOURCE_TOPIC, NOW))
    assert outcome.result.status == Status.OK and outcome.result.position is None
    assert 'no depth image within depth_max_skew' in outcome.result.message


def test_worker_without_a_depth_stream_says_nothing_about_depth(grounder):
    worker = _worker(grounder)
    worker.frames.put(_frame(NOW))
    worker.proposals.put(NOW, BOXES)
    result = worker.handle(GroundingJob('the red box', SOURCE_TOPIC, NOW)).result
    assert result.status == Status.OK and 'depth' not in result.message


def test_continuous_regrounding_says_so(grounder):
    worker = _worker(grounder)
    frame = _frame(NOW)
    worker.frames.put(frame)
    worker.proposals.put(NOW, BOXES)
    command = worker.handle(GroundingJob('the red box', SOURCE_TOPIC, NOW)).result
    again = worker.handle(GroundingJob('the red box', SOURCE_CONTINUOUS, NOW,
                                       frame=frame)).result
    assert 'continuous' not in command.message
    assert again.status == Status.OK and again.message.startswith('continuous')


def test_proposals_matter_more_than_depth_when_no_frame_has_both():
    frames, depth, proposals = _stream(), StampedHistory(), StampedHistory()
    depth.put(NOW, _depth(NOW))                       # the newest: depth, no proposals
    proposals.put(NOW - PERIOD, [Box(1, 1, 5, 5)])    # the previous: proposals, no depth
    choice = _choose(frames, depth, proposals, sync_wait=0.0)
    assert choice.frame.stamp_ns == NOW - PERIOD and choice.depth is None
    assert 'proposals' in choice.note


def test_remarks_go_on_ok_results_only_and_failures_without_a_frame_have_none(grounder):
    worker = _worker(grounder, sync_wait=0.0)
    for i in (2, 1, 0):
        stamp = NOW - i * PERIOD
        worker.feed_image(_frame(stamp))
        worker.feed_proposals(stamp, BOXES)
        if i > 0:  # the newest frame's depth is lost: an OK result gets a frame remark
            worker.feed_depth(_depth(stamp))
    ok = worker.handle(GroundingJob('the red box', SOURCE_TOPIC, NOW))
    assert ok.result.status == Status.OK and 'before the newest' in ok.result.message
    # the same frame choice, but the grounder finds nothing to ground: INVALID_COMMAND,
    # whose message says only that, and which carries no frame (so no frame header)
    bad = worker.handle(GroundingJob('... !!', SOURCE_TOPIC, NOW))
    assert bad.result.status == Status.INVALID_COMMAND
    assert 'before the newest' not in bad.result.message and 'depth' not in bad.result.message
    assert bad.frame is None
    # a failure about the frame (no proposals for it) keeps the frame, without remarks
    alone = _worker(grounder, sync_wait=0.0)
    alone.feed_depth(_depth(NOW - 50 * PERIOD))  # depth expected but missing: a remark
    alone.feed_image(_frame(NOW))
    lost = alone.handle(GroundingJob('the red box', SOURCE_TOPIC, NOW))
    assert lost.result.status == Status.NO_PROPOSALS and lost.frame is not None
    assert 'depth' not in lost.result.message
