"""Depth images and pinhole geometry: depth in a box, and the box centre lifted to 3D.

Conventions:

- Depth in metres is a float32 (H, W) array in which invalid pixels are ``nan``.
- Boxes are in pixels with the top-left corner at (x, y); pixel ``i`` covers ``[i, i + 1)``.
  The pinhole model (ROS ``CameraInfo``) puts the centre of pixel ``i`` at ``u = i``, so
  a box centre ``(x + w/2, y + h/2)`` is the image point ``(x + w/2 - 0.5, y + h/2 - 0.5)``.
- 3D points are in the camera's optical frame (x right, y down, z forward), in metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from reclip_ros.core.types import Box

# Fraction of the box (per side length, centred) whose depth is used by median_box_depth.
DEFAULT_INNER_FRACTION = 0.5
DEPTH_ENCODINGS_MM = ('16UC1', 'mono16')
DEPTH_ENCODINGS_M = ('32FC1',)


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels (ROS ``CameraInfo.k``: fx, fy, cx, cy)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(float(v)) for v in values):
            raise ValueError(f'camera intrinsics must be finite, got {values}')
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f'focal lengths must be positive, got fx={self.fx}, fy={self.fy}')

    @classmethod
    def from_k(cls, k: Sequence[float]) -> CameraIntrinsics:
        """Build from a row-major 3x3 camera matrix (9 numbers, e.g. ``CameraInfo.k``)."""
        values = [float(v) for v in np.asarray(k, dtype=np.float64).reshape(-1)]
        if len(values) != 9:
            raise ValueError(f'a camera matrix has 9 entries, got {len(values)}')
        return cls(fx=values[0], fy=values[4], cx=values[2], cy=values[5])

    def scaled(self, sx: float, sy: float) -> CameraIntrinsics:
        """Intrinsics of the same camera after resizing the image by (sx, sy)."""
        # Pixel centres move as u' = (u + 0.5) * s - 0.5.
        return CameraIntrinsics(self.fx * sx, self.fy * sy,
                                (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5)

    def project(self, point: Sequence[float]) -> Tuple[float, float]:
        """Project a 3D point (optical frame, z > 0) to image coordinates (u, v)."""
        x, y, z = (float(v) for v in point)
        if z <= 0:
            raise ValueError(f'cannot project a point with z <= 0: {point!r}')
        return (self.fx * x / z + self.cx, self.fy * y / z + self.cy)


def depth_to_meters(depth: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a depth image to float32 metres with ``nan`` for invalid pixels.

    Args:
        depth: (H, W) or (H, W, 1) array.
        encoding: '16UC1' / 'mono16' (unsigned millimetres, 0 = invalid) or '32FC1'
            (metres; nan, inf and values <= 0 are invalid).

    Raises:
        ValueError: unknown encoding, or an array that is not a single-channel image.
    """
    array = np.asarray(depth)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(f'a depth image must be HxW (single channel), got shape {array.shape}')
    if encoding in DEPTH_ENCODINGS_MM:
        if array.dtype.kind not in 'fui':
            raise ValueError(f'{encoding} depth must be numeric, got {array.dtype}')
        meters = array.astype(np.float32) / 1000.0
    elif encoding in DEPTH_ENCODINGS_M:
        if array.dtype.kind not in 'fui':
            raise ValueError(f'{encoding} depth must be numeric, got {array.dtype}')
        meters = array.astype(np.float32)
    else:
        known = ', '.join(DEPTH_ENCODINGS_MM + DEPTH_ENCODINGS_M)
        raise ValueError(f'unsupported depth encoding {encoding!r} (supported: {known})')
    meters = np.array(meters, dtype=np.float32, copy=True)
    meters[~np.isfinite(meters) | (meters <= 0)] = np.nan
    return meters


def check_depth_size(depth_m: np.ndarray, width: int, height: int) -> None:
    """Raise ValueError unless *depth_m* is an (height, width) image (registered depth)."""
    shape = np.shape(depth_m)
    if len(shape) != 2 or shape != (height, width):
        got = f'{shape[1]}x{shape[0]}' if len(shape) == 2 else f'shape {shape}'
        raise ValueError(f'depth image ({got}) does not match the colour image '
                         f'({width}x{height}); depth must be registered to the colour camera')


def scale_box_to(box: Box, from_size: Tuple[int, int], to_size: Tuple[int, int]) -> Box:
    """Rescale *box* from an image of ``(width, height)`` *from_size* to *to_size*."""
    fw, fh = from_size
    tw, th = to_size
    if fw <= 0 or fh <= 0 or tw <= 0 or th <= 0:
        raise ValueError(f'image sizes must be positive, got {from_size} and {to_size}')
    sx, sy = tw / fw, th / fh
    return Box(box.x * sx, box.y * sy, box.width * sx, box.height * sy)


def _valid_median(values: np.ndarray) -> float:
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.median(values)) if values.size else math.nan


def _bounds(box: Box, width: int, height: int) -> Optional[Tuple[int, int, int, int]]:
    """Integer pixel bounds of the part of *box* inside the image, or None if empty."""
    x1 = max(int(math.floor(box.x)), 0)
    y1 = max(int(math.floor(box.y)), 0)
    x2 = min(int(math.ceil(box.x2)), width)
    y2 = min(int(math.ceil(box.y2)), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def median_box_depth(depth_m: np.ndarray, box: Box,
                     inner_fraction: float = DEFAULT_INNER_FRACTION) -> float:
    """Median valid depth (metres) of the object in *box*; nan when there is none.

    The median is taken over the central part of the box (*inner_fraction* of its width
    and of its height, 0.5 = the inner half per side, a quarter of the area), where the
    object is more likely than the background that fills a box's corners. When that part
    holds no valid depth, the whole box is used.
    """
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise ValueError(f'depth must be HxW metres, got shape {depth.shape}')
    if not math.isfinite(box.x) or not math.isfinite(box.y) or box.area <= 0:
        return math.nan
    height, width = depth.shape
    full = _bounds(box, width, height)
    if full is None:
        return math.nan
    f = min(max(float(inner_fraction), 0.0), 1.0)
    if f > 0:
        cx, cy = box.center
        inner_box = Box(cx - box.width * f / 2, cy - box.height * f / 2,
                        box.width * f, box.height * f)
        inner = _bounds(inner_box, width, height)
        if inner is not None:
            x1, y1, x2, y2 = inner
            value = _valid_median(depth[y1:y2, x1:x2])
            if math.isfinite(value):
                return value
    x1, y1, x2, y2 = full
    return _valid_median(depth[y1:y2, x1:x2])


def box_depths(depth_m: np.ndarray, boxes: Sequence[Box],
               inner_fraction: float = DEFAULT_INNER_FRACTION) -> np.ndarray:
    """Median depth of every box (see :func:`median_box_depth`), float64, nan where none."""
    return np.array([median_box_depth(depth_m, b, inner_fraction) for b in boxes],
                    dtype=np.float64)


def lift_pixel(u: float, v: float, z: float,
               intrinsics: CameraIntrinsics) -> Tuple[float, float, float]:
    """Back-project image point (u, v) at depth *z* metres to the optical frame."""
    return ((u - intrinsics.cx) * z / intrinsics.fx, (v - intrinsics.cy) * z / intrinsics.fy,
            float(z))


def lift_box_center(box: Box, depth_m: np.ndarray, intrinsics: CameraIntrinsics,
                    center_offset: float = 0.0) -> Optional[Tuple[float, float, float]]:
    """3D position (metres, optical frame) of the object in *box*, or None without depth.

    The depth is :func:`median_box_depth` of the box and the ray goes through the box
    centre, which gives a point on the object's visible surface. With *center_offset* > 0
    the point is moved back along the viewing ray by ``center_offset`` times the object's
    apparent half-width in metres (``0.5 * box.width * z / fx``): the centre of a solid
    object lies behind its visible surface by about its radius, so 1.0 suits spheres and
    upright cylinders seen side-on, and smaller values boxes seen at an angle. 0 returns
    the visible-surface point.
    """
    z = median_box_depth(depth_m, box)
    if not math.isfinite(z):
        return None
    cx, cy = box.center
    point = lift_pixel(cx - 0.5, cy - 0.5, z, intrinsics)
    if center_offset <= 0:
        return point
    distance = math.sqrt(sum(c * c for c in point))
    if distance <= 0:
        return point
    push = center_offset * 0.5 * box.width * z / intrinsics.fx
    scale = (distance + push) / distance
    return (point[0] * scale, point[1] * scale, point[2] * scale)
