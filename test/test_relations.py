"""Relation matrices over boxes: semantics, vectorisation against a brute-force loop, errors."""

import numpy as np
import pytest

from reclip_ros.core.relations import (
    BINARY_RELATIONS,
    box_geometry,
    between_tensor,
    middle_matrix,
    order_key,
    relation_matrix,
)
from reclip_ros.core.types import Box

# Three boxes on a row: small A on the left (high), big B in the middle, small C right (low).
ROW = [Box(0, 0, 10, 10), Box(40, 20, 40, 40), Box(120, 60, 10, 10)]


def test_box_geometry_from_boxes_and_array_agree():
    g1 = box_geometry(ROW)
    g2 = box_geometry(np.array([b.to_list() for b in ROW]))
    np.testing.assert_allclose(g1.cx, g2.cx)
    np.testing.assert_allclose(g1.area, [100, 1600, 100])
    np.testing.assert_allclose(g1.cy, [5, 40, 65])


@pytest.mark.parametrize('bad', [np.zeros((3, 3)), np.array([[0, 0, np.nan, 1]]), ['box']])
def test_box_geometry_rejects_malformed_input(bad):
    with pytest.raises(ValueError):
        box_geometry(bad)


def test_left_right_above_below():
    left = relation_matrix('left', ROW)
    assert left[0, 1] == 1 and left[0, 2] == 1 and left[1, 2] == 1
    assert left[1, 0] == 0 and left[2, 0] == 0
    np.testing.assert_array_equal(relation_matrix('right', ROW), left.T)
    above = relation_matrix('above', ROW)
    assert above[0, 1] == 1 and above[1, 2] == 1 and above[2, 0] == 0
    np.testing.assert_array_equal(relation_matrix('below', ROW), above.T)


def test_bigger_smaller():
    bigger = relation_matrix('bigger', ROW)
    assert bigger[1, 0] == 1 and bigger[1, 2] == 1
    assert bigger[0, 2] == 0 and bigger[2, 0] == 0      # equal areas: neither is bigger
    np.testing.assert_array_equal(relation_matrix('smaller', ROW), bigger.T)


@pytest.mark.parametrize('kind', BINARY_RELATIONS)
def test_every_relation_is_zero_on_the_diagonal_and_in_unit_range(kind):
    boxes = [Box(0, 0, 10, 10), Box(2, 2, 4, 4), Box(30, 5, 8, 20), Box(30, 5, 8, 20)]
    m = relation_matrix(kind, boxes, box_depths=np.array([1.0, 2.0, np.nan, 3.0]))
    assert m.shape == (4, 4)
    np.testing.assert_array_equal(np.diag(m), 0.0)
    assert np.all((m >= 0) & (m <= 1))


def test_inside_is_intersection_over_own_area():
    outer = Box(0, 0, 100, 100)
    inner = Box(10, 10, 20, 20)
    half = Box(90, 0, 20, 10)  # half of it overlaps the outer box
    m = relation_matrix('inside', [outer, inner, half])
    assert m[1, 0] == pytest.approx(1.0)
    assert m[0, 1] == pytest.approx(400 / 10000)
    assert m[2, 0] == pytest.approx(0.5)
    assert m[1, 2] == 0.0


def test_near_decreases_with_distance_relative_to_size_and_far_is_its_complement():
    a = Box(0, 0, 10, 10)
    touching = Box(10, 0, 10, 10)
    distant = Box(100, 0, 10, 10)
    big_distant = Box(100, 0, 200, 200)
    near = relation_matrix('near', [a, touching, distant, big_distant])
    assert near[0, 1] > 0.7
    assert near[0, 2] < 0.01
    assert near[0, 3] > near[0, 2]          # same offset, bigger objects -> relatively nearer
    np.testing.assert_allclose(near, near.T)
    far = relation_matrix('far', [a, touching, distant, big_distant])
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose(far[off], 1.0 - near[off])


def test_near_scale_makes_near_more_lenient():
    boxes = [Box(0, 0, 10, 10), Box(40, 0, 10, 10)]
    assert relation_matrix('near', boxes, near_scale=3.0)[0, 1] > \
        relation_matrix('near', boxes)[0, 1]


def test_depth_relations_use_depth_when_given_and_proxies_otherwise():
    small_low_near = Box(0, 80, 10, 10)     # small, low in the image
    big_high_far = Box(50, 0, 60, 60)       # big, high in the image
    boxes = [small_low_near, big_high_far]
    depth = np.array([0.5, 3.0])
    assert relation_matrix('closer', boxes, depth)[0, 1] == 1
    assert relation_matrix('closer', boxes)[0, 1] == 0          # proxy: bigger
    assert relation_matrix('closer', boxes)[1, 0] == 1
    assert relation_matrix('farther', boxes, depth)[1, 0] == 1
    assert relation_matrix('farther', boxes)[0, 1] == 1         # proxy: smaller
    # front/behind: here depth and the paper's proxy (below/above) agree ...
    assert relation_matrix('front', boxes, depth)[0, 1] == 1
    assert relation_matrix('front', boxes)[0, 1] == 1
    # ... and with the depths swapped only the depth-aware version changes its answer.
    swapped = depth[::-1].copy()
    assert relation_matrix('front', boxes, swapped)[0, 1] == 0
    assert relation_matrix('behind', boxes, swapped)[0, 1] == 1
    assert relation_matrix('behind', boxes)[0, 1] == 0          # proxy: above


def test_pairs_with_unknown_depth_fall_back_to_the_proxy():
    boxes = [Box(0, 0, 10, 10), Box(50, 0, 60, 60), Box(0, 50, 5, 5)]
    depth = np.array([1.0, 2.0, np.nan])
    closer = relation_matrix('closer', boxes, depth)
    proxy = relation_matrix('bigger', boxes)
    assert closer[0, 1] == 1 and proxy[0, 1] == 0      # both depths known: depth wins
    assert closer[0, 2] == proxy[0, 2] and closer[2, 1] == proxy[2, 1]


def test_depth_length_mismatch_and_unknown_relation_raise():
    with pytest.raises(ValueError, match='box_depths'):
        relation_matrix('closer', ROW, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match='unknown relation'):
        relation_matrix('diagonal', ROW)


def _loop_relation(kind, boxes):
    n = len(boxes)
    out = np.zeros((n, n))
    for i, bi in enumerate(boxes):
        for j, bj in enumerate(boxes):
            if i == j:
                continue
            if kind == 'left':
                out[i, j] = float(bi.center[0] < bj.center[0])
            elif kind == 'below':
                out[i, j] = float(bi.center[1] > bj.center[1])
            elif kind == 'inside':
                ix = max(0.0, min(bi.x2, bj.x2) - max(bi.x, bj.x))
                iy = max(0.0, min(bi.y2, bj.y2) - max(bi.y, bj.y))
                out[i, j] = ix * iy / bi.area
    return out


@pytest.mark.parametrize('kind', ['left', 'below', 'inside'])
def test_vectorised_matrices_match_a_pairwise_loop(kind):
    rng = np.random.default_rng(3)
    boxes = [Box(*rng.uniform(0, 200, 2), *rng.uniform(5, 80, 2)) for _ in range(12)]
    np.testing.assert_allclose(relation_matrix(kind, boxes), _loop_relation(kind, boxes))


def test_between_is_high_on_the_segment_and_zero_outside_it():
    left = Box(0, 45, 10, 10)          # centre (5, 50)
    right = Box(90, 45, 10, 10)        # centre (95, 50)
    middle = Box(45, 45, 10, 10)       # on the segment
    off_line = Box(45, 85, 10, 10)     # over the segment but 40 px off the line
    outside = Box(120, 45, 10, 10)     # beyond the right box
    b = between_tensor([left, right, middle, off_line, outside])
    assert b[2, 0, 1] == pytest.approx(1.0)
    assert 0.0 < b[3, 0, 1] < b[2, 0, 1]
    assert b[4, 0, 1] == 0.0
    np.testing.assert_allclose(b, np.transpose(b, (0, 2, 1)))     # symmetric in j, k
    for i in range(5):
        assert b[i, i, :].sum() == 0 and b[i, :, i].sum() == 0 and b[:, i, i].sum() == 0


def test_between_width_widens_the_band():
    boxes = [Box(0, 45, 10, 10), Box(90, 45, 10, 10), Box(45, 85, 10, 10)]
    assert between_tensor(boxes, width=2.0)[2, 0, 1] > between_tensor(boxes)[2, 0, 1]


def test_middle_matrix_prefers_the_box_nearest_the_reference():
    m = middle_matrix(ROW, reference=(60.0, 40.0))
    assert m[1, 0] == 1 and m[1, 2] == 1 and m[0, 1] == 0


@pytest.mark.parametrize('kind, first', [('left', 0), ('right', 2), ('above', 0), ('below', 2),
                                         ('bigger', 1), ('smaller', 0), ('front', 2),
                                         ('behind', 0), ('closer', 1), ('farther', 0)])
def test_order_key_without_depth(kind, first):
    assert int(np.argmin(order_key(kind, ROW))) == first


def test_order_key_uses_depth_only_when_every_box_has_one():
    depth = np.array([0.5, 2.0, 1.0])
    assert int(np.argmin(order_key('closer', ROW, depth))) == 0
    assert int(np.argmin(order_key('behind', ROW, depth))) == 1
    partial = np.array([0.5, np.nan, 1.0])
    assert int(np.argmin(order_key('closer', ROW, partial))) == 1   # proxy: biggest first


def test_order_key_middle_and_unknown():
    assert int(np.argmin(order_key('middle', ROW))) == 1
    assert int(np.argmin(order_key('middle', ROW, reference=(0.0, 0.0)))) == 0
    with pytest.raises(ValueError):
        order_key('inside', ROW)


def test_single_box_matrices_are_zero():
    one = [Box(0, 0, 5, 5)]
    for kind in BINARY_RELATIONS:
        assert relation_matrix(kind, one).tolist() == [[0.0]]
    assert between_tensor(one).shape == (1, 1, 1)
    assert between_tensor(one).sum() == 0


def _random_boxes(n, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 600, size=(n, 2))
    wh = rng.uniform(5, 80, size=(n, 2))
    return [Box(float(x), float(y), float(w), float(h)) for (x, y), (w, h) in zip(xy, wh)]


def test_between_on_index_subsets_is_a_slice_of_the_full_tensor():
    boxes = _random_boxes(9, seed=3)
    full = between_tensor(boxes)
    first, second = [0, 2, 5, 8], [1, 2, 7]
    np.testing.assert_allclose(between_tensor(boxes, first=first, second=second),
                               full[:, first][:, :, second])


def test_between_over_the_top_k_is_exact_for_few_boxes_and_bounded_for_many():
    from reclip_ros.core.relations import between_new, box_geometry
    boxes = _random_boxes(12, seed=4)
    rng = np.random.default_rng(5)
    a, b = rng.dirichlet(np.ones(12)), rng.dirichlet(np.ones(12))
    exact = np.einsum('ijk,j,k->i', between_tensor(boxes), a, b)
    np.testing.assert_allclose(between_new(box_geometry(boxes), a, b, top_k=16), exact)
    # 2000 boxes: the dense tensor would be 2000**3 doubles (64 GB); this is 2000 x 16 x 16
    many = _random_boxes(2000, seed=6)
    p = rng.dirichlet(np.ones(2000))
    new = between_new(box_geometry(many), p, p, top_k=16)
    assert new.shape == (2000,) and np.all(np.isfinite(new)) and new.max() > 0
