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

The size prior (when the caller uses one) acts only on the root entity's own text and on
the full expression, as in the paper's code: the caller passes it as ``root_score_fn``, and
children are scored by ``score_fn``.

The relation mode of the parse (``parsed.mode``) decides what each relation kind means over
boxes (:func:`reclip_ros.core.relation_kinds.box_relation`). In ``paper`` mode the
superlatives of an entity are skipped when fewer than two boxes have probability left, as
the code's threshold test does (``m1 < inf * m2`` is false when ``m2 == 0``).

Every normalisation is guarded in ``extended`` mode: a step that leaves no probability mass
is skipped. In ``paper`` mode such a step makes the code's distribution NaN and its argmax
the first box; the resolver then returns the uniform distribution (the answer is undefined),
whose first-maximum tie-break picks that same first box.

Every normalisation is guarded: when a step leaves no probability mass (e.g. "the leftmost
cup" with one box, or a relation that no pair satisfies) the step is skipped and the previous
distribution is kept, so the output is always a finite probability vector.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from reclip_ros.core.language.expression_tree import Entity, Ordinal, ParsedExpression, Superlative
from reclip_ros.core.relation_kinds import PAPER, box_relation
from reclip_ros.core.relations import (
    BoxesLike,
    BoxGeometry,
    between_new,
    box_geometry,
    middle_matrix,
    order_key,
    relation_matrix,
)

ScoreFn = Callable[[str], np.ndarray]


class _NoMass(Exception):
    """A paper-mode step left no probability mass (the code's distribution becomes NaN)."""


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
    """Boxes, depths and image size of one resolve call, with lazily built matrices.

    ``instance_scores`` scores an entity's text in the view that decides which boxes are
    instances of its noun (None: the entity's own distribution alone decides).
    """

    def __init__(self, geom: BoxGeometry, depths: Optional[np.ndarray],
                 image_size: Optional[Tuple[float, float]], near_scale: float,
                 between_width: float, mode: str,
                 instance_scores: Optional[_Scores] = None):
        self.mode = mode
        self.instance_scores = instance_scores
        self.geom = geom
        self.depths = depths
        self.image_size = image_size
        self.near_scale = near_scale
        self.between_width = between_width
        self._matrices: Dict[str, np.ndarray] = {}

    def normalise(self, values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Normalise *values*; without mass, *fallback* (extended) or :class:`_NoMass` (paper)."""
        total = float(np.sum(values))
        if self.mode == PAPER and not (np.isfinite(total) and total > 0.0):
            raise _NoMass()
        return normalise(values, fallback)

    def matrix(self, kind: str) -> np.ndarray:
        """The box relation that relation kind *kind* means in this frame's mode."""
        box = box_relation(kind, self.mode)
        if box not in self._matrices:
            self._matrices[box] = relation_matrix(box, self.geom, self.depths,
                                                  near_scale=self.near_scale)
        return self._matrices[box]

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
        instance_min_mass: for ordinals and superlatives, boxes whose probability is below
            this fraction of the best box's are never counted as instances of the noun.
        instance_min_gap: for ordinals and superlatives, the smallest drop in
            log-probability that separates the noun's instances from the other boxes
            (ln 2: half the probability).
        superlative_flat: superlatives (extended mode) weigh the noun's instances equally
            (True) or by their probability (False).
        between_top_k: "between" sums over the this many most probable boxes of each of its
            two arguments (exact up to this many boxes; memory N x k**2, never N**3).
        instance_view_weight: for ordinals and superlatives (extended mode), with an
            ``instance_score_fn`` given to :meth:`resolve`: the instances of the noun are cut
            from ``pi * q ** instance_view_weight``, ``q`` that function's scores of the
            entity's text (the crop isolation: the object itself, not its context); 0 = ``pi``
            alone.
    """

    def __init__(self, near_scale: float = 1.0, between_width: float = 0.5,
                 instance_min_mass: float = 0.1,
                 instance_min_gap: float = float(np.log(2.0)),
                 between_top_k: int = 16, superlative_flat: bool = True,
                 instance_view_weight: float = 2.0):
        if near_scale <= 0 or between_width <= 0:
            raise ValueError('near_scale and between_width must be > 0')
        if not 0.0 <= instance_view_weight < float('inf'):
            raise ValueError('instance_view_weight must be a finite number >= 0')
        if not 0.0 <= instance_min_mass <= 1.0:
            raise ValueError('instance_min_mass must be in [0, 1]')
        if not instance_min_gap >= 0.0:
            raise ValueError('instance_min_gap must be >= 0')
        self.near_scale = float(near_scale)
        self.between_width = float(between_width)
        self.instance_min_mass = float(instance_min_mass)
        self.instance_min_gap = float(instance_min_gap)
        self.superlative_flat = bool(superlative_flat)
        self.between_top_k = max(int(between_top_k), 1)
        self.instance_view_weight = float(instance_view_weight)

    def resolve(self, parsed: ParsedExpression, boxes: BoxesLike, score_fn: ScoreFn,
                box_depths: Optional[Sequence[float]] = None,
                image_size: Optional[Tuple[float, float]] = None,
                root_score_fn: Optional[ScoreFn] = None,
                instance_score_fn: Optional[ScoreFn] = None) -> np.ndarray:
        """Return the probability of each box being the referent (shape (N,), sums to 1).

        Args:
            parsed: the output of :meth:`ExpressionParser.parse`.
            boxes: the N candidate boxes (``Box`` objects or an (N, 4) ``[x, y, w, h]`` array).
            score_fn: ``score_fn(text) -> (N,)`` region-scoring probabilities of *text*.
            box_depths: optional (N,) median depth per box in metres (nan = unknown), which
                makes closer/farther/front/behind compare depth instead of the paper's proxies.
            image_size: optional (width, height) in pixels, for "the middle of the image".
            root_score_fn: scores the root entity's text and the full expression (e.g. with
                the size prior); None: *score_fn*.
            instance_score_fn: scores an entity's text in the view that shows the object
                itself (the crop isolation), used with ``instance_view_weight`` to decide
                which boxes are instances of the noun (ordinals, superlatives, size
                adjectives; extended mode); None: the entity's distribution alone decides.

        Without relation/superlative keywords the result is ``score_fn(parsed.text)`` itself.

        Raises:
            ValueError: malformed boxes, depths or image size, or a bad score_fn output.
        """
        geom = box_geometry(boxes)
        n = len(geom)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        scores = _Scores(score_fn, n)
        root_scores = scores if root_score_fn is None else _Scores(root_score_fn, n)
        if not parsed.has_keywords:
            return root_scores(parsed.text).copy()
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
        instance_scores = None
        if instance_score_fn is not None and self.instance_view_weight > 0:
            instance_scores = _Scores(instance_score_fn, n)
        frame = _Frame(geom, depths, size, self.near_scale, self.between_width, parsed.mode,
                       instance_scores)
        try:
            pi_root = self._resolve_entity(parsed.root, frame, scores, root_scores)
            return frame.normalise(root_scores(parsed.text) * pi_root, fallback=pi_root)
        except _NoMass:
            return np.full(n, 1.0 / n)

    def _resolve_entity(self, entity: Entity, frame: _Frame, scores: _Scores,
                        own_scores: Optional[_Scores] = None) -> np.ndarray:
        """Return the distribution of one entity (relations, ordinal, then superlatives).

        *own_scores* scores the entity's own text (the root's carries the size prior);
        children are always scored by *scores*.
        """
        n = len(frame.geom)
        uniform = np.full(n, 1.0 / n)
        pi = normalise((own_scores or scores)(entity.text), fallback=uniform)
        for relation in entity.relations:
            children = [self._resolve_entity(c, frame, scores) for c in relation.children]
            if relation.kind == 'between':
                first = children[0]
                second = children[1] if len(children) > 1 else first
                new = between_new(frame.geom, first, second, frame.between_width,
                                  self.between_top_k)
            else:
                new = frame.matrix(relation.kind) @ children[0]
            pi = frame.normalise(pi * new, fallback=pi)
        if entity.ordinal is not None:
            pi = self._apply_ordinal(pi, entity.ordinal, frame,
                                     self._instance_view(pi, entity, frame))
        if frame.mode == PAPER and np.count_nonzero(pi > 0) < 2:
            return pi
        superlatives = entity.superlatives
        if frame.mode != PAPER and superlatives:
            members = self._instances(self._instance_view(pi, entity, frame), min_count=2)
            if members is None:
                # one plausible instance: the superlative has nothing to order
                superlatives = ()
            else:
                pi = self._restrict(pi, members)
        for superlative in superlatives:
            pi = self._apply_superlative(pi, superlative, frame)
        return pi

    def _instance_view(self, pi: np.ndarray, entity: Entity, frame: _Frame) -> np.ndarray:
        """The distribution the instances of the entity's noun are cut from.

        ``pi * q ** instance_view_weight`` with ``q`` the entity's text scored in the
        instance view (the crop isolation), renormalised; *pi* itself without that view, in
        paper mode, or when the product leaves no mass. The kind of an object is a property
        of the object, which the crop shows; a small object's blur isolation keeps its
        colour and apparent size but mostly loses its kind (docs/language.md).
        """
        if frame.instance_scores is None or frame.mode == PAPER:
            return pi
        q = frame.instance_scores(entity.text)
        return normalise(pi * q ** self.instance_view_weight, fallback=pi)

    def _apply_superlative(self, pi: np.ndarray, superlative: Superlative,
                          frame: _Frame) -> np.ndarray:
        """``pi'(i) ∝ pi(i) * sum_j pi(j) R(i, j)``; unchanged when that leaves no mass."""
        if box_relation(superlative.kind, frame.mode) == 'middle':
            matrix = middle_matrix(frame.geom, frame.centre(superlative.reference, pi))
        else:
            matrix = frame.matrix(superlative.kind)
        return frame.normalise(pi * (matrix @ pi), fallback=pi)

    def _instances(self, pi: np.ndarray, min_count: int) -> Optional[np.ndarray]:
        """The boxes that plausibly are instances of the entity's noun, most probable first.

        Only boxes with at least ``instance_min_mass`` of the best box's probability are
        eligible. Sorted by probability, the instances are the ``k`` most probable boxes,
        ``k >= min_count``, cut at the largest drop in log-probability between consecutive
        boxes (the drop from the last eligible box to the next one counts too); when that
        drop is less than ``instance_min_gap`` the scores are about even (every box is a
        cup) and every eligible box counts. None when fewer than *min_count* boxes
        are eligible.
        """
        n = len(pi)
        top = float(np.max(pi)) if n else 0.0
        if top <= 0 or min_count > n:
            return None
        by_prob = np.argsort(-pi, kind='stable')
        logp = np.log(np.maximum(pi[by_prob], 1e-300))
        eligible = int(np.sum(pi >= self.instance_min_mass * top))
        if eligible < min_count:
            return None
        gaps = logp[:-1] - logp[1:]  # gaps[k - 1]: drop after the k most probable boxes
        # candidate cuts: after the min_count-th box up to after the last eligible one
        cuts = [(gaps[k - 1], k) for k in range(min_count, min(eligible, n - 1) + 1)]
        best_gap, count = max(cuts, default=(0.0, eligible))
        if best_gap < self.instance_min_gap:
            count = eligible
        return by_prob[:count]

    def _restrict(self, pi: np.ndarray, members: np.ndarray) -> np.ndarray:
        """Superlatives in extended mode order only the plausible instances of the noun.

        The soft product alone lets a confident non-instance win ("the rightmost cube":
        a sphere right of every cube with a fifth of the cube mass). The instances
        (:meth:`_instances`, at least two) keep their probability, every other box gets 0;
        with ``superlative_flat`` they share it equally, so that the order alone decides.
        """
        weight = np.zeros(len(pi))
        weight[members] = 1.0
        if self.superlative_flat:
            return weight / float(len(members))
        return normalise(pi * weight, fallback=pi)

    def _apply_ordinal(self, pi: np.ndarray, ordinal: Ordinal, frame: _Frame,
                       view: Optional[np.ndarray] = None) -> np.ndarray:
        """Pick the ``ordinal.rank``-th instance of the noun in the order ``ordinal.kind``.

        Rule: the instances of the noun are those of :meth:`_instances` (at least the rank
        many) over *view* (:meth:`_instance_view`; default *pi*). The instances are sorted
        by :func:`order_key` and the rank-th one is chosen:
        ``pi'`` is ``pi`` restricted to it. With fewer candidate instances than the rank
        asks for, ``pi`` is returned unchanged. A probability *ratio* such as
        ``pi / max(pi)`` is not used as a membership because region scores are relative:
        several true instances share the mass unevenly.
        """
        n = len(pi)
        view = pi if view is None else view
        members = self._instances(view, ordinal.rank) if ordinal.rank <= n else None
        if members is None:
            return pi
        reference = None
        if ordinal.kind == 'middle':
            reference = frame.centre('candidates', pi)
        key = order_key(box_relation(ordinal.kind, frame.mode), frame.geom, frame.depths,
                        reference)
        ranked = members[np.argsort(key[members], kind='stable')]
        chosen = ranked[ordinal.rank - 1]
        weight = np.zeros(n)
        weight[chosen] = 1.0
        return normalise(pi * weight, fallback=pi)
