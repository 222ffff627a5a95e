"""Probabilistic execution of a parsed expression over candidate boxes (ReCLIP section 2).

For an entity with region-scoring distribution ``p = score_fn(entity.text)``:

1. each relation R to a child entity with distribution ``pi_c`` (computed recursively) gives
   ``new(i) = sum_j R(i, j) pi_c(j)`` and ``pi = normalise(pi * new)`` (``between`` uses two
   children: ``new(i) = sum_jk B(i, j, k) pi_a(j) pi_b(k)``);
2. an ordinal ("the second cup from the left") re-weights ``pi`` by rank, see
   :meth:`SpatialResolver._apply_ordinal`;
3. each superlative gives ``pi'(i) ∝ pi(i) sum_j pi(j) R(i, j)`` ("the leftmost dog" = dog
   probability times the dog mass to its right);
4. the answer is ``score_fn(parsed.text) * pi_root``, renormalised.

Every normalisation is guarded: when a step leaves no probability mass (e.g. "the leftmost
cup" with one box, or a relation that no pair satisfies) the step is skipped and the previous
distribution is kept, so the output is always a finite probability vector.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from reclip_ros.core.parsing import Entity, Ordinal, ParsedExpression, Superlative
from reclip_ros.core.relations import (
    BoxesLike,
    BoxGeometry,
    between_tensor,
    box_geometry,
    middle_matrix,
    order_key,
    relation_matrix,
)

ScoreFn = Callable[[str], np.ndarray]


def normalise(values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Return *values* / sum, or *fallback* when the sum is not a positive finite number."""
    total = float(np.sum(values))
    if not np.isfinite(total) or total <= 0.0:
        return fallback
    return values / total


class _Scores:
    """Calls score_fn at most once per text and checks what it returns."""

    def __init__(self, score_fn: ScoreFn, n: int):
        self.score_fn = score_fn
        self.n = n
        self.cache: Dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        if text not in self.cache:
            raw = self.score_fn(text)
            try:
                scores = np.asarray(raw, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise ValueError(f'score_fn({text!r}) did not return numbers: {exc}') from exc
            if scores.shape != (self.n,):
                raise ValueError(f'score_fn({text!r}) returned {scores.shape[0]} scores for '
                                 f'{self.n} boxes')
            if not np.all(np.isfinite(scores)) or np.any(scores < 0):
                raise ValueError(f'score_fn({text!r}) must return finite probabilities >= 0')
            self.cache[text] = scores
        return self.cache[text]


class _Frame:
    """Boxes, depths and image size of one resolve call, with lazily built matrices."""

    def __init__(self, geom: BoxGeometry, depths: Optional[np.ndarray],
                 image_size: Optional[Tuple[float, float]], near_scale: float,
                 between_width: float):
        self.geom = geom
        self.depths = depths
        self.image_size = image_size
        self.near_scale = near_scale
        self.between_width = between_width
        self._matrices: Dict[str, np.ndarray] = {}
        self._between: Optional[np.ndarray] = None

    def matrix(self, kind: str) -> np.ndarray:
        if kind not in self._matrices:
            self._matrices[kind] = relation_matrix(kind, self.geom, self.depths,
                                                   near_scale=self.near_scale)
        return self._matrices[kind]

    def between(self) -> np.ndarray:
        if self._between is None:
            self._between = between_tensor(self.geom, self.between_width)
        return self._between

    def centre(self, reference: str, pi: np.ndarray) -> Tuple[float, float]:
        """The point "middle" refers to: the image centre or the candidates' mass centre."""
        geom = self.geom
        if reference == 'image':
            if self.image_size is not None:
                return (self.image_size[0] / 2.0, self.image_size[1] / 2.0)
            return ((float(np.min(geom.x1)) + float(np.max(geom.x2))) / 2.0,
                    (float(np.min(geom.y1)) + float(np.max(geom.y2))) / 2.0)
        return (float(np.dot(pi, geom.cx)), float(np.dot(pi, geom.cy)))


class SpatialResolver:
    """Execute parsed expressions over boxes (see the module docstring).

    Args:
        near_scale: distance scale of ``near``/``far`` in units of the mean box diagonal.
        between_width: how far (in segment lengths) a box may sit off the line joining the two
            reference objects and still count as ``between`` them.
        ordinal_min_mass: for ordinals, boxes whose probability is below this fraction of the
            best box's are not counted as instances of the noun.
    """

    def __init__(self, near_scale: float = 1.0, between_width: float = 0.5,
                 ordinal_min_mass: float = 0.2):
        if near_scale <= 0 or between_width <= 0:
            raise ValueError('near_scale and between_width must be > 0')
        if not 0.0 <= ordinal_min_mass <= 1.0:
            raise ValueError('ordinal_min_mass must be in [0, 1]')
        self.near_scale = float(near_scale)
        self.between_width = float(between_width)
        self.ordinal_min_mass = float(ordinal_min_mass)

    def resolve(self, parsed: ParsedExpression, boxes: BoxesLike, score_fn: ScoreFn,
                box_depths: Optional[Sequence[float]] = None,
                image_size: Optional[Tuple[float, float]] = None) -> np.ndarray:
        """Return the probability of each box being the referent (shape (N,), sums to 1).

        Args:
            parsed: the output of :meth:`ExpressionParser.parse`.
            boxes: the N candidate boxes (``Box`` objects or an (N, 4) ``[x, y, w, h]`` array).
            score_fn: ``score_fn(text) -> (N,)`` region-scoring probabilities of *text*.
            box_depths: optional (N,) median depth per box in metres (nan = unknown), which
                makes closer/farther/front/behind compare depth instead of the paper's proxies.
            image_size: optional (width, height) in pixels, for "the middle of the image".

        Without relation/superlative keywords the result is ``score_fn(parsed.text)`` itself.

        Raises:
            ValueError: malformed boxes, depths or image size, or a bad score_fn output.
        """
        geom = box_geometry(boxes)
        n = len(geom)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        scores = _Scores(score_fn, n)
        if not parsed.has_keywords:
            return scores(parsed.text).copy()
        depths = None
        if box_depths is not None:
            depths = np.asarray(box_depths, dtype=np.float64).reshape(-1)
            if depths.shape != (n,):
                raise ValueError(f'box_depths has {depths.shape[0]} values for {n} boxes')
        size = None
        if image_size is not None:
            w, h = (float(v) for v in image_size)
            if not (np.isfinite(w) and np.isfinite(h) and w > 0 and h > 0):
                raise ValueError(f'image_size must be a positive (width, height), got '
                                 f'{image_size!r}')
            size = (w, h)
        frame = _Frame(geom, depths, size, self.near_scale, self.between_width)
        pi_root = self._resolve_entity(parsed.root, frame, scores)
        return normalise(scores(parsed.text) * pi_root, fallback=pi_root)

    def _resolve_entity(self, entity: Entity, frame: _Frame, scores: _Scores) -> np.ndarray:
        """Return the distribution of one entity (relations, ordinal, then superlatives)."""
        n = len(frame.geom)
        uniform = np.full(n, 1.0 / n)
        pi = normalise(scores(entity.text), fallback=uniform)
        for relation in entity.relations:
            children = [self._resolve_entity(c, frame, scores) for c in relation.children]
            if relation.kind == 'between':
                first = children[0]
                second = children[1] if len(children) > 1 else first
                new = np.einsum('ijk,j,k->i', frame.between(), first, second)
            else:
                new = frame.matrix(relation.kind) @ children[0]
            pi = normalise(pi * new, fallback=pi)
        if entity.ordinal is not None:
            pi = self._apply_ordinal(pi, entity.ordinal, frame)
        for superlative in entity.superlatives:
            pi = self._apply_superlative(pi, superlative, frame)
        return pi

    def _apply_superlative(self, pi: np.ndarray, superlative: Superlative,
                          frame: _Frame) -> np.ndarray:
        """``pi'(i) ∝ pi(i) * sum_j pi(j) R(i, j)``; unchanged when that leaves no mass."""
        if superlative.kind == 'middle':
            matrix = middle_matrix(frame.geom, frame.centre(superlative.reference, pi))
        else:
            matrix = frame.matrix(superlative.kind)
        return normalise(pi * (matrix @ pi), fallback=pi)

    def _apply_ordinal(self, pi: np.ndarray, ordinal: Ordinal, frame: _Frame) -> np.ndarray:
        """Re-weight *pi* towards the ``ordinal.rank``-th instance in the order ``ordinal.kind``.

        Rule: each box's membership is ``m(i) = pi(i) / max(pi)`` (0 below
        ``ordinal_min_mass``); boxes are sorted by :func:`order_key`; the count of instances
        before box i is ``c(i) = sum of m over the boxes before it``; the weight is
        ``w(i) = max(0, 1 - 2 |c(i) - (rank - 1)|)`` for members, and ``pi'(i) ∝ pi(i) w(i)``.
        With clear-cut memberships (1 for the noun's boxes, ~0 for others) this picks exactly
        the rank-th box of the noun in that order. When fewer instances exist than the rank
        asks for, ``pi`` is returned unchanged.
        """
        top = float(np.max(pi))
        if top <= 0:
            return pi
        member = pi / top
        member = np.where(member >= self.ordinal_min_mass, member, 0.0)
        reference = None
        if ordinal.kind == 'middle':
            reference = frame.centre('candidates', pi)
        key = order_key(ordinal.kind, frame.geom, frame.depths, reference)
        order = np.argsort(key, kind='stable')
        before = np.empty_like(member)
        before[order] = np.cumsum(member[order]) - member[order]
        weight = np.clip(1.0 - 2.0 * np.abs(before - (ordinal.rank - 1)), 0.0, 1.0)
        weight = np.where(member > 0, weight, 0.0)
        return normalise(pi * weight, fallback=pi)
