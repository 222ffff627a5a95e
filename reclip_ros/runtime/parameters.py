"""The node's parameters: name, default, meaning, range, and validation (ROS-free).

The node turns each :class:`ParameterSpec` into a ``ParameterDescriptor``; the same specs
validate values in the on-set callback and again in ``on_configure``, and the tests check
that ``config/reclip.yaml`` documents every one of them with the same default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from reclip_ros.core.grounder import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_PROPOSALS
from reclip_ros.core.isolation import ISOLATION_CHOICES
from reclip_ros.core.models import PRECISIONS
from reclip_ros.core.proposals import DEFAULT_DETECTOR
from reclip_ros.core.relation_kinds import DEFAULT_RELATION_MODE, RELATION_MODES

DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter.

    Attributes:
        name: parameter name.
        default: default value (its type is the parameter's type).
        description: what it means, with units.
        read_only: True when the value only matters at start-up (never changeable).
        on_configure: True when the value is applied in ``on_configure`` (models, queue,
            subscriptions): it can be changed only while the node is unconfigured, then
            takes effect with the next configure.
        min_value, max_value: inclusive numeric range (None: unbounded).
        choices: allowed string values (empty: any).
    """

    name: str
    default: Any
    description: str
    read_only: bool = False
    on_configure: bool = False
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    choices: Tuple[str, ...] = ()


PARAMETERS: Tuple[ParameterSpec, ...] = (
    # -- models (loaded in on_configure; change them while unconfigured) ---------------
    ParameterSpec('models', ['openai/clip-vit-base-patch32'],
                  'CLIP-family models to ensemble (logits summed): hub ids or local model '
                  "directories; 'sim' is the embedded simulation model", on_configure=True),
    ParameterSpec('detector', DEFAULT_DETECTOR,
                  "object detector for proposals (hub id or directory); 'auto': OWLv2 "
                  'base/16 on CUDA, OWL-ViT base/32 on CPU; empty: proposals only from the '
                  '`proposals` topic or the service request', on_configure=True),
    ParameterSpec('spacy_model', 'en_core_web_sm',
                  'spaCy pipeline of the expression parser', on_configure=True),
    ParameterSpec('device', 'auto', "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'",
                  on_configure=True),
    ParameterSpec('precision', 'auto',
                  "model precision: 'auto' (fp16 on CUDA, fp32 on CPU), 'fp32', 'fp16', 'bf16', "
                  "'int8' (CPU: linear layers quantised; CLIP models and detector)",
                  on_configure=True, choices=PRECISIONS),
    ParameterSpec('batch_size', 32, 'isolated images per forward pass (bounds GPU memory)',
                  on_configure=True, min_value=1, max_value=1024),
    ParameterSpec('blur_sigma', 100.0, 'Gaussian sigma of the blur isolation, pixels',
                  on_configure=True, min_value=0.0, max_value=1000.0),
    ParameterSpec('isolation_methods', ISOLATION_CHOICES[0], "how each proposal is isolated "
                  "for CLIP: 'crop,blur' (the paper: both logits summed), 'crop' or 'blur'; "
                  "'crop' measured better for objects a tenth of the frame wide "
                  '(docs/simulation.md)', on_configure=True, choices=ISOLATION_CHOICES),
    ParameterSpec('detector_score_threshold', 0.1, 'detector boxes below this score are '
                  'dropped, [0, 1]', on_configure=True, min_value=0.0, max_value=1.0),
    ParameterSpec('detector_top_k', 30, 'the most detector boxes kept per frame',
                  on_configure=True, min_value=1, max_value=1000),
    ParameterSpec('max_expression_chars', 1000, 'longer commands give INVALID_COMMAND',
                  on_configure=True, min_value=1, max_value=100000),
    ParameterSpec('max_proposals', DEFAULT_MAX_PROPOSALS, 'the most proposal boxes one '
                  'command uses (from the proposals topic, the service or the detector); '
                  'more are left out, best score first, and status_message says how many',
                  on_configure=True, min_value=1, max_value=10000),
    ParameterSpec('max_image_pixels', DEFAULT_MAX_IMAGE_PIXELS, 'larger colour or depth '
                  'images (width x height) give BAD_IMAGE, checked before decoding (JPEG/PNG: '
                  'from the header)', on_configure=True, min_value=4, max_value=1 << 30),
    # -- grounding (take effect on the next command) ------------------------------------
    ParameterSpec('size_prior', 0.0, 'boxes with area <= this fraction of the image get '
                  'probability 0 (0 disables; the paper uses 0.05)',
                  min_value=0.0, max_value=0.99),
    ParameterSpec('use_relations', True, 'resolve spatial relations (False: region scoring '
                  'of the whole expression only)'),
    ParameterSpec('relations', DEFAULT_RELATION_MODE,
                  "relation mode: 'extended' (depth-aware front/behind/closer, near, between, "
                  "middle, ordinals, robot commands) or 'paper' (the authors' public ReCLIP "
                  'code exactly)', choices=RELATION_MODES),
    ParameterSpec('max_image_age', 1.0, 'seconds; a command whose newest image is older '
                  'gets NO_IMAGE (0 disables the check)', min_value=0.0, max_value=3600.0),
    ParameterSpec('continuous', False, 're-ground the last command on new frames'),
    ParameterSpec('continuous_rate', 2.0, 'the most re-groundings per second in continuous '
                  'mode, Hz', min_value=0.01, max_value=100.0),
    ParameterSpec('precompute', False, 'while no command waits, propose and encode the newest '
                  'frame ahead of the next command (it then pays only the text path); '
                  'commands keep priority: a pass yields between batches'),
    ParameterSpec('precompute_rate', 2.0, 'the most precompute passes per second, Hz',
                  min_value=0.01, max_value=100.0),
    ParameterSpec('proposals_max_skew', 0.05, 'seconds between an image stamp and the '
                  'Proposals stamp matched to it', min_value=0.0, max_value=10.0),
    ParameterSpec('depth_max_skew', 0.05, 'seconds between an image stamp and the depth '
                  'stamp matched to it', min_value=0.0, max_value=10.0),
    ParameterSpec('sync_wait', 0.1, 'seconds a command waits for the depth image (and '
                  'proposals) of the newest frame before using an earlier frame that has them',
                  min_value=0.0, max_value=5.0),
    ParameterSpec('center_offset', 0.6, '3D position: how far behind the visible surface '
                  'the point is placed along the viewing ray, in units of the object\'s '
                  'apparent half-width (0: the surface point under the box centre)',
                  min_value=0.0, max_value=2.0),
    ParameterSpec('max_candidates', 30, 'candidates listed in a result (0: all)',
                  min_value=0, max_value=1000),
    ParameterSpec('publish_debug_image', True, 'publish `debug_image` (only while it has '
                  'subscribers)'),
    ParameterSpec('debug_top_k', 3, 'candidates drawn in the debug image',
                  min_value=0, max_value=100),
    ParameterSpec('service_timeout', 60.0, 'seconds a `~/ground` call waits for its result '
                  'before answering ERROR', min_value=0.1, max_value=3600.0),
    # -- interface (applied on configure) ---------------------------------------------------
    ParameterSpec('autostart', False, 'configure and activate when the node starts',
                  read_only=True),
    ParameterSpec('publish_vision_msgs', 'auto',
                  "also publish vision_msgs/Detection2DArray on `detections` (and, with depth, "
                  "Detection3DArray on `detections_3d`): 'auto' when vision_msgs is "
                  "importable, 'true' (configure fails without it) or 'false'",
                  on_configure=True, choices=('auto', 'true', 'false')),
    ParameterSpec('queue_size', 10, 'commands waiting at most; more give DROPPED',
                  on_configure=True, min_value=1, max_value=1000),
    # -- interface (created once at start-up, for the node's whole life) -----------------
    ParameterSpec('subscribe_compressed', False,
                  'also subscribe `image/compressed` (JPEG/PNG)', read_only=True),
    ParameterSpec('use_depth', True, 'subscribe `depth` and `camera_info` for 3D points and '
                  'depth-aware relations', read_only=True),
    ParameterSpec('use_proposals_topic', True, 'subscribe `proposals` (external boxes)',
                  read_only=True),
    ParameterSpec('image_qos_reliability', 'best_effort',
                  "reliability of the image subscriptions: 'best_effort' (sensor data, "
                  "matches any publisher) or 'reliable'", read_only=True,
                  choices=('best_effort', 'reliable')),
    ParameterSpec('diagnostics_period', 1.0, 'seconds between /diagnostics messages',
                  read_only=True, min_value=0.1, max_value=60.0),
)

SPECS: Dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


def validate(name: str, value: Any) -> Optional[str]:
    """Return why *value* is not acceptable for parameter *name*, or None when it is."""
    spec = SPECS.get(name)
    if spec is None:
        return None
    if isinstance(spec.default, list):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return f'{name} must be a list of strings'
        if name == 'models' and not [v for v in value if v.strip()]:
            return 'models must name at least one CLIP model'
        return None
    if isinstance(spec.default, bool):
        return None if isinstance(value, bool) else f'{name} must be true or false'
    if isinstance(spec.default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f'{name} must be a number'
        if spec.min_value is not None and value < spec.min_value:
            return f'{name}={value} is below the minimum {spec.min_value}'
        if spec.max_value is not None and value > spec.max_value:
            return f'{name}={value} is above the maximum {spec.max_value}'
        return None
    if not isinstance(value, str):
        return f'{name} must be a string'
    if spec.choices and value not in spec.choices:
        return f"{name}={value!r} is not one of {', '.join(spec.choices)}"
    if name == 'device' and not DEVICE_PATTERN.match(value):
        return f"device={value!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'"
    if name == 'spacy_model' and not value.strip():
        return 'spacy_model must not be empty'
    return None


def validate_all(values: Mapping[str, Any]) -> Optional[str]:
    """Return the first problem among *values* (name -> value), or None."""
    for name, value in values.items():
        problem = validate(name, value)
        if problem:
            return problem
    return None
