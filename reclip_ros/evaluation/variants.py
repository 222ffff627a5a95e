"""The evaluation vocabulary: the variants, the correctness rule and their names, defined once.

``reclip eval refcoco``, ``reclip eval jsonl``, ``reclip eval sim`` and the demo all take
their variants and their notion of "correct" from here, so a name means the same thing in
every report:

- ``full``: ReCLIP: crop + blur region scoring and the relation resolver, no size prior, in
  the run's relation mode (``--relations``, default ``extended``);
- ``paper``: the same, always in ``paper`` relation mode (the authors' public code);
- ``no_relations``: crop + blur region scoring of the whole expression only (the paper's
  "no relations" rows);
- ``crop_only`` / ``blur_only``: region scoring with one isolation and no relations (the
  paper's isolation ablation, to compare with ``no_relations``);
- ``full_crop_only`` / ``full_blur_only``: ``full`` with one isolation (relations on), to
  see what each isolation adds to the whole method;
- ``full_size_prior``: ``full`` plus the size prior (boxes of at most ``size_prior`` of the
  image area get probability 0, at the root and for the full expression).

A prediction is correct when its box has IoU > 0.5 with **any** of the expression's gold
boxes, as the reference code scores it (``main.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from reclip_ros.core.relation_kinds import DEFAULT_RELATION_MODE, PAPER, check_mode
from reclip_ros.core.types import Box

#: A prediction is correct when IoU(prediction, gold) > this, for some gold box.
IOU_THRESHOLD = 0.5
#: The paper's size prior (fraction of the image area), used by ``full_size_prior``.
DEFAULT_SIZE_PRIOR = 0.05

VARIANT_NAMES = ('full', 'paper', 'no_relations', 'crop_only', 'blur_only', 'full_size_prior',
                 'full_crop_only', 'full_blur_only')
#: What ``reclip eval refcoco`` / ``jsonl`` run without ``--variants``: the paper's rows.
DEFAULT_VARIANTS = VARIANT_NAMES[:6]
#: What ``reclip eval sim`` runs without ``--variants`` (no size prior: sim objects are small).
SIM_DEFAULT_VARIANTS = VARIANT_NAMES[:5]


@dataclass(frozen=True)
class Variant:
    """One configuration of the method to evaluate.

    ``relations`` is the variant's own relation mode, or None to use the run's mode.
    """

    name: str
    use_relations: bool = True
    methods: Tuple[str, ...] = ('crop', 'blur')
    size_prior: float = 0.0
    relations: Optional[str] = None
    description: str = ''

    def relation_mode(self, run_mode: str = DEFAULT_RELATION_MODE) -> str:
        """The relation mode this variant parses in, given the run's mode."""
        return check_mode(self.relations or run_mode)

    def options_dict(self, run_mode: str = DEFAULT_RELATION_MODE) -> dict:
        """Return the grounding options of this variant as plain JSON values."""
        return {'use_relations': self.use_relations, 'methods': list(self.methods),
                'size_prior': float(self.size_prior),
                'relations': self.relation_mode(run_mode)}

    def grounding_options(self, run_mode: str = DEFAULT_RELATION_MODE):
        """Return the core :class:`~reclip_ros.core.grounder.GroundingOptions` of the variant."""
        from reclip_ros.core.grounder import GroundingOptions
        return GroundingOptions(use_relations=self.use_relations, methods=tuple(self.methods),
                                size_prior=float(self.size_prior),
                                relations=self.relation_mode(run_mode))


def make_variants(names: Sequence[str] = DEFAULT_VARIANTS,
                  size_prior: float = DEFAULT_SIZE_PRIOR) -> List[Variant]:
    """Build the named variants; ``size_prior`` is the area fraction of ``full_size_prior``.

    Raises:
        ValueError: on an unknown name, no name, or a size prior outside [0, 1).
    """
    if not 0.0 <= size_prior < 1.0:
        raise ValueError(f'size prior must be in [0, 1), got {size_prior}')
    table = {
        'full': Variant('full', True, ('crop', 'blur'), 0.0, None,
                        'crop + blur, relations, no size prior'),
        'paper': Variant('paper', True, ('crop', 'blur'), 0.0, PAPER,
                         "crop + blur, relations as the authors' public code, no size prior"),
        'no_relations': Variant('no_relations', False, ('crop', 'blur'), 0.0, None,
                                'crop + blur, no relations'),
        'crop_only': Variant('crop_only', False, ('crop',), 0.0, None, 'crop, no relations'),
        'blur_only': Variant('blur_only', False, ('blur',), 0.0, None, 'blur, no relations'),
        'full_crop_only': Variant('full_crop_only', True, ('crop',), 0.0, None,
                                  'crop, relations, no size prior'),
        'full_blur_only': Variant('full_blur_only', True, ('blur',), 0.0, None,
                                  'blur, relations, no size prior'),
        'full_size_prior': Variant('full_size_prior', True, ('crop', 'blur'), size_prior, None,
                                   f'crop + blur, relations, size prior {size_prior:g}'),
    }
    out: List[Variant] = []
    for name in names:
        if name not in table:
            raise ValueError(f'unknown variant {name!r}; choose from {", ".join(VARIANT_NAMES)}')
        if name not in [v.name for v in out]:
            out.append(table[name])
    if not out:
        raise ValueError('no variant selected')
    return out


def parse_variant_list(text: str) -> List[str]:
    """Split a comma-separated list of variant names (blanks ignored)."""
    return [v.strip() for v in str(text).split(',') if v.strip()]


def best_iou(prediction: Optional[Box], golds: Sequence[Box]) -> float:
    """The largest IoU of *prediction* with any gold box (0 without a prediction or gold)."""
    if prediction is None:
        return 0.0
    return max((prediction.iou(g) for g in golds), default=0.0)


def is_correct(prediction: Optional[Box], golds: Sequence[Box]) -> bool:
    """True when *prediction* has IoU > :data:`IOU_THRESHOLD` with any of *golds*."""
    return best_iou(prediction, golds) > IOU_THRESHOLD
