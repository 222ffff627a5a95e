"""The grounding pipeline: proposals -> isolation -> CLIP scoring -> spatial resolver.

:class:`Grounder` is the small public API of the core::

    grounder = Grounder.from_config(GrounderConfig())  # the default CLIP model
    result = grounder.ground(image_rgb, 'the red mug left of the laptop', boxes=boxes)

``ground`` never raises on bad input: the returned :class:`GroundingResult` carries a status
(INVALID_COMMAND, BAD_IMAGE, NO_PROPOSALS, ERROR) and a message saying what was wrong.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from reclip_ros.core.config import (CROP, DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_PROPOSALS,
                                    DEFAULT_RELATION_MODE, GrounderConfig, GroundingOptions,
                                    check_mode)
from reclip_ros.core.images import validate_image
from reclip_ros.core.protocols import (CacheReporting, Closable, Offloadable, ProposalSource,
                                       Scorer)
from reclip_ros.core.types import (Box, Candidate, GroundingResult, Interrupted, ReclipError,
                                   Status, Timings)

LOGGER = logging.getLogger(__name__)

#: Frames whose detector boxes are kept (by frame key), so a frame is detected once.
DETECTION_CACHE_FRAMES = 8


def expression_problem(expression: object, max_chars: int, setting: str = '') -> Optional[str]:
    """Why *expression* cannot be grounded (not text, empty, longer than *max_chars*), or None.

    The one expression check, used by :meth:`Grounder.check_expression` and by the node's
    worker before queueing; *setting* names the limit's setting in the message.
    """
    if not isinstance(expression, str):
        return f'expression must be text, got {type(expression).__name__}'
    if not expression.strip():
        return 'expression is empty'
    if len(expression) > max_chars:
        return (f'expression is {len(expression)} characters long; the limit is '
                f'{max_chars}' + (f' ({setting})' if setting else ''))
    return None


@dataclass
class _Clock:
    """Accumulates stage durations in milliseconds."""

    stages: dict = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + ms

    def timings(self, total_ms: float) -> Timings:
        s = self.stages
        return Timings(proposals=s.get('proposals', 0.0), isolation=s.get('isolation', 0.0),
                       image_encoding=s.get('image_encoding', 0.0),
                       text_encoding=s.get('text_encoding', 0.0),
                       resolve=s.get('resolve', 0.0), total=total_ms)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def softmax_with_size_prior(logits: np.ndarray, areas: np.ndarray, image_area: float,
                            size_prior: float) -> np.ndarray:
    """Softmax over proposals; with a size prior, boxes with area <= prior * image get 0.

    When every box falls under the threshold the prior is ignored (it must not leave an
    empty distribution).
    """
    logits = np.asarray(logits, dtype=np.float64)
    z = logits - logits.max()
    p = np.exp(z)
    if size_prior > 0:
        keep = areas > size_prior * image_area
        if keep.any():
            p = np.where(keep, p, 0.0)
    total = p.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(len(logits), 1.0 / len(logits))
    return p / total


def prepare_boxes(boxes: Sequence, width: int, height: int) -> Tuple[List[Box], int]:
    """Convert boxes (Box or [x, y, w, h]) and clip them to the image.

    Returns the usable boxes and how many were dropped for lying outside the image.
    Raises ValueError for malformed boxes.
    """
    out: List[Box] = []
    dropped = 0
    for b in boxes:
        box = b if isinstance(b, Box) else Box.from_list(b)
        clipped = box.clipped(width, height)
        if clipped.width < 1 or clipped.height < 1:
            dropped += 1
            continue
        out.append(clipped)
    return out, dropped


class Grounder:
    """Ground referring expressions in images (ReCLIP), with per-frame caching.

    Args:
        scorer: a :class:`reclip_ros.core.region_scorer.RegionScorer` (or anything with its
            ``encode_frame`` / ``logits`` / ``text_encoding_ms_total`` interface).
        parser: an :class:`reclip_ros.core.language.parsing.ExpressionParser`.
        resolver: a :class:`reclip_ros.core.resolver.SpatialResolver` (default: a new one).
        proposals: a proposal source used when ``ground`` gets no boxes (None: boxes required).
        size_prior: default size prior (fraction of the image area).
        max_expression_chars: longer expressions are rejected.
        center_offset: see :class:`GrounderConfig` (0 here: the visible-surface point).
        relations: the default relation mode ('extended' or 'paper').
        max_proposals, max_image_pixels: see :class:`GrounderConfig`.
    """

    def __init__(self, scorer: Scorer, parser, resolver=None,
                 proposals: Optional[ProposalSource] = None, size_prior: float = 0.0,
                 max_expression_chars: int = 1000, center_offset: float = 0.0,
                 relations: str = DEFAULT_RELATION_MODE,
                 max_proposals: int = DEFAULT_MAX_PROPOSALS,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if resolver is None:
            from reclip_ros.core.resolver import SpatialResolver
            resolver = SpatialResolver()
        self.scorer = scorer
        self.parser = parser
        self.resolver = resolver
        self.proposals = proposals
        self.size_prior = float(size_prior)
        self.max_expression_chars = int(max_expression_chars)
        self.center_offset = float(center_offset)
        self.relations = check_mode(relations)
        self.max_proposals = int(max_proposals)
        self.max_image_pixels = int(max_image_pixels)
        # detector boxes of the last few frames (by frame_key): a command on a frame that
        # was proposed already (by precompute or an earlier command) skips the detector
        self._detections: OrderedDict = OrderedDict()
        self._detections_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: GrounderConfig) -> Grounder:
        """Load models, parser and detector described by *config*.

        Raises:
            ModelLoadError: a CLIP model, the detector or the spaCy model is missing.
            DeviceError: the requested device is not available.
        """
        from reclip_ros.core.language.parsing import ExpressionParser
        from reclip_ros.core.models import load_models
        from reclip_ros.core.region_scorer import RegionScorer

        if not config.models:
            raise ReclipError('at least one CLIP model is required (config.models is empty)')
        parser = ExpressionParser(config.spacy_model)
        models = list(load_models(config.models, device=config.device,
                                  precision=config.precision,
                                  allow_download=config.allow_download))
        scorer = RegionScorer(models, blur_sigma=config.blur_sigma, methods=config.methods,
                              batch_size=config.batch_size,
                              text_cache_size=config.text_cache_size,
                              frame_cache_size=config.frame_cache_size)
        proposals = None
        if config.detector:
            from reclip_ros.core.proposals import DetectorProposals
            proposals = DetectorProposals(
                config.detector, device=config.device,
                score_threshold=config.detector_score_threshold,
                nms_iou=config.detector_nms_iou, min_size=config.detector_min_size,
                top_k=config.detector_top_k, precision=config.precision,
                local_files_only=not config.allow_download)
            LOGGER.info('detector %r: %s on %s', config.detector, proposals.name,
                        proposals.device)
        return cls(scorer, parser, proposals=proposals, size_prior=config.size_prior,
                   max_expression_chars=config.max_expression_chars,
                   center_offset=config.center_offset, relations=config.relations,
                   max_proposals=config.max_proposals,
                   max_image_pixels=config.max_image_pixels)

    @property
    def device(self) -> str:
        """The device the CLIP models actually run on (e.g. 'cpu', 'cuda:0')."""
        models = self.scorer.models
        return str(models[0].device) if models else 'cpu'

    @property
    def model_names(self) -> List[str]:
        """The ensembled CLIP model ids / directories."""
        return [m.name for m in self.scorer.models]

    @property
    def detector_name(self) -> str:
        """The detector in use (''auto'' resolved to an id), or '' without one."""
        return str(self.proposals.name) if self.proposals is not None else ''

    def close(self) -> None:
        """Release the models (and cached GPU memory)."""
        for part in (self.scorer, self.proposals):
            if isinstance(part, Closable):
                part.close()
        self.scorer = None
        self.proposals = None
        with self._detections_lock:
            self._detections.clear()
        gc.collect()  # drop the weights now, so that the CUDA cache below can be returned
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a hard dependency
            pass

    def offload(self) -> bool:
        """Move CUDA models to host memory, freeing GPU memory while idle (no-op on CPU).

        Region and text embedding caches stay valid (they live in host memory).
        :meth:`restore`, or the next grounding, moves the models back.
        """
        moved = [p.offload() for p in self._parts() if isinstance(p, Offloadable)]
        return any(moved)

    def restore(self) -> bool:
        """Move offloaded models back to their device (True when something moved)."""
        moved = [p.restore() for p in self._parts() if isinstance(p, Offloadable)]
        return any(moved)

    def _parts(self) -> list:
        return list(self.scorer.models) + [self.proposals]

    def cache_sizes(self) -> Dict[str, int]:
        """The fill and capacity of the scorer's caches (empty when it reports none)."""
        return self.scorer.cache_sizes() if isinstance(self.scorer, CacheReporting) else {}

    def check_expression(self, expression: object, setting: str = '') -> Optional[str]:
        """Return why *expression* cannot be grounded, or None when it is acceptable.

        *setting* names the limit's setting in the message (e.g. the node parameter).
        """
        return expression_problem(expression, self.max_expression_chars, setting)

    def update_live(self, center_offset: Optional[float] = None) -> None:
        """Change the settings that apply on the next call without reloading the models."""
        if center_offset is not None:
            self.center_offset = float(center_offset)

    def ground(self, image: np.ndarray, expression: str, boxes: Optional[Sequence] = None,
               depth_m: Optional[np.ndarray] = None, intrinsics=None,
               frame_key: Optional[Hashable] = None,
               options: Optional[GroundingOptions] = None) -> GroundingResult:
        """Ground *expression* in *image* (RGB uint8 HxWx3) and return the result.

        Args:
            image: the colour image, RGB.
            expression: a referring expression or robot command.
            boxes: proposals (Box or [x, y, w, h] in pixels); None uses the detector.
            depth_m: registered depth in metres (HxW, nan/0 invalid) for depth-aware
                relations and the 3D position.
            intrinsics: a :class:`reclip_ros.core.geometry.CameraIntrinsics` for the 3D
                position (needs depth_m).
            frame_key: identifies the frame so region embeddings are reused across calls
                (None: keyed by the image content).
            options: ablation switches (:class:`GroundingOptions`).
        """
        start = time.perf_counter()
        clock = _Clock()
        options = options or GroundingOptions()
        text = expression if isinstance(expression, str) else ''

        def fail(status: Status, message: str, parse: str = '') -> GroundingResult:
            return GroundingResult.failure(text, status, message,
                                           clock.timings(_ms_since(start)), parse)

        problem = self.check_expression(expression)
        if problem:
            return fail(Status.INVALID_COMMAND, problem)
        try:
            image = validate_image(image, self.max_image_pixels)
        except ValueError as exc:
            return fail(Status.BAD_IMAGE, str(exc))
        height, width = image.shape[:2]

        t = time.perf_counter()
        try:
            parsed = self.parser.parse(expression, relations=options.relations or self.relations)
        except Exception as exc:  # noqa: BLE001 - reported as a status, never raised
            return fail(Status.INVALID_COMMAND, f'could not parse the expression: {exc}')
        clock.add('resolve', _ms_since(t))
        if not parsed.text.strip() or not parsed.names_an_object:
            why = ('parsed referring expression is empty' if not parsed.text.strip() else
                   'no word of it names or places an object')
            return fail(Status.INVALID_COMMAND,
                        f'no object to ground was found in the command ({why}): '
                        f'{expression[:200]!r}')
        parse_text = parsed.describe()

        t = time.perf_counter()
        try:
            proposal_boxes, dropped = self._proposals(image, boxes, frame_key)
        except ValueError as exc:
            return fail(Status.NO_PROPOSALS, f'bad proposal boxes: {exc}', parse_text)
        except Exception as exc:  # noqa: BLE001
            LOGGER.exception('proposal source failed')
            return fail(Status.ERROR, f'proposal source failed: {exc}', parse_text)
        clock.add('proposals', _ms_since(t))
        if not proposal_boxes:
            if boxes is None and self.proposals is None:
                why = 'no boxes were given and no detector is configured'
            elif boxes is None:
                why = 'the detector found no objects'
            else:
                why = (f'all {dropped} given boxes lie outside the {width}x{height} image'
                       if dropped else 'the list of boxes is empty')
            return fail(Status.NO_PROPOSALS, why, parse_text)

        notes: List[str] = []
        if len(proposal_boxes) > self.max_proposals:
            notes.append(f'{len(proposal_boxes) - self.max_proposals} of '
                          f'{len(proposal_boxes)} proposal boxes left out (max_proposals='
                          f'{self.max_proposals})')
            proposal_boxes = proposal_boxes[:self.max_proposals]
        box_depths = None
        if depth_m is not None:
            box_depths, depth_note = self._box_depths(depth_m, proposal_boxes, width, height)
            if depth_note:
                notes.append(depth_note)
                depth_m = None

        try:
            probs = self._score(image, expression, parsed, proposal_boxes, box_depths,
                                frame_key, options, clock)
        except Exception as exc:  # noqa: BLE001
            LOGGER.exception('grounding failed')
            return fail(Status.ERROR, f'{type(exc).__name__}: {exc}', parse_text)

        order = np.argsort(-probs, kind='stable')
        candidates = tuple(Candidate(proposal_boxes[i], float(probs[i])) for i in order)
        best = candidates[0]
        position = None
        if depth_m is not None and intrinsics is not None:
            from reclip_ros.core.geometry import lift_box_center
            position = lift_box_center(best.box, depth_m, intrinsics, self.center_offset)
            if position is None:
                notes.append('no valid depth inside the chosen box')
        if dropped:
            notes.append(f'{dropped} proposal boxes outside the image were ignored')
        return GroundingResult(
            expression=text, status=Status.OK, message='; '.join(notes), box=best.box,
            confidence=best.score, candidates=candidates, parse=parse_text,
            timings=clock.timings(_ms_since(start)), position=position)

    # -- internals ---------------------------------------------------------------------

    def _proposals(self, image: np.ndarray, boxes: Optional[Sequence],
                   frame_key: Optional[Hashable] = None) -> Tuple[List[Box], int]:
        height, width = image.shape[:2]
        if boxes is None:
            if self.proposals is None:
                return [], 0
            boxes = self._detect(image, frame_key)
        return prepare_boxes(boxes, width, height)

    def _detect(self, image: np.ndarray, frame_key: Optional[Hashable]) -> List[Box]:
        if frame_key is None:
            return self.proposals.propose(image)
        key = (frame_key, image.shape)
        with self._detections_lock:
            if key in self._detections:
                self._detections.move_to_end(key)
                return list(self._detections[key])
        boxes = list(self.proposals.propose(image))
        with self._detections_lock:
            self._detections[key] = tuple(boxes)
            while len(self._detections) > DETECTION_CACHE_FRAMES:
                self._detections.popitem(last=False)
        return boxes

    #: The expression of :meth:`warm_up`: a relation, so the parser, both entities' text
    #: path and the resolver all run once.
    WARM_UP_EXPRESSION = 'the red block to the left of the blue block'

    def warm_up(self) -> float:
        """Ground one expression on a small synthetic frame; return the milliseconds taken.

        Called once when the models are loaded (the node's configure), so the first command
        pays none of the first-call costs: spaCy's pipeline, the tokenizers, torch's first
        forward pass of every model and the detector's. Nothing of it is kept: the frame
        has no key (no frame cache entry) and the warm-up phrase's text embeddings are
        evicted like any other. Raises what :meth:`ground` would not report as a status.
        """
        start = time.perf_counter()
        image = np.full((64, 96, 3), 235, np.uint8)
        image[16:48, 10:34] = (220, 30, 30)
        image[20:52, 58:82] = (30, 40, 220)
        methods = tuple(getattr(self.scorer, 'methods', ()))
        result = self.ground(image, self.WARM_UP_EXPRESSION,
                             boxes=[Box(10, 16, 24, 32), Box(58, 20, 24, 32)],
                             options=GroundingOptions(methods=methods) if methods else None)
        if result.status == Status.ERROR:
            raise ReclipError(f'warm-up grounding failed: {result.message}')
        if self.proposals is not None:
            self.proposals.propose(image)
        return _ms_since(start)

    def precompute(self, image: np.ndarray, boxes: Optional[Sequence] = None,
                   frame_key: Optional[Hashable] = None,
                   interrupt: Optional[Callable[[], bool]] = None) -> bool:
        """Do the text-independent work of a frame before a command arrives.

        Proposes (with the detector when *boxes* is None) and encodes every isolated
        proposal into the frame cache, exactly as :meth:`ground` would for the same frame,
        so a command on it pays only the text path. Returns True when the frame is encoded;
        False when there is nothing to encode, the image is unusable, or *interrupt*
        returned True between batches (nothing is cached then). Never raises.
        """
        try:
            image = validate_image(image, self.max_image_pixels)
            proposal_boxes, _ = self._proposals(image, boxes, frame_key)
            if not proposal_boxes:
                return False
            self.scorer.encode_frame(image, proposal_boxes[:self.max_proposals],
                                     frame_key=frame_key, interrupt=interrupt)
            return True
        except Interrupted:
            return False
        except Exception:  # noqa: BLE001 - a command on this frame will report the problem
            LOGGER.debug('precompute failed', exc_info=True)
            return False

    @staticmethod
    def _box_depths(depth_m: np.ndarray, boxes: Sequence[Box], width: int,
                    height: int) -> Tuple[Optional[np.ndarray], str]:
        from reclip_ros.core.geometry import box_depths
        depth = np.asarray(depth_m)
        if depth.ndim != 2 or depth.shape != (height, width):
            return None, (f'depth image ignored: its size {depth.shape[::-1]} differs from '
                          f'the colour image {width}x{height}')
        return box_depths(depth, boxes), ''

    def _score(self, image: np.ndarray, expression: str, parsed, boxes: List[Box],
               box_depths: Optional[np.ndarray], frame_key: Optional[Hashable],
               options: GroundingOptions, clock: _Clock) -> np.ndarray:
        frame = self.scorer.encode_frame(image, boxes, frame_key=frame_key)
        if not frame.from_cache:
            clock.add('isolation', frame.isolation_ms)
            clock.add('image_encoding', frame.image_encoding_ms)
        height, width = image.shape[:2]
        areas = np.array([b.area for b in boxes], dtype=np.float64)
        size_prior = self.size_prior if options.size_prior is None else options.size_prior
        methods = tuple(options.methods)
        text_ms_before = self.scorer.text_encoding_ms_total
        t = time.perf_counter()

        def scores_in(view: Tuple[str, ...], prior: float) -> Callable[[str], np.ndarray]:
            """Box probabilities of a phrase, scored by the isolations *view*."""
            def score(phrase: str) -> np.ndarray:
                logits = self.scorer.logits(frame, phrase, methods=view)
                return softmax_with_size_prior(logits, areas, float(width * height), prior)
            return score

        score_fn = scores_in(methods, 0.0)
        root_score_fn = scores_in(methods, size_prior)
        if options.use_relations and parsed.has_keywords:
            # which boxes are instances of a noun is decided with the crop view too
            instance_score_fn = None
            if CROP in methods:
                instance_score_fn = score_fn if methods == (CROP,) else scores_in((CROP,), 0.0)
            probs = self.resolver.resolve(parsed, boxes, score_fn, box_depths=box_depths,
                                          image_size=(width, height),
                                          root_score_fn=root_score_fn,
                                          instance_score_fn=instance_score_fn)
        else:
            probs = root_score_fn(parsed.text)
        text_ms = self.scorer.text_encoding_ms_total - text_ms_before
        clock.add('text_encoding', text_ms)
        clock.add('resolve', max(_ms_since(t) - text_ms, 0.0))
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(boxes),) or not np.all(np.isfinite(probs)):
            raise ReclipError(f'resolver returned an invalid distribution {probs!r}')
        total = probs.sum()
        return probs / total if total > 0 else np.full(len(boxes), 1.0 / len(boxes))


