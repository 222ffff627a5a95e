"""Precompute: text-independent work done before the command arrives (real tiny models)."""

import threading

import numpy as np
import pytest

from reclip_ros.runtime.jobs import SOURCE_SERVICE, SOURCE_TOPIC, CommandQueue, GroundingJob
from reclip_ros.core.grounder import Grounder, GrounderConfig
from reclip_ros.core.types import Box, Status
from reclip_ros.runtime.frame_buffer import Frame
from reclip_ros.runtime.worker import GroundingWorker, WorkerSettings

NOW = 1_000 * 10**9
BOXES = [Box(2, 2, 20, 20), Box(30, 10, 20, 30), Box(10, 25, 30, 20), Box(40, 30, 20, 15)]


def _image(seed):
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture()
def small_batches(tiny_clip_dir):
    """A grounder whose scorer runs 2 images per forward pass (4 boxes x 2 methods: 4)."""
    g = Grounder.from_config(GrounderConfig(models=(tiny_clip_dir,), detector='',
                                            batch_size=2))
    yield g
    g.close()


def _count_forward_passes(grounder):
    model = grounder.scorer.models[0]
    calls = []
    original = model.encode_images

    def counted(batch):
        calls.append(len(batch))
        return original(batch)

    model.encode_images = counted
    return calls


def test_a_precomputed_frame_costs_the_command_only_the_text_path(small_batches):
    g = small_batches
    image = _image(1)
    reference = g.ground(image, 'the red box on the left', boxes=BOXES, frame_key='plain')
    calls = _count_forward_passes(g)
    assert g.precompute(image, BOXES, frame_key='early')
    assert len(calls) == 4 and sum(calls) == 8
    hits = g.scorer.frame_cache_hits
    result = g.ground(image, 'the red box on the left', boxes=BOXES, frame_key='early')
    assert len(calls) == 4, 'the command ran no image forward pass'
    assert g.scorer.frame_cache_hits > hits
    assert result.status == Status.OK and result.message == reference.message
    assert result.box == reference.box
    np.testing.assert_allclose([c.score for c in result.candidates],
                               [c.score for c in reference.candidates], rtol=1e-6)
    assert result.timings.image_encoding == 0.0 and result.timings.isolation == 0.0


def test_precompute_yields_between_batches_and_caches_nothing(small_batches):
    g = small_batches
    calls = _count_forward_passes(g)
    asked = []

    def command_arrives_after_first_batch():
        asked.append(1)
        return len(asked) > 1

    encoded = g.scorer.frames_encoded
    assert not g.precompute(_image(2), BOXES, frame_key='interrupted',
                            interrupt=command_arrives_after_first_batch)
    assert calls == [2], 'exactly one batch ran before the pass gave up'
    assert g.scorer.frames_encoded == encoded
    g.ground(_image(2), 'the box', boxes=BOXES, frame_key='interrupted')
    assert len(calls) == 1 + 4, 'nothing was cached: the command encoded the frame itself'


def test_precompute_never_raises(small_batches):
    assert not small_batches.precompute(np.zeros((48, 64, 7), np.uint8), BOXES, frame_key='bad')
    assert not small_batches.precompute(_image(3), [], frame_key='none')


def test_detector_boxes_are_computed_once_per_frame(tiny_clip_dir, tiny_owlv2_dir):
    g = Grounder.from_config(GrounderConfig(models=(tiny_clip_dir,), detector=tiny_owlv2_dir,
                                            detector_score_threshold=0.0))
    try:
        proposed = []
        original = g.proposals.propose
        g.proposals.propose = lambda image: proposed.append(1) or original(image)
        image = _image(4)
        assert g.precompute(image, None, frame_key='f1')
        first = g.ground(image, 'the box', frame_key='f1')
        second = g.ground(image, 'the other box', frame_key='f1')
        assert first.status == Status.OK and second.status == Status.OK
        assert len(proposed) == 1
        g.ground(image, 'the box', frame_key='f2')
        assert len(proposed) == 2
    finally:
        g.close()


def _worker(grounder, published, **settings):
    return GroundingWorker(grounder, CommandQueue(50),
                           lambda job, outcome: published.append((job, outcome)),
                           lambda: NOW, WorkerSettings(**settings))


def _frame(stamp, image):
    return Frame(stamp, NOW, {'stamp': stamp}, lambda: image)


def _wait_for(condition, timeout=60.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if condition():
            return True
        done.wait(0.05)
    return condition()


def test_worker_pass_yields_to_a_command_needing_other_work(grounder):
    worker = _worker(grounder, [], precompute=True, precompute_rate=100.0)
    worker.feed_image(_frame(NOW, _image(5)))
    worker.feed_proposals(NOW, BOXES)
    # a service request with its own boxes needs other work: the pass gives up
    worker.queue.put(GroundingJob('the box', SOURCE_SERVICE, NOW, boxes=BOXES[:2]))
    assert not worker.precompute()
    assert worker.precompute_stats.interrupted == 1 and worker.precompute_stats.passes == 0
    worker.queue.drain()


def test_worker_pass_goes_on_for_a_command_on_the_same_frame(grounder):
    """A topic command arriving during the pass grounds on that frame: the pass is its work."""
    worker = _worker(grounder, [], precompute=True, precompute_rate=100.0)
    worker.feed_image(_frame(NOW, _image(7)))
    worker.feed_proposals(NOW, BOXES)
    worker.queue.put(GroundingJob('the box', SOURCE_TOPIC, NOW))
    assert worker.precompute()
    assert worker.precompute_stats.passes == 1
    worker.feed_image(_frame(NOW + 1, _image(8)))  # a newer frame arrives: the old work is moot
    worker.feed_proposals(NOW + 1, BOXES)
    interrupt = worker._yield_to_commands(('stale key',))
    assert interrupt()
    worker.queue.drain()


def test_worker_precomputes_the_newest_frame_and_commands_hit_it(grounder):
    published = []
    worker = _worker(grounder, published, precompute=True, precompute_rate=100.0)
    worker.start()
    try:
        frame = _frame(NOW, _image(6))
        worker.feed_image(frame)
        assert _wait_for(lambda: worker.precompute_stats.passes == 0)
        worker.feed_proposals(NOW, BOXES)  # a pass needs the frame's proposals
        assert _wait_for(lambda: worker.precompute_stats.passes >= 1)
        hits = grounder.scorer.frame_cache_hits
        job = GroundingJob('the box on the right', SOURCE_TOPIC, NOW)
        worker.submit(job)
        outcome = job.wait(60.0)
        assert outcome.result.status == Status.OK and outcome.frame is frame
        assert grounder.scorer.frame_cache_hits == hits + 1
        values = worker.status_values(NOW)
        assert values['precompute_passes'] >= 1 and values['precompute_cpu_s'] > 0
        assert 'precompute_rate_hz' in values
    finally:
        worker.stop()


def test_every_command_gets_exactly_one_result_with_precompute_on(grounder):
    published = []
    worker = _worker(grounder, published, precompute=True, precompute_rate=100.0)
    worker.start()
    jobs = []
    try:
        for k in range(20):
            stamp = NOW + k * 10**6
            worker.feed_image(_frame(stamp, _image(100 + k)))
            worker.feed_proposals(stamp, BOXES)
            job = GroundingJob(f'the box number {k}', SOURCE_TOPIC, NOW)
            jobs.append(job)
            worker.submit(job)
        assert _wait_for(lambda: all(j.done for j in jobs))
    finally:
        worker.stop()
    answered = [job for job, _ in published]
    assert len(answered) == 20 and {id(j) for j in answered} == {id(j) for j in jobs}
    assert all(o.result.status == Status.OK for _, o in published)
