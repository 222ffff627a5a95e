"""Isolated-proposal scoring (ReCLIP section 1), computed once per frame.

For one frame, :meth:`RegionScorer.encode_frame` blurs the image once, isolates every box
with every method (crop, blur), and embeds all isolated images with each model in one
batched pass (split into chunks of ``batch_size`` to bound memory). The embeddings are
cached per frame, and text embeddings per (model, prompt), so every further expression or
noun chunk on the same frame costs one text encoding (itself cached) and one matrix product
per model and method.

Scores are CLIP logits: ``logit_scale * cos(image, text) + logit_bias`` summed over the
isolation methods and the ensembled models; a softmax over boxes gives probabilities.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from reclip_ros.core.images import validate_image
from reclip_ros.core.isolation import (DEFAULT_BLUR_SIGMA, ISOLATION_METHODS, blur_frame,
                                       isolate_all, isolate_crop, normalise_batch,
                                       resize_blur_isolations, resize_square)
from reclip_ros.core.types import Box, Interrupted

PROMPT_PREFIX = 'a photo of '


@dataclass(frozen=True)
class FrameEncoding:
    """The image embeddings of every isolated proposal of one frame.

    Attributes:
        key: cache key (frame key or image hash, image shape, the integer pixel bounds of
            the boxes, methods, blur sigma).
        boxes: the proposals as given to this call, in the order of the embedding rows.
        methods: isolation methods encoded.
        embeddings: ``{(model_index, method): tensor (N, D)}``, L2-normalised float32.
        isolation_ms: time spent by this call on blur, isolation, resize and normalisation
            (0 when served from the cache).
        image_encoding_ms: time spent by this call in the image encoders (0 from cache).
        from_cache: True when no image work was done for this call.
    """

    key: Tuple
    boxes: Tuple[Box, ...]
    methods: Tuple[str, ...]
    embeddings: Dict[Tuple[int, str], torch.Tensor] = field(repr=False)
    isolation_ms: float = 0.0
    image_encoding_ms: float = 0.0
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.boxes)


def image_digest(image: np.ndarray) -> str:
    """A cheap content hash of an image (shape, dtype and bytes), for frame-cache keys."""
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(repr((image.shape, image.dtype.str)).encode())
    hasher.update(np.ascontiguousarray(image).data)
    return hasher.hexdigest()


def _as_box(value) -> Box:
    if isinstance(value, Box):
        return value
    return Box.from_list(value)


def _input_spec(model) -> Tuple[int, Tuple[float, ...], Tuple[float, ...], int]:
    """What preprocessing a model needs: size, mean, std and resize filter."""
    return (model.image_size, tuple(model.image_mean), tuple(model.image_std),
            int(getattr(model, 'resample', 3)))


class _LRU:
    """A bounded least-recently-used mapping (not thread-safe by itself)."""

    def __init__(self, capacity: int):
        self.capacity = max(int(capacity), 0)
        self._data: OrderedDict = OrderedDict()

    def get(self, key):
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        if self.capacity == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class RegionScorer:
    """Score proposals of a frame against texts with one CLIP model or an ensemble.

    Args:
        models: ``ClipModel`` objects (anything with ``encode_images``, ``encode_texts``,
            ``image_size``, ``image_mean``, ``image_std``, ``logit_scale``, ``logit_bias``).
        blur_sigma: Gaussian sigma in pixels of the blur isolation (paper: 100).
        methods: isolation methods encoded per frame, subset of ``('crop', 'blur')``.
        batch_size: images per forward pass (bounds memory); >= 1.
        text_cache_size: text embeddings kept per (model, prompt); 0 disables.
        frame_cache_size: frames whose embeddings are kept; 0 disables.

    Thread safety: the caches and counters are guarded by a lock, so one thread may score
    while others read :meth:`stats` or ``text_encoding_ms_total``.
    """

    def __init__(self, models: Sequence, blur_sigma: float = DEFAULT_BLUR_SIGMA,
                 methods: Sequence[str] = ISOLATION_METHODS, batch_size: int = 32,
                 text_cache_size: int = 4096, frame_cache_size: int = 4):
        self.models = tuple(models)
        if not self.models:
            raise ValueError('RegionScorer needs at least one model')
        self.methods = tuple(methods)
        unknown = set(self.methods) - set(ISOLATION_METHODS)
        if unknown or not self.methods:
            raise ValueError(f'isolation methods must be a non-empty subset of '
                             f'{ISOLATION_METHODS}, got {tuple(methods)}')
        if int(batch_size) < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        if not float(blur_sigma) >= 0:
            raise ValueError(f'blur_sigma must be >= 0, got {blur_sigma}')
        self.blur_sigma = float(blur_sigma)
        self.batch_size = int(batch_size)
        self._lock = threading.RLock()
        self._frames = _LRU(frame_cache_size)
        self._texts = _LRU(text_cache_size)
        self.text_encoding_ms_total = 0.0
        self.image_encoding_ms_total = 0.0
        self.isolation_ms_total = 0.0
        self.frames_encoded = 0
        self.frame_cache_hits = 0
        self.texts_encoded = 0
        self.text_cache_hits = 0

    # ------------------------------------------------------------------ text
    @staticmethod
    def prompt(text: str) -> str:
        """The CLIP prompt of a referring expression: ``'a photo of ' + text.lower()``."""
        return PROMPT_PREFIX + str(text).strip().lower()

    def text_embeddings(self, texts: Sequence[str]) -> List[torch.Tensor]:
        """Embeddings of the prompts of *texts*, one ``(T, D)`` tensor per model.

        Cached prompts are reused; the others are encoded in one batch per model and their
        time is added to ``text_encoding_ms_total``.
        """
        if any(not str(t).strip() for t in texts):
            raise ValueError('cannot score an empty expression')
        prompts = [self.prompt(t) for t in texts]
        out = []
        for index, model in enumerate(self.models):
            rows: List[Optional[torch.Tensor]] = []
            with self._lock:
                for p in prompts:
                    rows.append(self._texts.get((index, p)))
            missing = sorted({p for p, row in zip(prompts, rows) if row is None})
            if missing:
                start = time.perf_counter()
                encoded = model.encode_texts(missing)
                elapsed = (time.perf_counter() - start) * 1000.0
                # each row owns its memory (a view would keep the whole batch alive), so the
                # cache holds exactly text_cache_size rows of the embedding size
                fresh = {p: row.clone() for p, row in zip(missing, encoded)}
                with self._lock:
                    self.text_encoding_ms_total += elapsed
                    self.texts_encoded += len(missing)
                    for p, emb in fresh.items():
                        self._texts.put((index, p), emb)
                rows = [fresh[p] if row is None else row for p, row in zip(prompts, rows)]
            with self._lock:
                self.text_cache_hits += len(prompts) - len(missing)
            out.append(torch.stack(rows) if rows else torch.zeros((0, 0)))
        return out

    # ----------------------------------------------------------------- image
    def cache_sizes(self) -> Dict[str, int]:
        """Entries and capacity of the text and frame caches (for diagnostics)."""
        with self._lock:
            return {'text_cache_entries': len(self._texts),
                    'text_cache_capacity': self._texts.capacity,
                    'frame_cache_entries': len(self._frames),
                    'frame_cache_capacity': self._frames.capacity}

    def frame_cache_key(self, image: np.ndarray, boxes: Sequence[Box],
                        frame_key: Optional[Hashable] = None) -> Tuple:
        """The cache key of (frame, boxes): *frame_key* if given, else a hash of the image."""
        ident = ('key', frame_key) if frame_key is not None else ('hash', image_digest(image))
        # The isolated images depend only on the integer pixel bounds of each box, so boxes
        # that differ by rounding (e.g. after clipping) share their embeddings.
        h, w = image.shape[:2]
        box_key = tuple(b.pixel_bounds(w, h) for b in boxes)
        return (ident, tuple(image.shape), box_key, self.methods, self.blur_sigma)

    def isolated_images(self, image: np.ndarray, boxes: Sequence[Box]) -> Dict[str, list]:
        """Every box isolated with every method; the full-frame blur is computed once."""
        return isolate_all(image, boxes, self.methods, self.blur_sigma)

    def model_inputs(self, image: np.ndarray, boxes: Sequence[Box]) -> Dict[tuple, np.ndarray]:
        """Every box isolated with every method, as one normalised batch per input spec.

        Rows are method-major (all crops, then all blurs). Each crop is resized to the
        models' input size as soon as it is made, and a blur isolation is never built at
        full size (:func:`resize_blur_isolations` recomputes only the resized pixels near
        its box): memory does not grow with the frame size times the number of boxes.
        """
        specs = list(dict.fromkeys(_input_spec(m) for m in self.models))
        resized: Dict[tuple, list] = {spec: [] for spec in specs}
        blurred = blur_frame(image, self.blur_sigma) if 'blur' in self.methods else None
        for method in self.methods:
            for spec in specs:
                if method == 'crop':
                    resized[spec] += [resize_square(isolate_crop(image, box), spec[0], spec[3])
                                      for box in boxes]
                else:
                    resized[spec] += resize_blur_isolations(image, blurred, boxes, spec[0],
                                                            spec[3])
        return {spec: normalise_batch(resized[spec], spec[1], spec[2]) for spec in specs}

    def chunk_size(self, total: int) -> int:
        """Images per forward pass for *total* images: balanced chunks of <= batch_size.

        40 images with batch_size 32 go as 20 + 20 rather than 32 + 8: the same number of
        passes, without a small tail batch that uses the CPU threads poorly.
        """
        passes = max(-(-total // self.batch_size), 1)
        return max(-(-total // passes), 1)

    def encode_frame(self, image_rgb_uint8: np.ndarray, boxes: Sequence,
                     frame_key: Optional[Hashable] = None,
                     interrupt: Optional[Callable[[], bool]] = None) -> FrameEncoding:
        """Embed every isolated proposal of a frame with every model (cached per frame).

        Args:
            image_rgb_uint8: (H, W, 3) uint8 RGB image.
            boxes: ``Box`` objects (or ``[x, y, w, h]`` lists) in pixels.
            frame_key: any hashable naming the frame (e.g. stamp + frame id); when None, the
                image bytes are hashed.
            interrupt: asked before each batch; True gives up (a precompute pass
                yields to a command within one batch). Nothing is cached then.

        Raises:
            ValueError: bad image or box.
            Interrupted: *interrupt* returned True.
        """
        image = validate_image(image_rgb_uint8, min_side=1, convert=False)
        box_tuple = tuple(_as_box(b) for b in boxes)
        key = self.frame_cache_key(image, box_tuple, frame_key)
        with self._lock:
            cached = self._frames.get(key)
            if cached is not None:
                self.frame_cache_hits += 1
                return replace(cached, boxes=box_tuple, isolation_ms=0.0,
                               image_encoding_ms=0.0, from_cache=True)

        start = time.perf_counter()
        batches = self.model_inputs(image, box_tuple) if box_tuple else {}
        isolation_ms = (time.perf_counter() - start) * 1000.0

        start = time.perf_counter()
        embeddings: Dict[Tuple[int, str], torch.Tensor] = {}
        n = len(box_tuple)
        for index, model in enumerate(self.models):
            spec = _input_spec(model)
            if n == 0:
                for m in self.methods:
                    embeddings[(index, m)] = torch.zeros((0, 0))
                continue
            batch = batches[spec]
            step = self.chunk_size(batch.shape[0])
            parts = []
            for s in range(0, batch.shape[0], step):
                if interrupt is not None and interrupt():
                    raise Interrupted('frame encoding given up for a waiting command')
                parts.append(model.encode_images(batch[s:s + step]))
            feats = torch.cat(parts) if len(parts) > 1 else parts[0]
            for k, m in enumerate(self.methods):
                embeddings[(index, m)] = feats[k * n:(k + 1) * n]
        encoding_ms = (time.perf_counter() - start) * 1000.0

        encoding = FrameEncoding(key=key, boxes=box_tuple, methods=self.methods,
                                 embeddings=embeddings, isolation_ms=isolation_ms,
                                 image_encoding_ms=encoding_ms, from_cache=False)
        with self._lock:
            self._frames.put(key, encoding)
            self.frames_encoded += 1
            self.isolation_ms_total += isolation_ms
            self.image_encoding_ms_total += encoding_ms
        return encoding

    # ---------------------------------------------------------------- scores
    def _methods_for(self, frame: FrameEncoding, methods: Optional[Sequence[str]]):
        chosen = tuple(frame.methods if methods is None else methods)
        missing = [m for m in chosen if m not in frame.methods]
        if missing or not chosen:
            raise ValueError(f'methods {chosen} not available; this frame was encoded with '
                             f'{frame.methods}')
        return chosen

    def logits_many(self, frame: FrameEncoding, texts: Sequence[str],
                    methods: Optional[Sequence[str]] = None) -> np.ndarray:
        """Summed logits of several texts at once: array (len(texts), N)."""
        chosen = self._methods_for(frame, methods)
        texts = list(texts)
        n = len(frame.boxes)
        total = np.zeros((len(texts), n), dtype=np.float64)
        if n == 0 or not texts:
            return total
        for index, (model, text_emb) in enumerate(zip(self.models,
                                                      self.text_embeddings(texts))):
            for m in chosen:
                cos = text_emb @ frame.embeddings[(index, m)].T
                total += (model.logit_scale * cos + model.logit_bias).double().numpy()
        return total

    def logits(self, frame: FrameEncoding, text: str,
               methods: Optional[Sequence[str]] = None) -> np.ndarray:
        """Summed logits of *text* for every box: array (N,).

        Sum over *methods* (default: all encoded) and models of
        ``logit_scale * cos(image, text) + logit_bias`` for the prompt ``prompt(text)``.
        """
        return self.logits_many(frame, [text], methods)[0]

    def probabilities(self, frame: FrameEncoding, text: str,
                      methods: Optional[Sequence[str]] = None) -> np.ndarray:
        """Softmax over boxes of :meth:`logits`."""
        z = self.logits(frame, text, methods)
        if z.size == 0:
            return z
        z = np.exp(z - z.max())
        return z / z.sum()

    # ------------------------------------------------------------ bookkeeping
    def stats(self) -> dict:
        """Counters and cumulative times (ms) since construction."""
        with self._lock:
            return {
                'frames_encoded': self.frames_encoded,
                'frame_cache_hits': self.frame_cache_hits,
                'frames_cached': len(self._frames),
                'texts_encoded': self.texts_encoded,
                'text_cache_hits': self.text_cache_hits,
                'texts_cached': len(self._texts),
                'isolation_ms_total': self.isolation_ms_total,
                'image_encoding_ms_total': self.image_encoding_ms_total,
                'text_encoding_ms_total': self.text_encoding_ms_total,
            }

    def clear_caches(self) -> None:
        """Drop every cached frame and text embedding."""
        with self._lock:
            self._frames.clear()
            self._texts.clear()

    def close(self, unload_models: bool = True) -> None:
        """Drop the caches and (by default) unload the models, freeing their memory."""
        self.clear_caches()
        if unload_models:
            for model in self.models:
                unload = getattr(model, 'unload', None)
                if unload is not None:
                    unload()
