"""Proposal isolation (ReCLIP section 1): crop to the box, or blur everything but the box.

All functions take and return ``uint8`` RGB arrays of shape (H, W, 3). The full-frame
blur is computed once per frame with :func:`blur_frame` and shared by every box.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from reclip_ros.core.config import (DEFAULT_BLUR_SIGMA, ISOLATION_CHOICES,  # noqa: F401
                                    ISOLATION_METHODS)
from reclip_ros.core.types import Box


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    h, w = image.shape[:2]
    k = int(2 * round(3 * sigma) + 1)
    kx = max(min(k, 2 * ((w - 1) // 2) + 1), 1)
    ky = max(min(k, 2 * ((h - 1) // 2) + 1), 1)
    return cv2.GaussianBlur(image, (kx, ky), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT_101)


def blur_frame(image: np.ndarray, sigma: float = DEFAULT_BLUR_SIGMA) -> np.ndarray:
    """Gaussian-blur the whole image with standard deviation *sigma* (pixels).

    Large sigmas are computed on a downsampled frame (so that the blur there has a sigma
    of about 4 pixels) and upsampled bilinearly: for the paper's sigma of 100 this is
    about 50x faster than a full-resolution 601-tap kernel and differs from it by a
    few grey levels, far below what the blur is meant to remove. sigma <= 0 returns a copy.
    """
    if sigma <= 0:
        return image.copy()
    h, w = image.shape[:2]
    factor = int(sigma // 4)
    factor = min(factor, max(min(h, w) // 8, 1))
    if factor <= 1:
        return _gaussian(image, sigma)
    small = cv2.resize(image, (max(w // factor, 1), max(h // factor, 1)),
                       interpolation=cv2.INTER_AREA)
    small = _gaussian(small, sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def isolate_crop(image: np.ndarray, box: Box) -> np.ndarray:
    """Return the image cropped exactly to *box* (clipped to the image, >= 1 pixel)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box.pixel_bounds(w, h)
    return image[y1:y2, x1:x2]


def isolate_blur(image: np.ndarray, blurred: np.ndarray, box: Box) -> np.ndarray:
    """Return *blurred* with the original pixels of *box* pasted back (only the box sharp)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box.pixel_bounds(w, h)
    out = blurred.copy()
    out[y1:y2, x1:x2] = image[y1:y2, x1:x2]
    return out


def isolate_all(image: np.ndarray, boxes: Sequence[Box],
                methods: Sequence[str] = ISOLATION_METHODS,
                blur_sigma: float = DEFAULT_BLUR_SIGMA) -> dict:
    """Isolate every box with every method; the blur is computed once for the frame.

    Returns ``{method: [isolated image per box]}``.
    """
    unknown = set(methods) - set(ISOLATION_METHODS)
    if unknown:
        raise ValueError(f'unknown isolation methods {sorted(unknown)}; use {ISOLATION_METHODS}')
    out = {}
    if 'crop' in methods:
        out['crop'] = [isolate_crop(image, b) for b in boxes]
    if 'blur' in methods:
        blurred = blur_frame(image, blur_sigma)
        out['blur'] = [isolate_blur(image, blurred, b) for b in boxes]
    return out


#: PIL's resize filters by the number a ``preprocessor_config.json`` gives as ``resample``.
_PIL_FILTERS = {0: Image.Resampling.NEAREST, 1: Image.Resampling.LANCZOS,
                2: Image.Resampling.BILINEAR, 3: Image.Resampling.BICUBIC,
                4: Image.Resampling.BOX, 5: Image.Resampling.HAMMING}
BICUBIC = 3


def resize_square(image: np.ndarray, size: int, resample: int = BICUBIC) -> np.ndarray:
    """Resize to size x size ignoring aspect ratio (the ReCLIP code's default).

    The resize is PIL's with the checkpoint's filter (*resample*, PIL numbering; bicubic by
    default), which is what CLIP's preprocessing and ``CLIPImageProcessor`` do: the filter is
    widened when the image shrinks (antialiasing), unlike OpenCV's bicubic interpolation.
    """
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    pil = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(pil.resize((size, size), resample=_PIL_FILTERS.get(int(resample),
                                                                           BICUBIC)))


def to_model_input(images: Sequence[np.ndarray], size: int, mean: Sequence[float],
                   std: Sequence[float], resample: int = BICUBIC) -> np.ndarray:
    """Square-resize and normalise isolated images into a float32 NCHW batch."""
    return normalise_batch([resize_square(im, size, resample) for im in images], mean, std)


def normalise_batch(resized: Sequence[np.ndarray], mean: Sequence[float],
                    std: Sequence[float]) -> np.ndarray:
    """Normalise square-resized uint8 RGB images into a float32 NCHW batch."""
    batch = np.stack(resized).astype(np.float32) / 255.0
    batch = (batch - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
