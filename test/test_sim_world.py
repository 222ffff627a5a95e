"""The simulated tabletop: reproducibility, boxes vs segmentation, intrinsics, depth."""

import numpy as np
import pytest


from reclip_ros.sim.catalog import CATALOG, COLOURS, SIZES, kind_extents
from reclip_ros.sim.world import TabletopScene

SEEDS = (0, 1, 7, 123)


@pytest.fixture(scope='module')
def frames():
    out = {}
    for seed in SEEDS:
        with TabletopScene(seed) as scene:
            out[seed] = (scene.render(), list(scene.specs))
    return out


def test_same_seed_same_scene(frames):
    for seed in SEEDS[:2]:
        with TabletopScene(seed) as again:
            frame = again.render()
        first = frames[seed][0]
        assert [o.to_dict() for o in frame.objects] == [o.to_dict() for o in first.objects]
        assert np.array_equal(frame.rgb, first.rgb)
        assert np.array_equal(frame.segmentation, first.segmentation)


def test_different_seeds_differ(frames):
    boxes = {seed: tuple(tuple(o.box.to_list()) for o in frames[seed][0].objects)
             for seed in SEEDS}
    assert len(set(boxes.values())) == len(SEEDS)


def test_frame_arrays(frames):
    for frame, _ in frames.values():
        assert frame.rgb.shape == (480, 640, 3) and frame.rgb.dtype == np.uint8
        assert frame.depth.shape == (480, 640) and frame.depth.dtype == np.float32
        assert frame.segmentation.shape == (480, 640)
        finite = frame.depth[np.isfinite(frame.depth)]
        assert finite.size > 0.9 * frame.depth.size
        assert finite.min() > 0.05 and finite.max() < 5.0


def test_object_count_and_attributes(frames):
    names = {k.name for k in CATALOG}
    for frame, specs in frames.values():
        assert 3 <= len(specs) <= 8
        assert 1 <= len(frame.objects) <= len(specs)
        for obj in frame.objects:
            assert obj.name in names and obj.colour in COLOURS and obj.size in SIZES


def test_boxes_match_segmentation_and_lie_in_image(frames):
    for frame, _ in frames.values():
        h, w = frame.segmentation.shape
        for obj in frame.objects:
            b = obj.box
            assert 0 <= b.x < b.x2 <= w and 0 <= b.y < b.y2 <= h
            ys, xs = np.nonzero(frame.segmentation == obj.body_id)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == b.to_xyxy()
            assert obj.pixels == len(xs)


def test_centres_project_into_their_boxes(frames):
    for frame, _ in frames.values():
        k = frame.intrinsics
        for obj in frame.objects:
            x, y, z = obj.center
            assert z > 0.1
            u, v = k.fx * x / z + k.cx, k.fy * y / z + k.cy
            cx, cy = obj.box.center
            assert abs(u - cx) < 0.3 * obj.box.width + 2
            assert abs(v - cy) < 0.3 * obj.box.height + 2


def test_depth_at_box_centre_is_near_the_object(frames):
    # the registered depth is the optical-axis distance: the surface at the centre pixel
    # lies within about one object size in front of / behind the 3D centre
    for frame, _ in frames.values():
        for obj in frame.objects:
            cx, cy = (int(c) for c in obj.box.center)
            if frame.segmentation[cy, cx] != obj.body_id:
                continue
            assert abs(float(frame.depth[cy, cx]) - obj.center[2]) < 0.06


def test_big_is_bigger_than_small():
    for kind in CATALOG:
        assert kind_extents(kind, 'big').max() > 1.5 * kind_extents(kind, 'small').max()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match='n_objects'):
        TabletopScene(0, n_objects=20)
    with pytest.raises(ValueError, match='image size'):
        TabletopScene(0, width=8, height=8)


def test_explicit_object_count_and_close():
    scene = TabletopScene(5, width=320, height=240, n_objects=4)
    frame = scene.render()
    assert frame.rgb.shape == (240, 320, 3)
    assert len(scene.specs) <= 4
    scene.close()
    scene.close()
