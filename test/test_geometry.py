"""Depth conversion, depth inside boxes and pinhole lifting on synthetic depth images."""

import math

import numpy as np
import pytest

from reclip_ros.core.geometry import (CameraIntrinsics, box_depths, check_depth_size,
                                      depth_to_meters, lift_box_center, lift_pixel,
                                      median_box_depth, scale_box_to)
from reclip_ros.core.types import Box


def test_16uc1_millimetres_to_metres_with_zero_invalid():
    raw = np.array([[0, 1000], [1500, 65535]], dtype=np.uint16)
    m = depth_to_meters(raw, '16UC1')
    assert m.dtype == np.float32
    assert math.isnan(m[0, 0])
    assert m[0, 1] == pytest.approx(1.0)
    assert m[1, 0] == pytest.approx(1.5)
    assert m[1, 1] == pytest.approx(65.535)


def test_32fc1_metres_with_nan_inf_zero_negative_invalid():
    raw = np.array([[np.nan, np.inf, 0.0], [-1.0, 0.75, 2.0]], dtype=np.float32)
    m = depth_to_meters(raw, '32FC1')
    assert np.isnan(m[0]).all()
    assert math.isnan(m[1, 0])
    assert m[1, 1] == pytest.approx(0.75)
    assert m[1, 2] == pytest.approx(2.0)
    assert not np.shares_memory(m, raw)


def test_depth_to_meters_accepts_single_channel_3d_and_rejects_bad_input():
    assert depth_to_meters(np.full((3, 4, 1), 500, np.uint16), '16UC1').shape == (3, 4)
    with pytest.raises(ValueError, match='unsupported depth encoding'):
        depth_to_meters(np.zeros((2, 2), np.uint8), 'rgb8')
    with pytest.raises(ValueError, match='single channel'):
        depth_to_meters(np.zeros((2, 2, 3), np.uint16), '16UC1')


def _scene():
    """Background at 3 m, an object at 1 m in rows 20..39, columns 40..79, some holes."""
    depth = np.full((60, 120), 3.0, dtype=np.float32)
    depth[20:40, 40:80] = 1.0
    depth[22:24, 50:60] = np.nan
    return depth


def test_median_box_depth_prefers_the_centre_of_the_box():
    depth = _scene()
    # A loose box around the object: more background than object pixels in the box, but the
    # inner half is all object.
    loose = Box(30, 12, 60, 36)
    whole = depth[12:48, 30:90]
    assert np.nanmedian(whole) == pytest.approx(3.0)
    assert median_box_depth(depth, loose) == pytest.approx(1.0)
    # Using the whole box (inner fraction 1) gives the background.
    assert median_box_depth(depth, loose, inner_fraction=1.0) == pytest.approx(3.0)


def test_median_box_depth_falls_back_to_the_whole_box_and_nan():
    depth = _scene()
    depth[25:35, 50:70] = np.nan  # the centre of the object box has no depth
    box = Box(40, 20, 40, 20)
    assert median_box_depth(depth, box) == pytest.approx(1.0)
    empty = np.full_like(depth, np.nan)
    assert math.isnan(median_box_depth(empty, box))
    assert math.isnan(median_box_depth(depth, Box(500, 500, 10, 10)))  # outside the image


def test_box_depths_vector():
    depth = _scene()
    out = box_depths(depth, [Box(40, 20, 40, 20), Box(0, 0, 20, 10), Box(900, 0, 5, 5)])
    assert out.shape == (3,)
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(3.0)
    assert math.isnan(out[2])


def test_lift_box_center_pinhole_round_trip():
    k = CameraIntrinsics(fx=100.0, fy=110.0, cx=59.5, cy=29.5)
    depth = _scene()
    box = Box(40, 20, 40, 20)  # centre pixel coordinates (59.5, 29.5) = principal point
    x, y, z = lift_box_center(box, depth, k)
    assert z == pytest.approx(1.0)
    assert x == pytest.approx(0.0, abs=1e-6)
    assert y == pytest.approx(0.0, abs=1e-6)
    # An off-centre box: projecting the lifted point lands on the box centre.
    depth2 = np.full((60, 120), 2.0, dtype=np.float32)
    box2 = Box(90, 40, 10, 8)
    point = lift_box_center(box2, depth2, k)
    assert point[2] == pytest.approx(2.0)
    assert point[0] > 0 and point[1] > 0
    u, v = k.project(point)
    assert u == pytest.approx(box2.center[0] - 0.5)
    assert v == pytest.approx(box2.center[1] - 0.5)


def test_lift_box_center_none_without_depth():
    k = CameraIntrinsics(100, 100, 60, 30)
    assert lift_box_center(Box(0, 0, 10, 10), np.full((60, 120), np.nan, np.float32), k) is None


def test_lift_pixel_formula():
    k = CameraIntrinsics(fx=500, fy=400, cx=320, cy=240)
    assert lift_pixel(420, 140, 2.0, k) == pytest.approx((0.4, -0.5, 2.0))


def test_intrinsics_from_k_validation_and_scaling():
    k = CameraIntrinsics.from_k([500, 0, 320, 0, 400, 240, 0, 0, 1])
    assert (k.fx, k.fy, k.cx, k.cy) == (500, 400, 320, 240)
    with pytest.raises(ValueError):
        CameraIntrinsics.from_k([1, 2, 3])
    with pytest.raises(ValueError, match='positive'):
        CameraIntrinsics(0, 1, 0, 0)
    half = k.scaled(0.5, 0.5)
    assert half.fx == pytest.approx(250)
    # The same ray through a pixel centre before and after scaling.
    u, v = 100.0, 50.0
    p = lift_pixel(u, v, 1.0, k)
    p_half = lift_pixel((u + 0.5) * 0.5 - 0.5, (v + 0.5) * 0.5 - 0.5, 1.0, half)
    assert p_half == pytest.approx(p)


def test_depth_size_mismatch_raises_clear_error():
    check_depth_size(np.zeros((60, 120)), 120, 60)
    with pytest.raises(ValueError, match=r'depth image \(160x120\).*colour image \(120x60\)'):
        check_depth_size(np.zeros((120, 160)), 120, 60)


def test_scale_box_to():
    b = scale_box_to(Box(10, 20, 30, 40), (100, 200), (50, 400))
    assert b.to_list() == pytest.approx([5, 40, 15, 80])
    with pytest.raises(ValueError):
        scale_box_to(Box(0, 0, 1, 1), (0, 10), (10, 10))


def test_center_offset_moves_the_point_back_along_the_viewing_ray():
    """A sphere of radius 0.05 m at 1 m: the surface point is 5 cm in front of its centre."""
    from reclip_ros.core.geometry import CameraIntrinsics, lift_box_center
    from reclip_ros.core.types import Box
    intr = CameraIntrinsics(fx=500.0, fy=500.0, cx=320.0, cy=240.0)
    depth = np.full((480, 640), 1.0, np.float32)
    # 0.1 m wide at 1 m -> 50 px; box centred off-axis so the ray is oblique
    box = Box(400.5, 200.5, 50, 50)
    surface = lift_box_center(box, depth, intr)
    centre = lift_box_center(box, depth, intr, center_offset=1.0)
    assert surface[2] == pytest.approx(1.0)
    moved = np.subtract(centre, surface)
    assert np.linalg.norm(moved) == pytest.approx(0.05, rel=1e-6)
    # along the ray: parallel to the surface point's direction
    direction = np.asarray(surface) / np.linalg.norm(surface)
    assert np.dot(moved, direction) == pytest.approx(0.05, rel=1e-6)
    assert lift_box_center(box, depth, intr, center_offset=0.0) == surface
