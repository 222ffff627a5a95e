"""Annotated images of grounding results (the node's debug image, ``reclip ground --save``).

:func:`draw_result` returns a copy of the RGB image with the chosen box drawn thick and
labelled with the expression and its confidence, the next candidates drawn thin with their
scores, and, for a result that is not OK, its status and message written across the top.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

from reclip_ros.core.types import Box, GroundingResult

# RGB colours.
CHOSEN_COLOR = (0, 230, 0)
CANDIDATE_COLORS = ((255, 200, 0), (0, 200, 255), (255, 0, 255), (255, 128, 0))
FAILURE_COLOR = (220, 0, 0)
TEXT_COLOR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
MAX_LABEL_CHARS = 80


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only: replace anything else by '?'."""
    return ''.join(c if 32 <= ord(c) < 127 else '?' for c in text)


def _style(image: np.ndarray) -> Tuple[int, float, int]:
    """Line thickness, font scale and font thickness that suit the image size."""
    side = min(image.shape[:2])
    thick = max(2, int(round(side / 160)))
    scale = min(max(side / 900.0, 0.35), 1.5)
    return thick, scale, max(1, int(round(scale * 1.6)))


def _fit(text: str, image_width: int, scale: float, font_thickness: int) -> str:
    """Shorten *text* (with '...') so it fits into *image_width* pixels."""
    text = _ascii(text)
    if len(text) > MAX_LABEL_CHARS:
        text = text[:MAX_LABEL_CHARS - 3] + '...'
    while len(text) > 4:
        (w, _), _ = cv2.getTextSize(text, _FONT, scale, font_thickness)
        if w <= image_width - 4:
            break
        text = text[:max(len(text) - 6, 1)] + '...'
    return text


def draw_label(image: np.ndarray, text: str, x: int, y: int, color: Tuple[int, int, int],
               scale: float, font_thickness: int) -> None:
    """Draw *text* in white on a filled *color* background, its bottom-left near (x, y).

    The label is moved so that it stays inside the image. Draws in place.
    """
    height, width = image.shape[:2]
    text = _fit(text, width, scale, font_thickness)
    (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, font_thickness)
    pad = max(2, int(round(th * 0.25)))
    x = int(min(max(x, 0), max(width - tw - 2 * pad, 0)))
    y = int(min(max(y, th + baseline + 2 * pad), height))
    cv2.rectangle(image, (x, y - th - baseline - 2 * pad), (x + tw + 2 * pad, y), color, -1)
    cv2.putText(image, text, (x + pad, y - baseline - pad), _FONT, scale, TEXT_COLOR,
                font_thickness, cv2.LINE_AA)


def draw_labeled_box(image: np.ndarray, box: Box, color: Tuple[int, int, int], thickness: int,
                     label: str = '', scale: Optional[float] = None) -> None:
    """Draw *box* (pixels) with an optional label above its top-left corner, in place."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box.pixel_bounds(width, height)
    cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), color, thickness)
    if label:
        _, default_scale, font_thickness = _style(image)
        s = default_scale if scale is None else scale
        (_, th), baseline = cv2.getTextSize('Ag', _FONT, s, font_thickness)
        # Above the box when there is room, else just inside its top edge.
        y = y1 - thickness if y1 - thickness >= th + baseline + 4 else y1 + th + baseline + 4
        draw_label(image, label, x1, y, color, s, font_thickness)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f'image must be HxWx3 RGB, got shape {array.shape}')
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array[:, :, :3]).copy()


def draw_result(image_rgb: np.ndarray, result: GroundingResult, top_k: int = 3) -> np.ndarray:
    """Return a copy of *image_rgb* annotated with *result*.

    Args:
        image_rgb: uint8 (H, W, 3) RGB image the result was computed on (greyscale is
            accepted and drawn in colour).
        result: the grounding result.
        top_k: how many runner-up candidates to draw (thin, with their scores).

    Returns:
        A new uint8 (H, W, 3) RGB image; the input is not modified.
    """
    canvas = _as_rgb(image_rgb)
    thick, scale, font_thickness = _style(canvas)
    thin = max(1, thick // 2)
    small = scale * 0.8
    chosen = result.box if result.ok else None
    runners = [c for c in result.candidates if chosen is None or c.box != chosen]
    runners = runners[:max(int(top_k), 0)]
    # Runners-up first (worst first), so better boxes and the chosen one end up on top.
    for rank in range(len(runners) - 1, -1, -1):
        cand = runners[rank]
        color = CANDIDATE_COLORS[rank % len(CANDIDATE_COLORS)]
        draw_labeled_box(canvas, cand.box, color, thin, f'{cand.score:.2f}', scale=small)
    if chosen is not None:
        label = f'{result.expression} ({result.confidence:.2f})'
        if result.position is not None:
            x, y, z = result.position
            label += f' xyz=({x:.2f}, {y:.2f}, {z:.2f}) m'
        draw_labeled_box(canvas, chosen, CHOSEN_COLOR, thick, label)
    else:
        text = f'{result.status.name}: {result.message}' if result.message else \
            result.status.name
        if result.expression:
            text = f'{text} [{result.expression}]'
        (_, th), baseline = cv2.getTextSize('Ag', _FONT, scale, font_thickness)
        draw_label(canvas, text, 0, th + baseline + 6, FAILURE_COLOR, scale, font_thickness)
    return canvas
