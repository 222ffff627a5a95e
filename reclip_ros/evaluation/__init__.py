"""Accuracy evaluation on referring-expression datasets (RefCOCO/+/g, RefGTA, jsonl files).

:mod:`.engine` grounds and scores records (variants, resume, progress, reports);
:mod:`.refcoco` reads the REFER layout; :mod:`.jsonl` reads the simple line format.
"""

from reclip_ros.evaluation.engine import (  # noqa: F401
    DEFAULT_SIZE_PRIOR, IOU_THRESHOLD, VARIANT_NAMES, EvalDataError, EvalRecord, EvalSettings,
    Variant, evaluate, make_variants)
from reclip_ros.evaluation.variants import DEFAULT_VARIANTS  # noqa: F401
