"""The node's ROS-free helpers: bounded queue, frame buffer, worker (real tiny Grounder)."""

import threading

import numpy as np
import pytest

from reclip_ros.runtime.jobs import (SOURCE_CONTINUOUS, SOURCE_TOPIC, CommandQueue,
                                      GroundingJob, JobOutcome)
from reclip_ros.core.types import Box, GroundingResult, Status, Timings
from reclip_ros.runtime.frame_buffer import Frame, LatestSlot, StampedHistory
from reclip_ros.runtime.worker import GroundingWorker, LatencyStats, WorkerSettings
from reclip_ros.runtime.parameters import PARAMETERS, validate

NOW = 1_000 * 10**9


def test_queue_is_bounded_fifo_and_refuses_when_full():
    queue = CommandQueue(2)
    jobs = [GroundingJob(f'job {i}') for i in range(3)]
    assert queue.put(jobs[0]) and queue.put(jobs[1])
    assert not queue.put(jobs[2])
    assert (queue.accepted, queue.refused, len(queue)) == (2, 1, 2)
    assert queue.get(0.1) is jobs[0] and queue.get(0.1) is jobs[1]
    assert queue.get(0.05) is None
    with pytest.raises(ValueError):
        CommandQueue(0)


def test_queue_wake_and_drain():
    queue = CommandQueue(5)
    got = []
    thread = threading.Thread(target=lambda: got.append(queue.get(timeout=30.0)))
    thread.start()
    queue.wake()
    thread.join(10.0)
    assert got == [None] and not thread.is_alive()
    queue.put(GroundingJob('a'))
    queue.put(GroundingJob('b'))
    assert [j.expression for j in queue.drain()] == ['a', 'b'] and len(queue) == 0


def test_job_completes_once():
    job = GroundingJob('x')
    assert job.wait(0.01) is None and not job.done
    assert job.complete('first') and not job.complete('second')
    assert job.wait(0) == 'first'


def test_frame_decodes_once_and_repeats_errors():
    calls = []

    def decoder():
        calls.append(1)
        return np.zeros((2, 2, 3), np.uint8)

    frame = Frame(5, 6, None, decoder)
    assert frame.decode() is frame.decode() and len(calls) == 1
    bad = Frame(5, 6, None, lambda: (_ for _ in ()).throw(ValueError('bad encoding')))
    for _ in range(2):
        with pytest.raises(ValueError, match='bad encoding'):
            bad.decode()
    assert frame.key != Frame(5, 6, None, decoder).key, 'each received frame has its own key'
    assert Frame(NOW - 2 * 10**9, NOW, None, decoder).age_s(NOW) == pytest.approx(2.0)
    assert Frame(0, NOW - 10**9, None, decoder).age_s(NOW) == pytest.approx(1.0)


def test_stamped_history_matches_nearest_within_skew():
    history = StampedHistory(maxlen=3)
    for stamp in (100, 200, 300, 400):
        history.put(stamp, f'item {stamp}')
    assert len(history) == 3
    assert history.match(290, max_skew_s=20e-9) == 'item 300'
    assert history.match(100, max_skew_s=1e-9) is None, 'the oldest was dropped'
    assert history.match(350, max_skew_s=1e-9) is None
    slot = LatestSlot()
    slot.put('a')
    slot.put('b')
    assert slot.get() == 'b' and slot.count == 2


def test_latency_stats():
    stats = LatencyStats(window=10)
    for ms in (1.0, 2.0, 3.0):
        stats.record(JobOutcome(GroundingResult.failure('x', Status.NO_PROPOSALS, '',
                                                        timings=Timings(total=ms))))
    stats.record(JobOutcome(GroundingResult.failure('x', Status.DROPPED, '')))
    summary = stats.summary()
    assert summary['latency_total_ms_max'] == 3.0 and summary['latency_window'] == 3
    assert stats.by_status['DROPPED'] == 1 and stats.by_status['NO_PROPOSALS'] == 3


def test_every_parameter_default_is_valid():
    for spec in PARAMETERS:
        assert validate(spec.name, spec.default) is None, spec.name
    assert validate('device', 'cuda:1') is None
    assert 'device' in validate('device', 'tpu')
    assert validate('queue_size', 0) is not None
    assert validate('continuous', 'yes') is not None


def _worker(grounder, published, capacity=10, **settings):
    return GroundingWorker(grounder, CommandQueue(capacity),
                           lambda job, outcome: published.append((job, outcome)),
                           lambda: NOW, WorkerSettings(**settings))


def _frame(stamp=NOW, image=None):
    image = np.zeros((48, 64, 3), np.uint8) if image is None else image
    return Frame(stamp, NOW, {'stamp': stamp}, lambda: image)


BOXES = [Box(2, 2, 20, 20), Box(30, 10, 20, 30)]


def test_worker_statuses(grounder):
    published = []
    worker = _worker(grounder, published, max_image_age=1.0)

    def run(text, **job):
        return worker.handle(GroundingJob(text, SOURCE_TOPIC, NOW, **job)).result

    assert run('  ').status == Status.INVALID_COMMAND
    assert run('x' * 1001).status == Status.INVALID_COMMAND
    assert run('the box').status == Status.NO_IMAGE
    worker.frames.put(_frame(stamp=NOW - 5 * 10**9))
    stale = run('the box')
    assert stale.status == Status.NO_IMAGE and '5.00 s old' in stale.message
    worker.frames.put(_frame())
    assert run('the box').status == Status.NO_PROPOSALS
    worker.proposals.put(NOW + 10**6, BOXES)  # 1 ms away: within the default skew
    ok = run('the box')
    assert ok.status == Status.OK and len(ok.candidates) == 2
    bad = Frame(NOW, NOW, None, lambda: (_ for _ in ()).throw(ValueError('truncated')))
    assert run('the box', frame=bad).status == Status.BAD_IMAGE
    assert len(published) == 7 and all(job.done for job, _ in published)


def test_worker_reports_depth_size_mismatch(grounder):
    worker = _worker(grounder, [])
    worker.frames.put(_frame())
    worker.proposals.put(NOW, BOXES)
    worker.depth.put(NOW, Frame(NOW, NOW, None, lambda: np.ones((10, 10), np.float32)))
    result = worker.handle(GroundingJob('the box', SOURCE_TOPIC, NOW)).result
    assert result.status == Status.OK and result.position is None
    assert '10x10' in result.message


def test_worker_exception_becomes_error(grounder):
    class Broken:
        def ground(self, *args, **kwargs):
            raise RuntimeError('boom')

    published = []
    worker = _worker(Broken(), published)
    worker.frames.put(_frame())
    result = worker.handle(GroundingJob('the box', SOURCE_TOPIC, NOW, boxes=BOXES)).result
    assert result.status == Status.ERROR and 'boom' in result.message
    assert len(published) == 1


def test_stop_answers_waiting_jobs_dropped(grounder):
    published = []
    worker = _worker(grounder, published, capacity=5)
    jobs = [GroundingJob(f'job {i}', SOURCE_TOPIC, NOW) for i in range(3)]
    for job in jobs:
        assert worker.queue.put(job)
    worker.stop()
    assert [o.result.status for _, o in published] == [Status.DROPPED] * 3
    assert all(job.done for job in jobs)


def test_thread_grounds_queued_jobs_and_continuous_mode(grounder):
    published = []
    worker = _worker(grounder, published, continuous=True, continuous_rate=100.0)
    worker.frames.put(_frame())
    worker.proposals.put(NOW, BOXES)
    worker.start()
    try:
        job = GroundingJob('the box', SOURCE_TOPIC, NOW)
        worker.queue.put(job)
        assert job.wait(60.0).result.status == Status.OK
        second = _frame(stamp=NOW + 1)
        worker.proposals.put(NOW + 1, BOXES)
        worker.frames.put(second)
        worker.notify_frame()
        for _ in range(600):
            if any(o.frame is second for _, o in published):
                break
            threading.Event().wait(0.1)
        regrounded = [(j, o) for j, o in published if o.frame is second]
        assert regrounded and regrounded[0][0].source == SOURCE_CONTINUOUS
        assert regrounded[0][1].result.status == Status.OK
    finally:
        worker.stop()
    assert not worker.running
