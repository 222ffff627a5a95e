"""Proposal sources: where the candidate boxes that ReCLIP ranks come from.

A proposal source has a ``name`` and ``propose(image_rgb) -> list[Box]``. Two are provided:

- :class:`GivenBoxes`: boxes supplied by the caller (ground-truth boxes, another detector's
  output), returned as given unless filtering is asked for;
- :class:`DetectorProposals`: a transformers object detector. OWLv2 / OWL-ViT checkpoints
  are used class-agnostically (OWLv2 through its objectness head, OWL-ViT v1, which has
  none, through a generic "an object" query); any ``AutoModelForObjectDetection``
  checkpoint (DETR, RT-DETR, YOLOS, ...) contributes its boxes of every class.

:func:`filter_proposals` (min size, NMS, top-k) is plain numpy and usable on its own.
An image without proposals gives an empty list; that is not an error.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import numpy as np

from reclip_ros.core.config import DEFAULT_DETECTOR, DETECTOR_AUTO  # noqa: F401
from reclip_ros.core.images import validate_image
from reclip_ros.core.protocols import ProposalSource  # noqa: F401 - part of this API
from reclip_ros.core.types import Box, DeviceError, ModelLoadError

LOGGER = logging.getLogger(__name__)

#: ``detector: auto`` picks a detector sized for the device: OWLv2 base/16 (960 px, the
#: better proposals) on CUDA; OWL-ViT base/32 (768 px, about 11x less compute) on CPU,
#: where OWLv2 takes about 9 s per frame on 2 cores (``reclip bench --random-detectors``).
GPU_DETECTOR = 'google/owlv2-base-patch16-ensemble'
CPU_DETECTOR = 'google/owlvit-base-patch32'


def resolve_detector(name: str, device: str) -> str:
    """The detector id for *name* on the resolved *device* ('auto' picks by device)."""
    if str(name).strip().lower() != DETECTOR_AUTO:
        return name
    return GPU_DETECTOR if str(device).startswith('cuda') else CPU_DETECTOR
# Query used for OWL-ViT v1, which has no class-agnostic objectness head.
GENERIC_OBJECT_QUERY = 'a photo of an object'


# -- filtering -------------------------------------------------------------------------------


def _as_xyxy(boxes: Sequence) -> np.ndarray:
    """Return an (N, 4) float64 array of corners from Box objects or [x, y, w, h] rows."""
    rows = []
    for b in boxes:
        if isinstance(b, Box):
            rows.append(b.to_xyxy())
        else:
            values = [float(v) for v in b]
            if len(values) != 4:
                raise ValueError(f'a box needs 4 numbers [x, y, width, height], got {b!r}')
            x, y, w, h = values
            rows.append((x, y, x + w, y + h))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def nms_indices(xyxy: np.ndarray, order: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        xyxy: (N, 4) corners.
        order: indices into *xyxy*, highest priority first (only these are considered).
        iou_threshold: a box is dropped when its IoU with an already kept box is above this.

    Returns:
        The kept indices, in priority order.
    """
    xyxy = np.asarray(xyxy, dtype=np.float64)
    order = np.asarray(order, dtype=np.int64)
    areas = np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)
    keep: List[int] = []
    remaining = order
    while remaining.size:
        i = int(remaining[0])
        keep.append(i)
        rest = remaining[1:]
        if not rest.size:
            break
        ix = np.clip(np.minimum(xyxy[i, 2], xyxy[rest, 2]) - np.maximum(xyxy[i, 0], xyxy[rest, 0]),
                     0, None)
        iy = np.clip(np.minimum(xyxy[i, 3], xyxy[rest, 3]) - np.maximum(xyxy[i, 1], xyxy[rest, 1]),
                     0, None)
        inter = ix * iy
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        remaining = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def filter_proposal_indices(boxes: Sequence, scores: Optional[Sequence[float]] = None,
                            nms_iou: Optional[float] = None, min_size: float = 0.0,
                            top_k: Optional[int] = None) -> np.ndarray:
    """Like :func:`filter_proposals` but return the indices of the kept boxes.

    The indices are ordered by decreasing score (by input order when *scores* is None).
    """
    xyxy = _as_xyxy(boxes)
    n = len(xyxy)
    if scores is None:
        order = np.arange(n)
    else:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.shape[0] != n:
            raise ValueError(f'got {n} boxes but {s.shape[0]} scores')
        s = np.where(np.isfinite(s), s, -np.inf)
        order = np.argsort(-s, kind='stable')
    if n == 0:
        return order.astype(np.int64)
    width = xyxy[:, 2] - xyxy[:, 0]
    height = xyxy[:, 3] - xyxy[:, 1]
    finite = np.all(np.isfinite(xyxy), axis=1)
    big_enough = finite & (width > 0) & (height > 0) & (width >= min_size) & (height >= min_size)
    order = order[big_enough[order]]
    if nms_iou is not None:
        order = nms_indices(xyxy, order, float(nms_iou))
    if top_k is not None:
        order = order[:max(int(top_k), 0)]
    return order.astype(np.int64)


def filter_proposals(boxes: Sequence, scores: Optional[Sequence[float]] = None,
                     nms_iou: Optional[float] = None, min_size: float = 0.0,
                     top_k: Optional[int] = None) -> List[Box]:
    """Filter candidate boxes: minimum size, then non-maximum suppression, then top-k.

    Args:
        boxes: :class:`Box` objects or ``[x, y, width, height]`` rows, in pixels.
        scores: one confidence per box; None keeps the input order as the priority.
        nms_iou: suppress a box whose IoU with a higher-priority kept box exceeds this
            (None: no NMS).
        min_size: drop boxes whose width or height is below this many pixels (boxes with
            non-positive or non-finite size are always dropped).
        top_k: keep at most this many (None: all).

    Returns:
        The kept boxes, highest score first.
    """
    if len(boxes) == 0:
        return []
    keep = filter_proposal_indices(boxes, scores, nms_iou, min_size, top_k)
    xyxy = _as_xyxy(boxes)
    out = []
    for i in keep:
        b = boxes[int(i)]
        out.append(b if isinstance(b, Box) else Box.from_xyxy(*xyxy[int(i)]))
    return out


# -- sources ---------------------------------------------------------------------------------


class GivenBoxes:
    """Boxes supplied by the caller, returned unchanged for every image.

    Args:
        boxes: :class:`Box` objects or ``[x, y, width, height]`` rows.
        nms_iou, min_size, top_k: optional filtering (see :func:`filter_proposals`); with
            the defaults the boxes are used exactly as given, in the given order.
        name: label of this source in logs.

    Raises:
        ValueError: a box is malformed (not 4 finite numbers, non-positive size).
    """

    def __init__(self, boxes: Sequence, nms_iou: Optional[float] = None, min_size: float = 0.0,
                 top_k: Optional[int] = None, name: str = 'given') -> None:
        self.name = name
        self.boxes: Tuple[Box, ...] = tuple(
            b if isinstance(b, Box) else Box.from_list(b) for b in boxes)
        self.nms_iou = nms_iou
        self.min_size = float(min_size)
        self.top_k = top_k

    def propose(self, image_rgb: np.ndarray) -> List[Box]:
        """Return the given boxes (filtered only if filtering was requested)."""
        if self.nms_iou is None and self.min_size <= 0 and self.top_k is None:
            return list(self.boxes)
        return filter_proposals(self.boxes, None, self.nms_iou, self.min_size, self.top_k)


class DetectorProposals:
    """Class-agnostic proposals from a transformers object detector.

    Args:
        model: hub id or local directory of an OWLv2 / OWL-ViT checkpoint or of any
            ``AutoModelForObjectDetection`` checkpoint; ``'auto'`` (the default) picks
            OWLv2 base/16 on CUDA and OWL-ViT base/32 on CPU (``name`` says which).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N' (see ``models.resolve_device``).
        score_threshold: minimum score (OWLv2: sigmoid of the objectness logit; other
            detectors: their class score) for a box to be proposed.
        nms_iou: IoU above which overlapping proposals are suppressed (None: no NMS).
        min_size: minimum width and height of a proposal in pixels of the original image.
        top_k: maximum number of proposals (highest scores first).
        precision: 'auto' (fp16 on CUDA, fp32 on CPU), 'fp32', 'fp16', 'bf16' or 'int8'
            (CPU: the linear layers quantised, as for CLIP models).
        local_files_only: never contact the hub (default). With False a missing model is
            downloaded.

    Raises:
        ModelLoadError: the model is not available locally, is not a detector, or has no
            safetensors weights. The message names the model and how to fetch it.
        DeviceError: CUDA was requested but is not available.
    """

    def __init__(self, model: str = DEFAULT_DETECTOR, device: str = 'auto',
                 score_threshold: float = 0.1, nms_iou: Optional[float] = 0.5,
                 min_size: float = 8, top_k: Optional[int] = 30, precision: str = 'auto',
                 local_files_only: bool = True) -> None:
        import torch

        from reclip_ros.core.models import INT8, precision_name, resolve_device, resolve_precision

        self.device = resolve_device(device)
        self.name = resolve_detector(str(model), self.device)
        self.score_threshold = float(score_threshold)
        self.nms_iou = nms_iou
        self.min_size = float(min_size)
        self.top_k = top_k
        self.dtype = resolve_precision(precision, self.device)
        self.quantized = precision_name(precision) == INT8
        if self.quantized:
            from reclip_ros.core.int8 import int8_unavailable
            problem = int8_unavailable(self.device)
            if problem:
                raise DeviceError(problem)
        self._torch = torch
        self._offloaded = False
        self._load(local_files_only)

    # -- loading -----------------------------------------------------------------------------

    def _load(self, local_files_only: bool) -> None:
        from reclip_ros.core.models import hub_offline

        with hub_offline(local_files_only):
            self._load_parts(dict(local_files_only=local_files_only, trust_remote_code=False))

    def _load_parts(self, common: dict) -> None:
        from transformers import (AutoConfig, AutoImageProcessor, AutoModelForObjectDetection,
                                  AutoModelForZeroShotObjectDetection, AutoTokenizer)

        from reclip_ros.core.models import DOWNLOAD_HINT, fetch_hint

        try:
            config = AutoConfig.from_pretrained(self.name, **common)
        except OSError as exc:
            hint = DOWNLOAD_HINT if common['local_files_only'] else ''
            raise ModelLoadError(f'detector model {self.name!r} could not be loaded '
                                 f'({type(exc).__name__}: {_first_line(exc)}); '
                                 f'{fetch_hint(self.name)}{hint}') from exc
        except Exception as exc:  # noqa: BLE001 - turned into a message with a remedy
            raise ModelLoadError(f'detector model {self.name!r} could not be loaded '
                                 f'({type(exc).__name__}: {_first_line(exc)}); '
                                 f'{fetch_hint(self.name)}') from exc
        self.model_type = getattr(config, 'model_type', '')
        self._owl = self.model_type in ('owlv2', 'owlvit')
        auto = AutoModelForZeroShotObjectDetection if self._owl else AutoModelForObjectDetection
        try:
            model = auto.from_pretrained(self.name, use_safetensors=True, dtype=self.dtype,
                                         **common)
        except ValueError as exc:
            if 'Unrecognized configuration class' in str(exc):
                raise ModelLoadError(
                    f'{self.name!r} (model type {self.model_type!r}) is not an object detector '
                    'usable for proposals: give an OWLv2/OWL-ViT or an '
                    'AutoModelForObjectDetection checkpoint') from exc
            raise ModelLoadError(f'detector model {self.name!r} could not be loaded: '
                                 f'{_first_line(exc)}; {fetch_hint(self.name)}') from exc
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f'detector model {self.name!r} could not be loaded '
                                 f'({type(exc).__name__}: {_first_line(exc)}); '
                                 f'{fetch_hint(self.name)}') from exc
        self.tokenizer = None
        try:
            if self._owl:
                # Only the numbers are needed (preprocessing is done with OpenCV below), so
                # read the config instead of building a processor that wants torchvision.
                from transformers.image_processing_base import ImageProcessingMixin
                self.image_processor = None
                self._owl_preprocess = _owl_preprocess_config(
                    ImageProcessingMixin.get_image_processor_dict(self.name, **common)[0],
                    config.vision_config.image_size)
            else:
                self.image_processor = AutoImageProcessor.from_pretrained(self.name, **common)
            if self._owl and not hasattr(model, 'objectness_predictor'):
                # OWL-ViT v1 has no objectness head: it scores one generic text query.
                self.tokenizer = AutoTokenizer.from_pretrained(self.name, **common)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f'the preprocessor of detector {self.name!r} could not be '
                                 f'loaded ({type(exc).__name__}: {_first_line(exc)}); '
                                 f'{fetch_hint(self.name)}') from exc
        self.model = model.to(self.device).eval()
        if self.quantized:
            from reclip_ros.core.int8 import quantize_linears
            quantize_linears(self.model)
        if not self._owl:
            # Surface missing optional backends (torchvision, scipy) now, not per frame.
            try:
                self.image_processor(images=np.zeros((8, 8, 3), np.uint8), return_tensors='pt')
            except ImportError as exc:
                raise ModelLoadError(f'the image processor of detector {self.name!r} needs a '
                                     f'package that is not installed: {_first_line(exc)}') from exc

    def close(self) -> None:
        """Release the model (and cached GPU memory)."""
        self.model = None
        if self.device.startswith('cuda'):
            self._torch.cuda.empty_cache()

    def offload(self) -> bool:
        """Move a CUDA detector to host memory (freeing GPU memory); no-op on CPU."""
        if self.model is None or not self.device.startswith('cuda'):
            return False
        self.model.to('cpu')
        self._torch.cuda.empty_cache()
        self._offloaded = True
        return True

    def restore(self) -> bool:
        """Move an offloaded detector back to its device."""
        if self.model is None or not self._offloaded:
            return False
        self.model.to(self.device)
        self._offloaded = False
        return True

    @property
    def input_size(self) -> Optional[int]:
        """The square side, in pixels, images are resized to (None when not square/known)."""
        if self._owl:
            return int(self._owl_preprocess[0])
        size = getattr(self.image_processor, 'size', None) or {}
        side = size.get('height') or size.get('shortest_edge')
        return int(side) if side else None

    # -- inference ---------------------------------------------------------------------------

    def propose(self, image_rgb: np.ndarray) -> List[Box]:
        """Return proposals for *image_rgb* (uint8 HxWx3), best first, in its pixels."""
        boxes, _ = self.propose_with_scores(image_rgb)
        return boxes

    def propose_with_scores(self, image_rgb: np.ndarray) -> Tuple[List[Box], np.ndarray]:
        """Return the filtered proposals and their detector scores, best first."""
        if self.model is None:
            raise RuntimeError(f'detector {self.name!r} was closed')
        self.restore()
        image = validate_image(image_rgb, min_side=1)
        height, width = image.shape[:2]
        with self._torch.inference_mode():
            if self._owl:
                xyxy, scores = self._owl_boxes(image)
            else:
                xyxy, scores = self._generic(image)
        # Clip to the image (OWLv2 may predict into the square padding).
        xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, width)
        xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, height)
        above = scores >= self.score_threshold
        xyxy, scores = xyxy[above], scores[above]
        boxes = [Box.from_xyxy(*row) for row in xyxy]
        keep = filter_proposal_indices(boxes, scores, self.nms_iou, self.min_size, self.top_k)
        return [boxes[int(i)] for i in keep], scores[keep]

    def _owl_input(self, image: np.ndarray) -> Tuple[object, float, float]:
        """Preprocess for OWL models; return pixel values and the pixel scale of x and y.

        OWLv2 pads the image bottom/right to a square (zeros after rescaling to [0, 1]) and
        resizes that to the model resolution, so its box fractions refer to the square of
        side max(H, W). OWL-ViT v1 stretches the image to the square input instead. The
        resize is done with OpenCV: a Gaussian anti-aliasing filter of sigma
        (factor - 1) / 2 when shrinking, then bilinear interpolation, like the reference
        preprocessing (which needs scipy or torchvision).
        """
        height, width = image.shape[:2]
        side, mean, std = self._owl_preprocess
        pixels = image.astype(np.float32) / 255.0
        if self.model_type == 'owlv2':
            square = max(height, width)
            padded = np.zeros((square, square, 3), np.float32)
            padded[:height, :width] = pixels
            pixels = padded
            sx = sy = float(square)
        else:
            sx, sy = float(width), float(height)
        import cv2
        factor_y, factor_x = pixels.shape[0] / side, pixels.shape[1] / side
        if max(factor_x, factor_y) > 1:
            # Anti-aliasing before shrinking, sigma (factor - 1) / 2 as in the reference.
            pixels = cv2.GaussianBlur(pixels, (0, 0), sigmaX=max((factor_x - 1) / 2, 1e-3),
                                      sigmaY=max((factor_y - 1) / 2, 1e-3),
                                      borderType=cv2.BORDER_REFLECT_101)
        pixels = cv2.resize(pixels, (side, side), interpolation=cv2.INTER_LINEAR)
        pixels = (pixels - mean) / std
        tensor = self._torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
        return tensor.to(self.device, self.dtype), sx, sy

    def _owl_boxes(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Class-agnostic OWL boxes: OWLv2 objectness, or OWL-ViT v1's generic query."""
        pixel_values, sx, sy = self._owl_input(image)
        vision = self.model.config.vision_config
        interpolate = tuple(pixel_values.shape[-2:]) != (vision.image_size, vision.image_size)
        if self.tokenizer is None:
            feature_map = self.model.image_embedder(
                pixel_values=pixel_values, interpolate_pos_encoding=interpolate)[0]
            b, gh, gw, d = feature_map.shape
            features = feature_map.reshape(b, gh * gw, d)
            scores = self.model.objectness_predictor(features)[0].float().sigmoid()
            cxcywh = self.model.box_predictor(features, feature_map,
                                              interpolate_pos_encoding=interpolate)[0]
        else:
            text = self.tokenizer([GENERIC_OBJECT_QUERY], padding='max_length',
                                  truncation=True, return_tensors='pt')
            outputs = self.model(input_ids=text['input_ids'].to(self.device),
                                 attention_mask=text['attention_mask'].to(self.device),
                                 pixel_values=pixel_values,
                                 interpolate_pos_encoding=interpolate)
            scores = outputs.logits[0, :, 0].float().sigmoid()
            cxcywh = outputs.pred_boxes[0]
        cxcywh = cxcywh.float().cpu().numpy().astype(np.float64)
        xyxy = _cxcywh_to_xyxy(cxcywh) * np.array([sx, sy, sx, sy])
        return xyxy, scores.cpu().numpy().astype(np.float64)

    def _generic(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Any AutoModelForObjectDetection: boxes of all classes with their scores."""
        height, width = image.shape[:2]
        inputs = self.image_processor(images=image, return_tensors='pt')
        pixel_values = inputs['pixel_values'].to(self.device, self.dtype)
        kwargs = {}
        if 'pixel_mask' in inputs:
            kwargs['pixel_mask'] = inputs['pixel_mask'].to(self.device)
        outputs = self.model(pixel_values=pixel_values, **kwargs)
        result = self.image_processor.post_process_object_detection(
            outputs, threshold=0.0, target_sizes=[(height, width)])[0]
        return (result['boxes'].float().cpu().numpy().astype(np.float64).reshape(-1, 4),
                result['scores'].float().cpu().numpy().astype(np.float64).reshape(-1))


def _owl_preprocess_config(config: dict, default_side: int) -> Tuple[int, np.ndarray,
                                                                      np.ndarray]:
    """Input side, mean and std (shaped for HxWx3 broadcasting) from a processor config."""
    size = config.get('size') or {}
    side = default_side
    if isinstance(size, int):
        side = size
    else:
        for key in ('height', 'width', 'shortest_edge', 'longest_edge'):
            if size.get(key):
                side = int(size[key])
                break
    mean = np.asarray(config.get('image_mean', (0.48145466, 0.4578275, 0.40821073)),
                      np.float32).reshape(1, 1, 3)
    std = np.asarray(config.get('image_std', (0.26862954, 0.26130258, 0.27577711)),
                     np.float32).reshape(1, 1, 3)
    return int(side), mean, std


def _cxcywh_to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    cx, cy, w, h = (cxcywh[:, i] for i in range(4))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
