"""Annotated result images: boxes at the right place, statuses written, input untouched."""

import numpy as np
import pytest

from reclip_ros.core.drawing import (CANDIDATE_COLORS, CHOSEN_COLOR, FAILURE_COLOR,
                                     draw_result)
from reclip_ros.core.types import Box, Candidate, GroundingResult, Status

GREY = 90


def _image(height=240, width=320):
    return np.full((height, width, 3), GREY, dtype=np.uint8)


def _ok_result(position=None):
    chosen = Box(100, 120, 80, 60)
    others = [Box(20, 150, 40, 40), Box(220, 140, 60, 50), Box(250, 30, 40, 30)]
    cands = (Candidate(chosen, 0.7), Candidate(others[0], 0.2), Candidate(others[1], 0.06),
             Candidate(others[2], 0.04))
    return GroundingResult(expression='the red mug', status=Status.OK, box=chosen,
                           confidence=0.7, candidates=cands, position=position), chosen, others


def _is_color(pixel, color):
    return np.abs(pixel.astype(int) - np.array(color)).max() <= 2


def test_chosen_box_edges_are_drawn_and_input_untouched():
    image = _image()
    before = image.copy()
    result, chosen, _ = _ok_result()
    out = draw_result(image, result)
    assert np.array_equal(image, before)
    assert out.shape == image.shape and out.dtype == np.uint8
    x1, y1, x2, y2 = (int(v) for v in chosen.to_xyxy())
    # Left, right and bottom edges (the top edge carries the label).
    assert _is_color(out[y1 + 30, x1], CHOSEN_COLOR)
    assert _is_color(out[y1 + 30, x2 - 1], CHOSEN_COLOR)
    assert _is_color(out[y2 - 1, x1 + 40], CHOSEN_COLOR)
    # The inside of the box stays as it was.
    assert np.array_equal(out[y1 + 30, x1 + 40], before[y1 + 30, x1 + 40])


def test_runner_up_candidates_drawn_thin_up_to_top_k():
    result, _, others = _ok_result()
    out = draw_result(_image(), result, top_k=2)
    first, second, third = others
    assert _is_color(out[int(first.y + 20), int(first.x)], CANDIDATE_COLORS[0])
    assert _is_color(out[int(second.y + 25), int(second.x)], CANDIDATE_COLORS[1])
    # Third runner-up is beyond top_k: its left edge is untouched.
    assert out[int(third.y + 15), int(third.x)].tolist() == [GREY] * 3
    # The thin line is thinner than the chosen one.
    row = int(first.y + 20)
    drawn = [x for x in range(int(first.x) - 3, int(first.x) + 10)
             if _is_color(out[row, x], CANDIDATE_COLORS[0])]
    chosen_row = [x for x in range(97, 115) if _is_color(out[150, x], CHOSEN_COLOR)]
    assert 0 < len(drawn) < len(chosen_row)


def test_top_k_zero_draws_only_the_chosen_box():
    result, _, others = _ok_result()
    out = draw_result(_image(), result, top_k=0)
    for b in others:
        assert out[int(b.y + b.height / 2), int(b.x)].tolist() == [GREY] * 3


def test_failure_writes_the_status_and_draws_no_box():
    result = GroundingResult.failure('the unicorn', Status.NO_PROPOSALS,
                                     'the detector found no objects')
    out = draw_result(_image(), result)
    banner = out[:30]
    assert any(_is_color(p, FAILURE_COLOR) for p in banner.reshape(-1, 3))
    assert (banner == 255).all(axis=2).any()  # white text on the banner
    assert not any(_is_color(p, CHOSEN_COLOR) for p in out.reshape(-1, 3))
    assert out[100:].tolist() == _image()[100:].tolist()


def test_odd_inputs_do_not_crash():
    result, _, _ = _ok_result(position=(0.1, -0.2, 1.5))
    long = GroundingResult(expression='la tasse rouge à gauche ' * 20, status=Status.OK,
                           box=Box(0, 0, 5, 5), confidence=1.0,
                           candidates=(Candidate(Box(0, 0, 5, 5), 1.0),))
    assert draw_result(np.full((240, 320), 50, np.uint8), result).shape == (240, 320, 3)
    assert draw_result(_image(12, 10), long).shape == (12, 10, 3)
    assert draw_result(_image(), long).shape == (240, 320, 3)
    with pytest.raises(ValueError):
        draw_result(np.zeros((4, 4, 2), np.uint8), result)
