"""The node's parameters: name, default, meaning, range, and validation (ROS-free).

The grounding settings are generated from :data:`reclip_ros.core.config.OPTIONS` (one
definition); the node's own settings (interface, timing, outputs) are defined here. The
node turns each :class:`ParameterSpec` into a ``ParameterDescriptor``; the same specs
validate values in the on-set callback and again in ``on_configure``, and the tests check
that ``config/reclip.yaml``, the README and docs/node.md list every one of them with the
same default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from reclip_ros.core.config import DEVICE_PATTERN, LIVE_SETTINGS, OPTIONS, Option


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


def spec_of(option: Option) -> ParameterSpec:
    """The node parameter of a grounding :class:`~reclip_ros.core.config.Option`."""
    return ParameterSpec(option.parameter, option.parameter_default, option.help,
                         on_configure=option.name not in LIVE_SETTINGS,
                         min_value=option.min_value, max_value=option.max_value,
                         choices=option.choices)


#: The node's own settings (interface, timing, outputs); the grounding settings come from
#: :data:`reclip_ros.core.config.OPTIONS`.
NODE_PARAMETERS: Tuple[ParameterSpec, ...] = (
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

PARAMETERS: Tuple[ParameterSpec, ...] = tuple(
    spec_of(option) for option in OPTIONS if option.parameter) + NODE_PARAMETERS
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


def change_problem(name: str, value: Any, configured: bool) -> Optional[str]:
    """Why parameter *name* cannot be set to *value* now (None: it can).

    A parameter applied on configure can change only while the node is unconfigured.
    """
    problem = validate(name, value)
    spec = SPECS.get(name)
    if problem is None and spec is not None and spec.on_configure and configured:
        problem = (f'{name} is applied on configure: deactivate and clean up the node, set '
                   'it, then configure again')
    return problem


def validate_all(values: Mapping[str, Any]) -> Optional[str]:
    """Return the first problem among *values* (name -> value), or None."""
    for name, value in values.items():
        problem = validate(name, value)
        if problem:
            return problem
    return None


def grounder_config(values: Mapping[str, Any]):
    """The :class:`~reclip_ros.core.config.GrounderConfig` of node parameter *values*."""
    from reclip_ros.core.config import GrounderConfig
    return GrounderConfig.from_values({option.name: values[option.parameter]
                                       for option in OPTIONS if option.parameter in values})


def grounding_options(values: Mapping[str, Any]):
    """The per-call :class:`~reclip_ros.core.config.GroundingOptions` of parameter *values*.

    Every ``GroundingOptions`` field that is a node parameter is taken from *values* (the
    isolation methods stay the configured ones).
    """
    from dataclasses import fields

    from reclip_ros.core.config import OPTION_BY_NAME, GroundingOptions
    kwargs = {}
    for field in fields(GroundingOptions):
        option = OPTION_BY_NAME.get(field.name)
        if field.name != 'methods' and option is not None and option.parameter in values:
            kwargs[field.name] = option.internal(values[option.parameter])
    return GroundingOptions(**kwargs)
