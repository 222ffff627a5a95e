"""Grounder pipeline tests: statuses, probabilities, caching, size prior, depth and 3D.

Most tests inject a small deterministic colour scorer through the scorer interface
(``encode_frame`` / ``logits`` / ``text_encoding_ms_total``) and use the real spaCy parser
and resolver; the last tests load tiny real CLIP checkpoints through ``from_config``.
"""

from dataclasses import dataclass

import numpy as np
import pytest

from reclip_ros.core.geometry import CameraIntrinsics
from reclip_ros.core.grounder import (Grounder, GrounderConfig, GroundingOptions,
                                      softmax_with_size_prior)
from reclip_ros.core.language.parsing import ExpressionParser
from reclip_ros.core.types import Box, Status

COLOURS = {'red': (220, 30, 30), 'green': (30, 200, 30), 'blue': (30, 30, 220)}


@dataclass
class _Frame:
    boxes: list
    means: np.ndarray
    isolation_ms: float = 1.0
    image_encoding_ms: float = 2.0
    from_cache: bool = False


class ColourScorer:
    """Deterministic scorer: logit = 10 * similarity of a box's mean colour to named colours."""

    def __init__(self):
        self.encoded_frames = 0
        self.text_calls = []
        self.text_encoding_ms_total = 0.0
        self._cache = {}
        self.models = []

    def encode_frame(self, image, boxes, frame_key=None):
        key = (frame_key if frame_key is not None else image.tobytes()[:4096],
               tuple(b.to_xyxy() for b in boxes))
        if key in self._cache:
            frame = self._cache[key]
            return _Frame(frame.boxes, frame.means, from_cache=True)
        self.encoded_frames += 1
        means = []
        for b in boxes:
            x1, y1, x2, y2 = b.pixel_bounds(image.shape[1], image.shape[0])
            means.append(image[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0))
        frame = _Frame(list(boxes), np.array(means))
        self._cache[key] = frame
        return frame

    def logits(self, frame, text, methods=None):
        self.text_calls.append((text, tuple(methods or ())))
        self.text_encoding_ms_total += 0.5
        out = np.zeros(len(frame.boxes))
        for word, rgb in COLOURS.items():
            if word in text.lower():
                dist = np.linalg.norm(frame.means - np.array(rgb), axis=1)
                out += 10.0 * (1.0 - dist / 400.0)
        return out


class FailingScorer(ColourScorer):
    def logits(self, frame, text, methods=None):
        raise RuntimeError('boom')


@pytest.fixture(scope='module')
def parser():
    return ExpressionParser('en_core_web_sm')


def scene():
    """A 200x400 grey image with red, blue, red squares left to right, and a tiny green one."""
    image = np.full((200, 400, 3), 128, np.uint8)
    boxes = [Box(20, 60, 80, 80), Box(160, 60, 80, 80), Box(300, 60, 80, 80), Box(5, 5, 6, 6)]
    for box, colour in zip(boxes, ['red', 'blue', 'red', 'green']):
        x1, y1, x2, y2 = box.pixel_bounds(400, 200)
        image[y1:y2, x1:x2] = COLOURS[colour]
    return image, boxes


def make(parser, scorer=None, **kw):
    return Grounder(scorer or ColourScorer(), parser, **kw)


def test_attribute_expression_picks_the_matching_box(parser):
    image, boxes = scene()
    result = make(parser).ground(image, 'the blue square', boxes=boxes)
    assert result.status == Status.OK, result.message
    assert result.box == boxes[1]
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)
    assert abs(sum(scores) - 1.0) < 1e-6
    assert result.confidence == pytest.approx(scores[0])
    assert 0.0 <= result.confidence <= 1.0
    assert len(result.candidates) == len(boxes)


def test_relation_disambiguates_between_two_red_squares(parser):
    image, boxes = scene()
    g = make(parser)
    left = g.ground(image, 'the red square left of the blue square', boxes=boxes)
    right = g.ground(image, 'the red square to the right of the blue square', boxes=boxes)
    assert left.status == right.status == Status.OK
    assert left.box == boxes[0]
    assert right.box == boxes[2]
    assert 'left' in left.parse.lower()


def test_no_relations_option_cannot_tell_the_red_squares_apart(parser):
    image, boxes = scene()
    result = make(parser).ground(image, 'the red square left of the blue square', boxes=boxes,
                                 options=GroundingOptions(use_relations=False))
    top2 = sorted(c.score for c in result.candidates)[-2:]
    assert top2[0] == pytest.approx(top2[1], rel=1e-6)


@pytest.mark.parametrize('expression,why', [
    ('', 'empty'), ('   \t\n', 'empty'), ('x' * 1001, 'limit'), (None, 'text'),
])
def test_invalid_expressions(parser, expression, why):
    image, boxes = scene()
    result = make(parser).ground(image, expression, boxes=boxes)
    assert result.status == Status.INVALID_COMMAND
    assert why in result.message
    assert result.box is None and result.candidates == ()


@pytest.mark.parametrize('image', [
    np.zeros((10,), np.uint8), np.zeros((20, 20, 2), np.uint8), 'not an image',
    np.zeros((1, 1, 3), np.uint8),
])
def test_bad_images(parser, image):
    result = make(parser).ground(image, 'the red square', boxes=[[0, 0, 1, 1]])
    assert result.status == Status.BAD_IMAGE
    assert result.message


def test_mono_and_rgba_images_are_accepted(parser):
    image, boxes = scene()
    g = make(parser)
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert g.ground(rgba, 'the blue square', boxes=boxes).box == boxes[1]
    assert g.ground(image[:, :, 0], 'the blue square', boxes=boxes).status == Status.OK


def test_zero_proposals_is_a_status_not_an_exception(parser):
    image, _ = scene()
    g = make(parser)
    empty = g.ground(image, 'the red square', boxes=[])
    assert empty.status == Status.NO_PROPOSALS and 'empty' in empty.message
    no_detector = g.ground(image, 'the red square')
    assert no_detector.status == Status.NO_PROPOSALS and 'detector' in no_detector.message
    outside = g.ground(image, 'the red square', boxes=[[1000, 1000, 10, 10]])
    assert outside.status == Status.NO_PROPOSALS and 'outside' in outside.message
    malformed = g.ground(image, 'the red square', boxes=[[1, 2, 3]])
    assert malformed.status == Status.NO_PROPOSALS and '4 numbers' in malformed.message


def test_boxes_partly_outside_are_clipped_and_reported(parser):
    image, boxes = scene()
    result = make(parser).ground(image, 'the blue square',
                                 boxes=boxes + [[-50, -50, 60, 60], [900, 0, 5, 5]])
    assert result.status == Status.OK
    assert all(c.box.x >= 0 and c.box.y >= 0 for c in result.candidates)
    assert len(result.candidates) == len(boxes) + 1
    assert '1 proposal boxes outside' in result.message


@pytest.mark.parametrize('expression', ['please', 'um please', 'could you', 'pick it up',
                                        'bring me'])
def test_command_without_object_is_invalid(parser, expression):
    image, boxes = scene()
    result = make(parser).ground(image, expression, boxes=boxes)
    assert result.status == Status.INVALID_COMMAND, result.message
    assert 'no object to ground' in result.message and repr(expression) in result.message
    assert result.box is None and not result.candidates


@pytest.mark.parametrize('expression', ['lower left', 'the red one', 'left', 'that one',
                                        'the second from the left'])
def test_expressions_without_a_noun_that_place_an_object_are_grounded(parser, expression):
    image, boxes = scene()
    result = make(parser).ground(image, expression, boxes=boxes)
    assert result.status == Status.OK, result.message
    assert abs(sum(c.score for c in result.candidates) - 1) < 1e-6


def test_scorer_failure_becomes_error_status(parser):
    image, boxes = scene()
    result = make(parser, FailingScorer()).ground(image, 'the red square', boxes=boxes)
    assert result.status == Status.ERROR
    assert 'boom' in result.message


def test_second_expression_reuses_the_frame_embeddings(parser):
    image, boxes = scene()
    scorer = ColourScorer()
    g = make(parser, scorer)
    first = g.ground(image, 'the red square', boxes=boxes, frame_key=1)
    second = g.ground(image, 'the blue square left of the red square', boxes=boxes,
                      frame_key=1)
    assert scorer.encoded_frames == 1
    assert first.timings.image_encoding > 0
    assert second.timings.image_encoding == 0 and second.timings.isolation == 0
    assert second.timings.text_encoding > 0
    g.ground(image, 'the red square', boxes=boxes, frame_key=2)
    assert scorer.encoded_frames == 2


def test_timings_have_every_stage(parser):
    image, boxes = scene()
    t = make(parser).ground(image, 'the red square', boxes=boxes).timings.as_dict()
    assert set(t) == {'proposals', 'isolation', 'image_encoding', 'text_encoding', 'resolve',
                      'total'}
    assert all(v >= 0 for v in t.values())
    assert t['total'] >= t['proposals']


def test_isolation_methods_are_passed_to_the_scorer(parser):
    image, boxes = scene()
    scorer = ColourScorer()
    make(parser, scorer).ground(image, 'the red square', boxes=boxes,
                                options=GroundingOptions(methods=('crop',)))
    assert scorer.text_calls and all(m == ('crop',) for _, m in scorer.text_calls)


@pytest.mark.parametrize('methods, crop_view', [(('crop', 'blur'), True), (('crop',), True),
                                                (('blur',), False)])
def test_instances_of_the_noun_are_scored_in_the_crop_view(parser, methods, crop_view):
    # an ordinal asks which boxes are red squares: the entity's text is scored by the crop
    # isolation alone (the instance view) whenever the crop isolation is on
    image, boxes = scene()
    scorer = ColourScorer()
    result = make(parser, scorer).ground(image, 'the second red square from the left',
                                         boxes=boxes, options=GroundingOptions(methods=methods))
    assert result.status == Status.OK and result.box == boxes[2]
    assert (('the red square', ('crop',)) in scorer.text_calls) == crop_view
    assert ('the red square', methods) in scorer.text_calls


def test_size_prior_zeroes_small_boxes():
    logits = np.array([5.0, 1.0, 0.0])
    areas = np.array([10.0, 500.0, 600.0])
    p = softmax_with_size_prior(logits, areas, 1000.0, 0.05)
    assert p[0] == 0.0 and p.sum() == pytest.approx(1.0)
    assert p[1] > p[2]
    # every box under the threshold: the prior is ignored, not an empty distribution
    q = softmax_with_size_prior(logits, areas, 1e9, 0.05)
    assert q.argmax() == 0 and q.sum() == pytest.approx(1.0)


def test_size_prior_through_the_grounder(parser):
    image, boxes = scene()
    g = make(parser, size_prior=0.01)
    result = g.ground(image, 'the green square', boxes=boxes)
    tiny = [c for c in result.candidates if c.box == boxes[3]][0]
    assert tiny.score == 0.0
    off = g.ground(image, 'the green square', boxes=boxes,
                   options=GroundingOptions(size_prior=0.0))
    assert off.box == boxes[3]


def test_depth_gives_a_position_and_mismatch_is_reported(parser):
    image, boxes = scene()
    depth = np.full(image.shape[:2], 2.0, np.float32)
    intr = CameraIntrinsics(fx=200.0, fy=200.0, cx=200.0, cy=100.0)
    g = make(parser)
    result = g.ground(image, 'the blue square', boxes=boxes, depth_m=depth, intrinsics=intr)
    assert result.status == Status.OK and result.position is not None
    x, y, z = result.position
    assert z == pytest.approx(2.0, abs=1e-3)
    assert x == pytest.approx(0.0, abs=0.02) and y == pytest.approx(0.0, abs=0.02)
    bad = g.ground(image, 'the blue square', boxes=boxes, depth_m=depth[:50],
                   intrinsics=intr)
    assert bad.status == Status.OK and bad.position is None
    assert 'depth image ignored' in bad.message


def test_from_config_with_tiny_clip_ensemble(tiny_clip_dir, tiny_clip_dir_b):
    cfg = GrounderConfig(models=(tiny_clip_dir, tiny_clip_dir_b), device='cpu',
                         spacy_model='en_core_web_sm')
    g = Grounder.from_config(cfg)
    try:
        assert g.device == 'cpu'
        assert len(g.model_names) == 2
        image, boxes = scene()
        r1 = g.ground(image, 'the red cube left of the blue ball', boxes=boxes, frame_key='a')
        r2 = g.ground(image, 'the blue ball', boxes=boxes, frame_key='a')
        for r in (r1, r2):
            assert r.status == Status.OK, r.message
            assert abs(sum(c.score for c in r.candidates) - 1.0) < 1e-5
        assert r2.timings.image_encoding == 0.0
    finally:
        g.close()


def test_from_config_missing_model_raises_clear_error(tmp_path):
    from reclip_ros.core.types import ModelLoadError
    with pytest.raises(ModelLoadError) as info:
        Grounder.from_config(GrounderConfig(models=(str(tmp_path / 'nope'),), device='cpu'))
    assert 'nope' in str(info.value)


def test_offload_and_restore_on_cpu_are_no_ops_and_grounding_still_works(tiny_clip_dir):
    g = Grounder.from_config(GrounderConfig(models=(tiny_clip_dir,), device='cpu'))
    try:
        image, boxes = scene()
        first = g.ground(image, 'the red square', boxes=boxes, frame_key='k')
        assert g.offload() is False and g.restore() is False
        again = g.ground(image, 'the red square', boxes=boxes, frame_key='k')
        assert [c.score for c in again.candidates] == pytest.approx(
            [c.score for c in first.candidates])
    finally:
        g.close()
