"""Image checks shared by every entry point of the core: one validator, one size limit."""

from __future__ import annotations

from typing import Optional

import numpy as np


def check_image_size(width: int, height: int, max_pixels: int) -> None:
    """Raise ValueError when a *width* x *height* image exceeds *max_pixels*."""
    if int(width) * int(height) > int(max_pixels):
        raise ValueError(f'image is {int(width)}x{int(height)} = {int(width) * int(height)} '
                         f'pixels; the limit is {int(max_pixels)} (max_image_pixels)')


def validate_image(image: object, max_pixels: Optional[int] = None, min_side: int = 2,
                   convert: bool = True) -> np.ndarray:
    """Return *image* as a contiguous uint8 (H, W, 3) RGB array, or raise ValueError.

    Args:
        max_pixels: larger images are refused (None: no limit).
        min_side: the smallest width and height accepted.
        convert: accept grey (H, W) and RGBA images, and other dtypes (floats in [0, 1] are
            scaled to 0..255, everything is clipped to 0..255); False: only uint8 (H, W, 3).
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f'image must be a numpy array, got {type(image).__name__}')
    if image.ndim >= 2 and max_pixels is not None:
        check_image_size(image.shape[1], image.shape[0], max_pixels)
    if not convert:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'image must be RGB of shape (H, W, 3), got {image.shape}')
        if image.dtype != np.uint8:
            raise ValueError(f'image must be uint8, got {image.dtype}')
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f'image must be HxWx3 RGB, got shape {image.shape}')
    if image.shape[0] < min_side or image.shape[1] < min_side:
        raise ValueError(f'image is too small: {image.shape[1]}x{image.shape[0]}')
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            image = np.clip(image * 255.0, 0, 255)
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)
