"""Spatial relations over candidate boxes (ReCLIP section 2, plus this project's additions).

Every binary relation is an (N, N) matrix ``R[i, j]`` in [0, 1] that says how much box *i*
stands in the relation to box *j* ("i is left of j"). All matrices are computed with numpy
broadcasting, never with Python loops over pairs, and are 0 on the diagonal: an object is
never in a relation to itself.

Paper relations (hard, 0/1 unless noted), on box centres ``(cx, cy)`` in image pixels
(y grows downwards):

- ``left``: cx_i < cx_j; ``right``: cx_i > cx_j;
- ``above``: cy_i < cy_j (higher in the image); ``below``: cy_i > cy_j;
- ``bigger`` / ``smaller``: area_i > area_j / area_i < area_j;
- ``inside`` (soft): area(i intersect j) / area(i); 0 on the diagonal. ``within`` is the
  same with 1 on the diagonal, as the paper's code computes it (used in paper mode).

Additions (beyond the paper):

- ``near`` (soft): ``exp(-r**2 / 2)`` with r the centre distance divided by the mean of the two
  box diagonals; two equal boxes side by side score about 0.78, three box widths apart
  about 0.1. ``far`` = 1 - ``near``.
- depth-aware ``closer`` / ``farther`` / ``front`` / ``behind``: when both boxes have a finite
  depth (median depth in the box, metres), ``closer`` and ``front`` are depth_i < depth_j,
  ``farther`` and ``behind`` depth_i > depth_j. Pairs without depth use the paper's proxies:
  closer -> bigger, farther -> smaller, front -> below, behind -> above.
- physical size ``bigger_3d`` / ``smaller_3d``: when both boxes have a finite depth, the
  objects' extents ``sqrt(area) * depth`` are compared (the focal length, the same for
  every box of a frame, cancels: a far big cup can look smaller than a near small one);
  pairs without depth compare box areas, as ``bigger`` / ``smaller`` do.
- ``between`` (ternary, soft): see :func:`between_tensor`.
- ``middle`` (superlative only): closeness of the box centre to a reference point, see
  :func:`middle_matrix`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from reclip_ros.core.types import Box

#: Relations between two boxes that :func:`relation_matrix` computes.
BINARY_RELATIONS = ('left', 'right', 'above', 'below', 'bigger', 'smaller', 'inside',
                    'near', 'far', 'closer', 'farther', 'front', 'behind', 'bigger_3d',
                    'smaller_3d')
#: The paper's code's ``inside``, which relates a box to itself (paper mode only).
PAPER_ONLY_RELATIONS = ('within',)
#: Superlative kinds: each is applied with the binary matrix of the same name, except
#: ``middle`` which uses :func:`middle_matrix`.
SUPERLATIVE_KINDS = ('left', 'right', 'above', 'below', 'bigger', 'smaller', 'closer',
                     'farther', 'front', 'behind', 'middle', 'bigger_3d', 'smaller_3d')
#: The paper's proxies for the depth relations, used for pairs without depth.
DEPTH_PROXIES = {'closer': 'bigger', 'farther': 'smaller', 'front': 'below', 'behind': 'above'}
#: Physical size relations and the box-area relation used for pairs without depth.
SIZE_3D = {'bigger_3d': 'bigger', 'smaller_3d': 'smaller'}

BoxesLike = Union[Sequence[Box], np.ndarray]


@dataclass(frozen=True)
class BoxGeometry:
    """Per-box geometry as arrays of shape (N,): corners, centres, sizes, areas."""

    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray

    @property
    def cx(self) -> np.ndarray:
        """Centre x."""
        return (self.x1 + self.x2) / 2.0

    @property
    def cy(self) -> np.ndarray:
        """Centre y (grows downwards)."""
        return (self.y1 + self.y2) / 2.0

    @property
    def width(self) -> np.ndarray:
        """Box widths (>= 0)."""
        return np.maximum(self.x2 - self.x1, 0.0)

    @property
    def height(self) -> np.ndarray:
        """Box heights (>= 0)."""
        return np.maximum(self.y2 - self.y1, 0.0)

    @property
    def area(self) -> np.ndarray:
        """Box areas in square pixels."""
        return self.width * self.height

    @property
    def diagonal(self) -> np.ndarray:
        """Length of the box diagonals in pixels."""
        return np.hypot(self.width, self.height)

    def __len__(self) -> int:
        return int(self.x1.shape[0])


def box_geometry(boxes: BoxesLike) -> BoxGeometry:
    """Convert boxes to arrays.

    Args:
        boxes: a sequence of :class:`Box`, or an array of shape (N, 4) holding
            ``[x, y, width, height]`` rows (the layout of ``Box.to_list``).

    Raises:
        ValueError: when the input is not N boxes of 4 finite numbers.
    """
    if isinstance(boxes, np.ndarray):
        arr = boxes.astype(np.float64, copy=False)
    else:
        rows = []
        for b in boxes:
            if not isinstance(b, Box):
                raise ValueError(f'expected Box objects, got {type(b).__name__}')
            rows.append((b.x, b.y, b.width, b.height))
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f'boxes must have shape (N, 4) [x, y, width, height], got {arr.shape}')
    if not np.all(np.isfinite(arr)):
        raise ValueError('boxes contain non-finite values')
    x, y, w, h = arr.T
    return BoxGeometry(x1=x, y1=y, x2=x + w, y2=y + h)


def _zero_diagonal(matrix: np.ndarray) -> np.ndarray:
    np.fill_diagonal(matrix, 0.0)
    return matrix


def _compare(values: np.ndarray, op) -> np.ndarray:
    return op(values[:, None], values[None, :]).astype(np.float64)


def inside_matrix(geom: BoxGeometry) -> np.ndarray:
    """``R[i, j]`` = area(i intersect j) / area(i) (0 for an empty box i and on the diagonal)."""
    ix = np.clip(np.minimum(geom.x2[:, None], geom.x2[None, :])
                 - np.maximum(geom.x1[:, None], geom.x1[None, :]), 0.0, None)
    iy = np.clip(np.minimum(geom.y2[:, None], geom.y2[None, :])
                 - np.maximum(geom.y1[:, None], geom.y1[None, :]), 0.0, None)
    area = geom.area[:, None]
    with np.errstate(divide='ignore', invalid='ignore'):
        ratio = np.where(area > 0, ix * iy / np.where(area > 0, area, 1.0), 0.0)
    return _zero_diagonal(ratio)


def near_matrix(geom: BoxGeometry, scale: float = 1.0) -> np.ndarray:
    """Soft nearness ``exp(-r**2 / 2)``, r = centre distance / (scale * mean diagonal)."""
    dist = np.hypot(geom.cx[:, None] - geom.cx[None, :], geom.cy[:, None] - geom.cy[None, :])
    size = scale * 0.5 * (geom.diagonal[:, None] + geom.diagonal[None, :])
    size = np.maximum(size, 1e-6)
    return _zero_diagonal(np.exp(-0.5 * (dist / size) ** 2))


def _depth_or_proxy(kind: str, geom: BoxGeometry,
                    box_depths: Optional[np.ndarray]) -> np.ndarray:
    proxy = relation_matrix(DEPTH_PROXIES[kind], geom)
    if box_depths is None:
        return proxy
    depth = np.asarray(box_depths, dtype=np.float64).reshape(-1)
    if depth.shape[0] != len(geom):
        raise ValueError(f'box_depths has {depth.shape[0]} values for {len(geom)} boxes')
    finite = np.isfinite(depth)
    both = finite[:, None] & finite[None, :]
    safe = np.where(finite, depth, 0.0)
    if kind in ('closer', 'front'):
        by_depth = _compare(safe, np.less)
    else:
        by_depth = _compare(safe, np.greater)
    return _zero_diagonal(np.where(both, by_depth, proxy))


def physical_extent(geom: BoxGeometry, box_depths: Optional[np.ndarray]) -> np.ndarray:
    """``sqrt(area) * depth`` per box; nan where the depth is unknown.

    That is the object's extent in metres times the focal length in pixels, which is the
    same for every box of a frame.
    """
    if box_depths is None:
        return np.full(len(geom), np.nan)
    depth = np.asarray(box_depths, dtype=np.float64).reshape(-1)
    if depth.shape[0] != len(geom):
        raise ValueError(f'box_depths has {depth.shape[0]} values for {len(geom)} boxes')
    return np.sqrt(geom.area) * np.where(np.isfinite(depth) & (depth > 0), depth, np.nan)


def _size_3d(kind: str, geom: BoxGeometry, box_depths: Optional[np.ndarray]) -> np.ndarray:
    proxy = relation_matrix(SIZE_3D[kind], geom)
    extent = physical_extent(geom, box_depths)
    known = np.isfinite(extent)
    both = known[:, None] & known[None, :]
    safe = np.where(known, extent, 0.0)
    by_size = _compare(safe, np.greater if kind == 'bigger_3d' else np.less)
    return _zero_diagonal(np.where(both, by_size, proxy))


def relation_matrix(kind: str, boxes: Union[BoxesLike, BoxGeometry],
                    box_depths: Optional[np.ndarray] = None,
                    near_scale: float = 1.0) -> np.ndarray:
    """Return the (N, N) matrix ``R[i, j]`` of a binary relation (see the module docstring).

    Args:
        kind: one of :data:`BINARY_RELATIONS` or :data:`PAPER_ONLY_RELATIONS`.
        boxes: the candidate boxes (or their :class:`BoxGeometry`).
        box_depths: optional (N,) median depth per box in metres, nan where unknown; used by
            ``closer``, ``farther``, ``front`` and ``behind`` for pairs where both are finite.
        near_scale: multiplies the distance scale of ``near`` / ``far`` (larger = more lenient).

    Raises:
        ValueError: for an unknown kind or malformed boxes/depths.
    """
    geom = boxes if isinstance(boxes, BoxGeometry) else box_geometry(boxes)
    if kind == 'left':
        return _compare(geom.cx, np.less)
    if kind == 'right':
        return _compare(geom.cx, np.greater)
    if kind == 'above':
        return _compare(geom.cy, np.less)
    if kind == 'below':
        return _compare(geom.cy, np.greater)
    if kind == 'bigger':
        return _compare(geom.area, np.greater)
    if kind == 'smaller':
        return _compare(geom.area, np.less)
    if kind == 'inside':
        return inside_matrix(geom)
    if kind == 'within':
        matrix = inside_matrix(geom)
        np.fill_diagonal(matrix, np.where(geom.area > 0, 1.0, 0.0))
        return matrix
    if kind == 'near':
        return near_matrix(geom, near_scale)
    if kind == 'far':
        return _zero_diagonal(1.0 - near_matrix(geom, near_scale))
    if kind in DEPTH_PROXIES:
        return _depth_or_proxy(kind, geom, box_depths)
    if kind in SIZE_3D:
        return _size_3d(kind, geom, box_depths)
    known = ', '.join(BINARY_RELATIONS + PAPER_ONLY_RELATIONS)
    raise ValueError(f'unknown relation {kind!r}; known: {known}')


def between_tensor(boxes: Union[BoxesLike, BoxGeometry], width: float = 0.5,
                   first: Optional[Sequence[int]] = None,
                   second: Optional[Sequence[int]] = None) -> np.ndarray:
    """Return ``B[i, j, k]``: how much box i lies between boxes j and k (soft, symmetric in j, k).

    The centre of i is projected on the segment from the centre of j to the centre of k:
    ``B = 0`` unless the projection falls strictly inside the segment; inside, ``B =
    exp(-(d / (width * L))**2)`` with d the distance of i's centre from the segment line and
    L the segment length. ``B`` is 0 whenever two of i, j, k are the same box or j and k
    share a centre.

    *first* and *second* restrict j and k to those box indices (the result then has shape
    (N, len(first), len(second))), so memory grows with N, not N**3.
    """
    geom = boxes if isinstance(boxes, BoxGeometry) else box_geometry(boxes)
    n = len(geom)
    js = np.arange(n) if first is None else np.asarray(first, dtype=np.int64)
    ks = np.arange(n) if second is None else np.asarray(second, dtype=np.int64)
    c = np.stack([geom.cx, geom.cy], axis=1)                   # (N, 2)
    seg = c[None, ks, :] - c[js, None, :]                      # seg[j, k] = c_k - c_j
    length2 = np.sum(seg ** 2, axis=-1)                        # (J, K)
    rel = c[:, None, :] - c[None, js, :]                       # rel[i, j] = c_i - c_j
    # t[i, j, k] = (c_i - c_j) . (c_k - c_j) / |c_k - c_j|^2
    dot = np.einsum('ijd,jkd->ijk', rel, seg)
    safe_len2 = np.where(length2 > 0, length2, 1.0)
    t = dot / safe_len2[None, :, :]
    cross = rel[:, :, None, 0] * seg[None, :, :, 1] - rel[:, :, None, 1] * seg[None, :, :, 0]
    length = np.sqrt(safe_len2)
    perp = np.abs(cross) / length[None, :, :]
    scale = np.maximum(width * length, 1e-6)[None, :, :]
    out = np.where((t > 0) & (t < 1) & (length2 > 0)[None, :, :],
                   np.exp(-(perp / scale) ** 2), 0.0)
    idx = np.arange(n)
    out *= (idx[:, None] != js[None, :])[:, :, None]           # i == j
    out *= (idx[:, None] != ks[None, :])[:, None, :]           # i == k
    out *= (js[:, None] != ks[None, :])[None, :, :]            # j == k
    return out


def between_new(geom: BoxGeometry, first: np.ndarray, second: np.ndarray,
                width: float = 0.5, top_k: int = 16) -> np.ndarray:
    """``new(i) = sum_jk B(i, j, k) first(j) second(k)`` over the top-k boxes of each argument.

    j and k range over the *top_k* most probable boxes of *first* and *second* (all of them
    when N <= top_k, where the result is exact); memory is N x top_k**2 instead of N**3.
    """
    def top(p: np.ndarray) -> np.ndarray:
        order = np.argsort(-p, kind='stable')[:top_k]
        return np.sort(order[p[order] > 0])

    a, b = top(first), top(second)
    if a.size == 0 or b.size == 0:
        return np.zeros(len(geom))
    tensor = between_tensor(geom, width, a, b)
    return np.einsum('ijk,j,k->i', tensor, first[a], second[b])


def middle_matrix(boxes: Union[BoxesLike, BoxGeometry],
                  reference: Tuple[float, float]) -> np.ndarray:
    """``R[i, j]`` = 1 when box i's centre is strictly closer to *reference* (x, y) than j's."""
    geom = boxes if isinstance(boxes, BoxGeometry) else box_geometry(boxes)
    dist = np.hypot(geom.cx - reference[0], geom.cy - reference[1])
    return _compare(dist, np.less)


def order_key(kind: str, boxes: Union[BoxesLike, BoxGeometry],
              box_depths: Optional[np.ndarray] = None,
              reference: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """Return one number per box that sorts boxes first-to-last in the direction *kind*.

    ``left`` sorts left to right, ``right`` right to left, ``above`` top to bottom,
    ``below`` bottom to top, ``bigger`` largest first, ``smaller`` smallest first,
    ``bigger_3d`` / ``smaller_3d`` likewise by physical extent when every box has a depth,
    ``closer``/``front`` nearest first and ``farther``/``behind`` farthest first (by depth when
    every box has a finite depth, else by the paper's proxies), ``middle`` closest to
    *reference* first. Used for ordinals ("the second cup from the left").
    """
    geom = boxes if isinstance(boxes, BoxGeometry) else box_geometry(boxes)
    if kind in DEPTH_PROXIES:
        depth = None if box_depths is None else np.asarray(box_depths, dtype=np.float64)
        if depth is not None and depth.shape == (len(geom),) and np.all(np.isfinite(depth)):
            return depth if kind in ('closer', 'front') else -depth
        kind = DEPTH_PROXIES[kind]
    if kind in SIZE_3D:
        extent = physical_extent(geom, box_depths)
        if np.all(np.isfinite(extent)):
            return -extent if kind == 'bigger_3d' else extent
        kind = SIZE_3D[kind]
    keys = {
        'left': lambda: geom.cx,
        'right': lambda: -geom.cx,
        'above': lambda: geom.cy,
        'below': lambda: -geom.cy,
        'bigger': lambda: -geom.area,
        'smaller': lambda: geom.area,
    }
    if kind in keys:
        return np.asarray(keys[kind](), dtype=np.float64)
    if kind == 'middle':
        ref = reference if reference is not None else (float(np.mean(geom.cx)),
                                                       float(np.mean(geom.cy)))
        return np.hypot(geom.cx - ref[0], geom.cy - ref[1])
    raise ValueError(f'no order for {kind!r}; known: {", ".join(SUPERLATIVE_KINDS)}')
