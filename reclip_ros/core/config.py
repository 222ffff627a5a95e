"""Every grounding setting, defined once: name, default, meaning, range and where it appears.

:data:`OPTIONS` is the one definition. Everything else is generated from it or checked
against it (``test/test_config_drift.py``):

- :class:`GrounderConfig` (built once, when the models load) and :class:`GroundingOptions`
  (per call) take their defaults from it;
- the node's parameter table (:mod:`reclip_ros.runtime.parameters`) declares one parameter
  per row that has a ``parameter`` name, with the same default, range and choices;
- the command lines (``reclip ground``, ``reclip eval``, ``reclip bench``) add their
  options with :func:`reclip_ros.cli.options.add_config_arguments`;
- ``config/reclip.yaml``, the README and ``docs/node.md`` list every node parameter with
  its default.

Adding a setting: one :class:`Option` row here and one :class:`GrounderConfig` field (or
:class:`GroundingOptions` field), then its use. This module imports nothing else from the
package, so every other module can import its vocabularies and defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

# -- vocabularies (the allowed values of the settings below) --------------------------------

#: Model precisions: 'auto' is fp16 on CUDA and fp32 on CPU; int8 runs on CPU only.
PRECISIONS = ('auto', 'fp32', 'fp16', 'bf16', 'int8')
#: The relation modes: the authors' public code exactly, or this project's semantics.
PAPER = 'paper'
EXTENDED = 'extended'
RELATION_MODES = (PAPER, EXTENDED)
#: Isolation methods computed per frame, and the settings a user can choose.
#: The isolation that shows the object itself, and the one that shows it in its context.
CROP, BLUR = 'crop', 'blur'
ISOLATION_METHODS = (CROP, BLUR)
ISOLATION_CHOICES = (f'{CROP},{BLUR}', CROP, BLUR)
#: ``detector: auto`` picks a detector sized for the device (``proposals.resolve_detector``).
DETECTOR_AUTO = 'auto'
DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')

# -- defaults ---------------------------------------------------------------------------------

DEFAULT_MODELS = ('openai/clip-vit-base-patch32',)
DEFAULT_SPACY_MODEL = 'en_core_web_sm'
DEFAULT_RELATION_MODE = EXTENDED
DEFAULT_DETECTOR = DETECTOR_AUTO
DEFAULT_BLUR_SIGMA = 100.0
#: The most proposal boxes one grounding uses (bounds the work one message can cause).
DEFAULT_MAX_PROPOSALS = 100
#: The largest image accepted, in pixels (4096 x 4096, about 16.8 MP).
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class Option:
    """One grounding setting.

    Attributes:
        name: the :class:`GrounderConfig` (or :class:`GroundingOptions`) field.
        default: its default, as the config holds it (a tuple for a list of strings).
        help: what it means, with units.
        min_value, max_value: inclusive numeric range (None: unbounded).
        choices: allowed string values (empty: any).
        parameter: the node parameter's name; None when the node has no such parameter.
        node_default: the node parameter's default where it deliberately differs from
            *default* (e.g. the node proposes with a detector, the library does not).
        flag: the command-line flag; None when no command line offers it.
        joined: a tuple setting that the node and the command line write as one
            comma-separated string (``'crop,blur'``).
        per_call: a :class:`GroundingOptions` setting: the node applies a change on the
            next command; the others are applied when the models load (configure).
        metavar: the command line's placeholder for the value.
    """

    name: str
    default: Any
    help: str
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    choices: Tuple[str, ...] = ()
    parameter: Optional[str] = ''
    node_default: Any = None
    flag: Optional[str] = ''
    joined: bool = False
    per_call: bool = False
    metavar: Optional[str] = None

    def __post_init__(self) -> None:
        if self.parameter == '':
            object.__setattr__(self, 'parameter', self.name)
        if self.flag == '':
            object.__setattr__(self, 'flag', '--' + self.name.replace('_', '-'))

    @property
    def kind(self) -> type:
        """The value type: bool, int, float, str or tuple (a list of strings)."""
        return type(self.default)

    def external(self, value: Any) -> Any:
        """*value* as the node parameter and the command line write it."""
        if self.kind is tuple:
            return ','.join(value) if self.joined else list(value)
        return value

    def internal(self, value: Any) -> Any:
        """A node parameter or command-line *value* as the config holds it."""
        if self.kind is tuple:
            items = value.split(',') if isinstance(value, str) else value
            return tuple(v.strip() for v in items if str(v).strip())
        return value

    @property
    def parameter_default(self) -> Any:
        """The node parameter's default, as the node declares it."""
        return self.external(self.default if self.node_default is None else self.node_default)


OPTIONS: Tuple[Option, ...] = (
    # -- applied when the models load --------------------------------------------------------
    Option('models', DEFAULT_MODELS,
           'CLIP-family models to ensemble (logits summed): hub ids or local model '
           "directories; 'sim' is the embedded simulation model", flag='--model',
           metavar='ID_OR_DIR'),
    Option('detector', '', "object detector for proposals (hub id or directory); 'auto': "
           'OWLv2 base/16 on CUDA, OWL-ViT base/32 on CPU; empty: proposals only from the '
           '`proposals` topic or the service request', node_default=DEFAULT_DETECTOR,
           metavar='ID_OR_DIR'),
    Option('allow_download', False, 'download a model (CLIP or detector) from the Hugging '
           'Face hub when it is not in the local cache; false: nothing is downloaded, and a '
           'missing model fails at once with a message naming it and how to fetch it'),
    Option('spacy_model', DEFAULT_SPACY_MODEL, 'spaCy pipeline of the expression parser',
           metavar='NAME'),
    Option('device', 'auto', "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'"),
    Option('precision', 'auto', "model precision: 'auto' (fp16 on CUDA, fp32 on CPU), "
           "'fp32', 'fp16', 'bf16', 'int8' (CPU: linear layers quantised; CLIP models and "
           'detector)', choices=PRECISIONS),
    Option('batch_size', 32, 'isolated images per forward pass (bounds GPU memory)',
           min_value=1, max_value=1024, metavar='B'),
    Option('blur_sigma', DEFAULT_BLUR_SIGMA, 'Gaussian sigma of the blur isolation, pixels',
           min_value=0.0, max_value=1000.0, metavar='S'),
    Option('methods', ISOLATION_METHODS, "how each proposal is isolated for CLIP: "
           "'crop,blur' (the paper: both logits summed), 'crop' or 'blur'; 'crop' measured "
           'better for objects a tenth of the frame wide (docs/simulation.md)',
           choices=ISOLATION_CHOICES, parameter='isolation_methods', joined=True,
           metavar='LIST'),
    Option('detector_score_threshold', 0.1, 'detector boxes below this score are dropped, '
           '[0, 1]', min_value=0.0, max_value=1.0, metavar='T'),
    Option('detector_top_k', 30, 'the most detector boxes kept per frame',
           min_value=1, max_value=1000, flag=None),
    Option('detector_nms_iou', 0.5, 'IoU above which the detector keeps only the better of '
           'two boxes', min_value=0.0, max_value=1.0, parameter=None, flag=None),
    Option('detector_min_size', 8.0, 'detector boxes narrower or lower than this are '
           'dropped, pixels', min_value=0.0, parameter=None, flag=None),
    Option('max_expression_chars', 1000, 'longer commands give INVALID_COMMAND',
           min_value=1, max_value=100000, flag=None),
    Option('max_proposals', DEFAULT_MAX_PROPOSALS, 'the most proposal boxes one command uses '
           '(from the proposals topic, the service or the detector); more are left out, best '
           'score first, and status_message says how many', min_value=1, max_value=10000,
           metavar='N'),
    Option('max_image_pixels', DEFAULT_MAX_IMAGE_PIXELS, 'larger colour or depth images '
           '(width x height) give BAD_IMAGE, checked before decoding (JPEG/PNG: from the '
           'header)', min_value=4, max_value=1 << 30, metavar='N'),
    Option('text_cache_size', 4096, 'text embeddings kept per model (least recently used '
           'first out)', min_value=0, parameter=None, flag=None),
    Option('frame_cache_size', 4, 'frames whose region embeddings are kept (least recently '
           'used first out)', min_value=0, parameter=None, flag=None),
    Option('center_offset', 0.6, "3D position: how far behind the visible surface the point "
           "is placed along the viewing ray, in units of the object's apparent half-width "
           '(0: the surface point under the box centre)', min_value=0.0, max_value=2.0,
           metavar='K'),
    # -- per call (the node applies a change on the next command) -----------------------------
    Option('size_prior', 0.0, 'boxes with area <= this fraction of the image get probability '
           '0 (0 disables; the paper uses 0.05)', min_value=0.0, max_value=0.99,
           metavar='F'),
    Option('use_relations', True, 'resolve spatial relations (False: region scoring of the '
           'whole expression only)', per_call=True, flag=None),
    Option('relations', DEFAULT_RELATION_MODE, "relation mode: 'extended' (depth-aware "
           'front/behind/closer, near, between, middle, ordinals, robot commands) or '
           "'paper' (the authors' public ReCLIP code exactly)", choices=RELATION_MODES),
)

OPTION_BY_NAME: Dict[str, Option] = {option.name: option for option in OPTIONS}
#: Settings that change a loaded grounder without reloading it (applied on the next call).
LIVE_SETTINGS = ('size_prior', 'use_relations', 'relations', 'center_offset')


def option(name: str) -> Option:
    """The :class:`Option` called *name* (KeyError naming the known ones otherwise)."""
    try:
        return OPTION_BY_NAME[name]
    except KeyError:
        raise KeyError(f'no grounding option {name!r}; known: {sorted(OPTION_BY_NAME)}') \
            from None


def check_mode(mode: str) -> str:
    """Return *mode* when it is a relation mode.

    Raises:
        ValueError: for anything else, naming the modes.
    """
    if mode not in RELATION_MODES:
        raise ValueError(f'unknown relation mode {mode!r}; use one of '
                         f'{", ".join(RELATION_MODES)}')
    return mode


def _default(name: str) -> Any:
    return OPTION_BY_NAME[name].default


@dataclass(frozen=True)
class GrounderConfig:
    """Everything needed to build a :class:`~reclip_ros.core.grounder.Grounder`.

    Each field's meaning, default and range is its row in :data:`OPTIONS`; the fields
    below name them for the reader:

    models, allow_download, device, precision, spacy_model, detector ('' means proposals
    must be given; 'auto' picks by device), blur_sigma, size_prior, batch_size,
    max_expression_chars, methods, text_cache_size, frame_cache_size, detector_score_threshold,
    detector_nms_iou, detector_min_size, detector_top_k, center_offset, relations,
    max_proposals, max_image_pixels.
    """

    models: Tuple[str, ...] = _default('models')
    allow_download: bool = _default('allow_download')
    device: str = _default('device')
    precision: str = _default('precision')
    spacy_model: str = _default('spacy_model')
    detector: str = _default('detector')
    blur_sigma: float = _default('blur_sigma')
    size_prior: float = _default('size_prior')
    batch_size: int = _default('batch_size')
    max_expression_chars: int = _default('max_expression_chars')
    methods: Tuple[str, ...] = _default('methods')
    text_cache_size: int = _default('text_cache_size')
    frame_cache_size: int = _default('frame_cache_size')
    detector_score_threshold: float = _default('detector_score_threshold')
    detector_nms_iou: float = _default('detector_nms_iou')
    detector_min_size: float = _default('detector_min_size')
    detector_top_k: int = _default('detector_top_k')
    center_offset: float = _default('center_offset')
    relations: str = _default('relations')
    max_proposals: int = _default('max_proposals')
    max_image_pixels: int = _default('max_image_pixels')

    def __post_init__(self) -> None:
        check_mode(self.relations)
        if self.max_proposals < 1 or self.max_image_pixels < 4:
            raise ValueError('max_proposals must be >= 1 and max_image_pixels >= 4')

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> GrounderConfig:
        """Build a config from external values keyed by field name (the rest default).

        Lists and comma-separated strings become tuples; keys that are not config fields
        (per-call or interface settings) are ignored.
        """
        names = {f.name for f in fields(cls)}
        return cls(**{name: OPTION_BY_NAME[name].internal(value)
                      for name, value in values.items() if name in names})


@dataclass(frozen=True)
class GroundingOptions:
    """Per-call switches, used for ablations (the frame's embeddings are shared).

    Attributes:
        use_relations: apply the spatial resolver (False: region scoring of the whole
            expression only, the paper's "no relations" ablation).
        methods: isolation methods whose logits are summed (subset of the config's).
        size_prior: override the configured size prior for this call (None: keep it). It
            acts on the root entity and the full expression only, as in the paper's code.
        relations: the relation mode of this call, 'paper' or 'extended' (None: the
            grounder's own, from ``GrounderConfig.relations``).
    """

    methods: Tuple[str, ...] = _default('methods')
    use_relations: bool = _default('use_relations')
    size_prior: Optional[float] = None
    relations: Optional[str] = None

    def __post_init__(self) -> None:
        if self.relations is not None:
            check_mode(self.relations)
