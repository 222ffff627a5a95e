"""``reclip ground``: ground referring expressions in an image file, no ROS needed.

Example::

    reclip ground kitchen.jpg -e "the red mug left of the laptop" -e "the laptop" --json

Exit codes: 0 every expression was grounded; 1 at least one result is not OK (its status
is printed); 2 bad input (unreadable image, empty expression, bad boxes, depth or
intrinsics, missing model, unavailable device), reported as one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from reclip_ros.cli.options import add_config_arguments, config_values, range_problem
from reclip_ros.core.config import DEFAULT_DETECTOR, OPTIONS

#: The settings ``reclip ground`` offers: every setting that has a command-line flag
#: (generated from ``core/config.py``; a new one appears here without an edit).
SETTINGS = tuple(option.name for option in OPTIONS if option.flag)


class CliInputError(Exception):
    """Bad command-line input, reported as ``error: <message>`` with exit code 2."""


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``ground`` arguments to *parser*."""
    parser.add_argument('image', help='colour image file (PNG, JPEG, ...)')
    parser.add_argument('-e', '--expression', action='append', required=True,
                        metavar='EXPRESSION',
                        help='referring expression or robot command; repeat to ground several '
                             'on the same image (image embeddings are computed once)')
    parser.add_argument('--boxes', metavar='BOXES.json',
                        help='candidate boxes: a JSON list of [x, y, width, height] in pixels '
                             '(or {"boxes": [...]}); without it the detector proposes')
    add_config_arguments(parser, SETTINGS, defaults={'detector': DEFAULT_DETECTOR},
                         extra={'detector': {'help': 'proposal detector used when --boxes is '
                                             "not given; 'auto': OWLv2 base/16 on CUDA, "
                                             'OWL-ViT base/32 on CPU (default: auto)'}})
    parser.add_argument('--no-relations', action='store_true',
                        help='skip the spatial-relation resolver (plain region scoring)')
    parser.add_argument('--depth', metavar='DEPTH',
                        help='registered depth image: 16-bit PNG in millimetres (0 = invalid) '
                             'or .npy float array in metres; same size as the image')
    parser.add_argument('--intrinsics', nargs=4, type=float, metavar=('FX', 'FY', 'CX', 'CY'),
                        help='pinhole intrinsics in pixels; with --depth the result gets the '
                             '3D position of the object (camera optical frame, metres)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object per expression (one per line)')
    parser.add_argument('--save', metavar='OUT.png',
                        help='write the annotated image; with several expressions OUT_1.png, '
                             'OUT_2.png, ... (in -e order)')
    parser.add_argument('--top-k', type=int, default=3, metavar='K',
                        help='runner-up candidates drawn by --save (default: 3)')


# -- input readers ---------------------------------------------------------------------------


def read_image(path: str, max_pixels: Optional[int] = None) -> np.ndarray:
    """Read a colour image file as uint8 RGB; raise CliInputError when unreadable.

    With *max_pixels*, an image whose header says it is larger is refused before decoding.
    """
    import cv2
    if not Path(path).is_file():
        raise CliInputError(f'image file not found: {path}')
    if max_pixels is not None:
        from PIL import Image as PILImage
        try:
            with PILImage.open(path) as header:
                width, height = header.size
        except Exception:  # noqa: BLE001 - not a format PIL knows: OpenCV will say why
            width = height = 0
        if width * height > max_pixels:
            raise CliInputError(f'image {path} is {width}x{height} = {width * height} '
                                f'pixels; the limit is {max_pixels} (--max-image-pixels)')
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise CliInputError(f'cannot read image {path} (not an image file OpenCV can decode)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_boxes(path: str) -> List[list]:
    """Read a boxes file: a JSON list of [x, y, w, h] (or an object with key "boxes")."""
    from reclip_ros.core.types import Box
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CliInputError(f'boxes file not found: {path}') from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliInputError(f'cannot read boxes file {path}: {exc}') from None
    if isinstance(data, dict) and 'boxes' in data:
        data = data['boxes']
    if not isinstance(data, list):
        raise CliInputError(f'boxes file {path} must hold a JSON list of [x, y, width, height]')
    if not data:
        raise CliInputError(f'boxes file {path} holds no boxes')
    boxes = []
    for i, item in enumerate(data):
        try:
            if not isinstance(item, (list, tuple)):
                raise ValueError(f'expected [x, y, width, height], got {item!r}')
            boxes.append(Box.from_list(item))
        except (TypeError, ValueError) as exc:
            raise CliInputError(f'boxes file {path}: box {i}: {exc}') from None
    return boxes


def read_depth(path: str) -> np.ndarray:
    """Read depth in metres (nan invalid) from a 16-bit PNG in mm or a .npy in metres."""
    import cv2

    from reclip_ros.core.geometry import depth_to_meters
    if not Path(path).is_file():
        raise CliInputError(f'depth file not found: {path}')
    if path.lower().endswith('.npy'):
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CliInputError(f'cannot read depth {path}: {exc}') from None
        encoding = '32FC1'
    else:
        raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise CliInputError(f'cannot read depth image {path}')
        if raw.dtype != np.uint16:
            raise CliInputError(f'depth image {path} must be a 16-bit single-channel PNG in '
                                f'millimetres, got {raw.dtype} with shape {raw.shape}')
        encoding = '16UC1'
    try:
        return depth_to_meters(raw, encoding)
    except ValueError as exc:
        raise CliInputError(f'depth {path}: {exc}') from None


def save_path(base: str, index: int, count: int) -> Path:
    """Annotated-image path for expression *index* (0-based) of *count*."""
    path = Path(base)
    if count == 1:
        return path
    suffix = path.suffix or '.png'
    return path.with_name(f'{path.stem}_{index + 1}{suffix}')


def format_result(result) -> str:
    """One human-readable line for a GroundingResult."""
    head = f'{result.expression!r}:'
    if result.ok:
        box = ', '.join(f'{v:.1f}' for v in result.box.to_list())
        line = (f'{head} box [{box}] confidence {result.confidence:.3f} '
                f'({len(result.candidates)} candidates)')
        if result.position is not None:
            line += ' position ({:.3f}, {:.3f}, {:.3f}) m'.format(*result.position)
    else:
        line = f'{head} {result.status.name}'
    if result.message:
        line += f' - {" ".join(result.message.split())}'
    if result.parse:
        parse = '; '.join(part.strip() for part in result.parse.splitlines() if part.strip())
        line += f' | parse: {parse}'
    return line + f' | {result.timings.total:.0f} ms'


# -- main ------------------------------------------------------------------------------------


def _error(message: str) -> int:
    print(f'error: {message}', file=sys.stderr)
    return 2


def _check_args(args: argparse.Namespace) -> None:
    for expr in args.expression:
        if not expr.strip():
            raise CliInputError('empty expression (-e "")')
    if not math.isfinite(args.blur_sigma) or args.blur_sigma < 0:
        raise CliInputError(f'--blur-sigma must be >= 0, got {args.blur_sigma}')
    if not math.isfinite(args.center_offset) or not 0 <= args.center_offset <= 2:
        raise CliInputError(f'--center-offset must be in [0, 2], got {args.center_offset}')
    if not math.isfinite(args.size_prior) or not 0 <= args.size_prior < 1:
        raise CliInputError(f'--size-prior must be in [0, 1), got {args.size_prior}')
    problem = range_problem(args, SETTINGS)
    if problem:
        raise CliInputError(problem)
    if args.top_k < 0:
        raise CliInputError(f'--top-k must be >= 0, got {args.top_k}')
    methods = tuple(m.strip() for m in args.methods.split(',') if m.strip())
    if not methods or any(m not in ('crop', 'blur') for m in methods):
        raise CliInputError(f'--methods must be a comma-separated subset of crop,blur, '
                            f'got {args.methods!r}')
    args.methods = methods
    if args.save:
        import cv2
        parent = Path(args.save).resolve().parent
        if not parent.is_dir():
            raise CliInputError(f'--save: directory {parent} does not exist')
        if not cv2.haveImageWriter(str(save_path(args.save, 0, len(args.expression)))):
            raise CliInputError(f'--save: cannot write images of type {Path(args.save).suffix!r}'
                                ' (use .png or .jpg)')
    if args.intrinsics is not None and not args.depth:
        raise CliInputError('--intrinsics needs --depth (the 3D position uses the depth)')


def run(args: argparse.Namespace) -> int:
    """Run ``reclip ground``; return the exit code."""
    from reclip_ros.core.types import ReclipError
    boxes = None
    try:
        _check_args(args)
        image = read_image(args.image, args.max_image_pixels)
        boxes = read_boxes(args.boxes) if args.boxes else None
        depth = read_depth(args.depth) if args.depth else None
        intrinsics = None
        if depth is not None:
            from reclip_ros.core.geometry import CameraIntrinsics, check_depth_size
            try:
                check_depth_size(depth, image.shape[1], image.shape[0])
                if args.intrinsics is not None:
                    intrinsics = CameraIntrinsics(*args.intrinsics)
            except ValueError as exc:
                raise CliInputError(str(exc)) from None
        grounder = _load_grounder(args, with_detector=boxes is None)
    except CliInputError as exc:
        return _error(str(exc))
    except ReclipError as exc:  # ModelLoadError, DeviceError
        message = str(exc)
        if boxes is None and args.detector and args.detector in message:
            message += ' (or give candidate boxes with --boxes)'
        return _error(message)
    except ImportError as exc:
        return _error(f'cannot import the grounding core: {exc}')
    except Exception as exc:  # noqa: BLE001 - a one-line error, never a traceback
        return _error(f'loading the models failed: {type(exc).__name__}: {exc}')
    try:
        return _ground_all(args, grounder, image, boxes, depth, intrinsics)
    finally:
        grounder.close()


def _load_grounder(args: argparse.Namespace, with_detector: bool):
    from transformers.utils import logging as hf_logging

    from reclip_ros.core.grounder import Grounder, GrounderConfig
    hf_logging.disable_progress_bar()
    values = config_values(args, SETTINGS)
    if not with_detector:
        values['detector'] = ''
    config = GrounderConfig.from_values(values)
    return Grounder.from_config(config)


def _ground_all(args: argparse.Namespace, grounder, image: np.ndarray,
                boxes: Optional[Sequence], depth: Optional[np.ndarray], intrinsics) -> int:
    from reclip_ros.core.grounder import GroundingOptions
    options = GroundingOptions(methods=args.methods, use_relations=not args.no_relations)
    frame_key = ('reclip-ground', str(Path(args.image).resolve()))
    all_ok = True
    count = len(args.expression)
    for index, expression in enumerate(args.expression):
        result = grounder.ground(image, expression, boxes=boxes, depth_m=depth,
                                 intrinsics=intrinsics, frame_key=frame_key, options=options)
        all_ok = all_ok and result.ok
        if args.json:
            print(json.dumps(result.to_json_dict()), flush=True)
        else:
            print(format_result(result), flush=True)
        if args.save:
            if not _save(save_path(args.save, index, count), image, result, args.top_k):
                all_ok = False
    return 0 if all_ok else 1


def _save(path: Path, image: np.ndarray, result, top_k: int) -> bool:
    import cv2

    from reclip_ros.core.drawing import draw_result
    annotated = draw_result(image, result, top_k=top_k)
    try:
        ok = cv2.imwrite(str(path), cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
    except cv2.error as exc:
        print(f'error: cannot write {path}: {exc}', file=sys.stderr)
        return False
    if not ok:
        print(f'error: cannot write {path}', file=sys.stderr)
    return bool(ok)
