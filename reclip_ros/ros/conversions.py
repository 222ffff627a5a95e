"""Conversions between ROS messages and the core's numpy arrays and value types.

No cv_bridge: ``sensor_msgs/Image`` is read with numpy (row padding through ``step``,
``is_bigendian`` honoured) and ``sensor_msgs/CompressedImage`` with OpenCV. Anything that
cannot be converted raises :class:`ImageConversionError` with a message that says why; the
node reports it as a ``BAD_IMAGE`` result.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from reclip_ros.core.types import Box, Candidate, GroundingResult, Status
from reclip_ros.msg import Candidate as CandidateMsg
from reclip_ros.msg import GroundingResult as GroundingResultMsg
from reclip_ros.msg import Proposals

# encoding -> (numpy dtype, channels)
IMAGE_ENCODINGS: Dict[str, Tuple[np.dtype, int]] = {
    'rgb8': (np.dtype(np.uint8), 3),
    'bgr8': (np.dtype(np.uint8), 3),
    'rgba8': (np.dtype(np.uint8), 4),
    'bgra8': (np.dtype(np.uint8), 4),
    'mono8': (np.dtype(np.uint8), 1),
    '8UC1': (np.dtype(np.uint8), 1),
    'mono16': (np.dtype(np.uint16), 1),
    '16UC1': (np.dtype(np.uint16), 1),
    '32FC1': (np.dtype(np.float32), 1),
}
# encodings that can be turned into an RGB picture for grounding
COLOUR_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16')
# encodings accepted on the depth topic
DEPTH_ENCODINGS = ('16UC1', '32FC1')


class ImageConversionError(ValueError):
    """A message could not be converted to an array (unsupported encoding, bad size...)."""


def stamp_to_ns(stamp: Time) -> int:
    """Return a ``builtin_interfaces/Time`` as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Return integer nanoseconds as a ``builtin_interfaces/Time``."""
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def image_to_array(msg: Image) -> np.ndarray:
    """Return the pixels of *msg* as an (H, W) or (H, W, C) array in its own encoding.

    Handles row padding (``step`` larger than a row) and byte order. The array is a copy
    owned by the caller.

    Raises:
        ImageConversionError: unsupported encoding, zero size, ``step`` too small or data
            shorter than ``height * step``.

    """
    encoding = msg.encoding
    if encoding not in IMAGE_ENCODINGS:
        raise ImageConversionError(
            f'unsupported image encoding {encoding!r}; supported: '
            f'{", ".join(IMAGE_ENCODINGS)}')
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f'image has zero size ({width}x{height})')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f'image step {step} is smaller than one row of {width} {encoding} pixels '
            f'({row_bytes} bytes)')
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < height * step:
        raise ImageConversionError(
            f'image data is truncated: {data.size} bytes, expected height*step = '
            f'{height}*{step} = {height * step}')
    rows = data[:height * step].reshape(height, step)[:, :row_bytes]
    big_endian = bool(msg.is_bigendian)
    pixel_dtype = dtype.newbyteorder('>' if big_endian else '<') if dtype.itemsize > 1 else dtype
    array = np.ascontiguousarray(rows).view(pixel_dtype).reshape(height, width, channels)
    array = array.astype(dtype, copy=False) if pixel_dtype != dtype else array.copy()
    return array[:, :, 0] if channels == 1 else array


def check_pixels(width: int, height: int, max_pixels: Optional[int]) -> None:
    """Raise :class:`ImageConversionError` when the image is larger than *max_pixels*."""
    if max_pixels is not None and int(width) * int(height) > int(max_pixels):
        raise ImageConversionError(
            f'image is {int(width)}x{int(height)} = {int(width) * int(height)} pixels; the '
            f'limit is {int(max_pixels)} (max_image_pixels)')


def check_message_pixels(msg: Any, max_pixels: Optional[int]) -> None:
    """Raise :class:`ImageConversionError` when an Image or CompressedImage is too large.

    A raw image by its ``width`` x ``height``; a compressed one by its JPEG/PNG header
    (no pixel is decoded; an unreadable header passes here and fails at decoding).
    """
    if max_pixels is None:
        return
    if hasattr(msg, 'width'):
        check_pixels(msg.width, msg.height, max_pixels)
        return
    size = compressed_size(bytes(msg.data))
    if size is not None:
        check_pixels(size[0], size[1], max_pixels)


def compressed_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from a JPEG/PNG header, without decoding the pixels (None: unknown)."""
    import io

    from PIL import Image as PILImage
    try:
        with PILImage.open(io.BytesIO(data)) as header:
            return int(header.width), int(header.height)
    except Exception:  # noqa: BLE001 - not an image PIL knows: OpenCV will say why
        return None


def image_to_rgb(msg: Image, max_pixels: Optional[int] = None) -> np.ndarray:
    """Return *msg* as a contiguous (H, W, 3) ``uint8`` RGB array.

    Colour encodings are reordered, alpha is dropped, ``mono8`` is replicated to three
    channels and ``mono16`` is scaled to 8 bits (top byte).

    Raises:
        ImageConversionError: the encoding is not a colour or grey encoding, the image is
            larger than *max_pixels* (checked before any pixel is copied), or the data is
            malformed (see :func:`image_to_array`).

    """
    check_pixels(msg.width, msg.height, max_pixels)
    if msg.encoding not in COLOUR_ENCODINGS:
        kind = ('is a depth encoding, not a colour encoding' if msg.encoding in IMAGE_ENCODINGS
                else 'is an unsupported image encoding')
        raise ImageConversionError(
            f'{msg.encoding!r} {kind}; colour images must be one of '
            f'{", ".join(COLOUR_ENCODINGS)}')
    array = image_to_array(msg)
    encoding = msg.encoding
    if encoding == 'rgb8':
        return array
    if encoding == 'rgba8':
        return np.ascontiguousarray(array[:, :, :3])
    if encoding == 'bgr8':
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if encoding == 'bgra8':
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    if encoding == 'mono16':
        array = (array >> 8).astype(np.uint8)
    return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)


def compressed_to_rgb(msg: CompressedImage, max_pixels: Optional[int] = None) -> np.ndarray:
    """Decode a JPEG or PNG ``CompressedImage`` to a (H, W, 3) ``uint8`` RGB array.

    Raises:
        ImageConversionError: empty data, a compressed depth image, an image larger than
            *max_pixels* (read from the JPEG/PNG header before decoding), or bytes OpenCV
            cannot decode.

    """
    fmt = (msg.format or '').lower()
    if 'compresseddepth' in fmt:
        raise ImageConversionError(
            f'compressed depth images ({msg.format!r}) are not supported on the colour topic')
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageConversionError('compressed image has no data')
    if max_pixels is not None:
        size = compressed_size(bytes(msg.data))
        if size is not None:
            check_pixels(size[0], size[1], max_pixels)
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageConversionError(
            f'cannot decode compressed image (format {msg.format!r}, {data.size} bytes); '
            'JPEG and PNG are supported')
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def depth_image_to_meters(msg: Image, max_pixels: Optional[int] = None) -> np.ndarray:
    """Return a depth image as float32 metres (invalid pixels NaN).

    Raises:
        ImageConversionError: the encoding is not ``16UC1`` (millimetres) or ``32FC1``
            (metres), the image is larger than *max_pixels*, or the data is malformed.

    """
    check_pixels(msg.width, msg.height, max_pixels)
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(
            f'depth encoding {msg.encoding!r} is not supported; use 16UC1 (mm) or 32FC1 (m)')
    from reclip_ros.core.geometry import depth_to_meters
    return depth_to_meters(image_to_array(msg), msg.encoding)


def array_to_image(array: np.ndarray, encoding: str,
                   header: Optional[Header] = None) -> Image:
    """Build an ``Image`` from an array already in *encoding* (rows packed, native order).

    Raises:
        ImageConversionError: the encoding is unknown or does not fit the array.

    """
    if encoding not in IMAGE_ENCODINGS:
        raise ImageConversionError(f'unsupported image encoding {encoding!r}')
    dtype, channels = IMAGE_ENCODINGS[encoding]
    array = np.asarray(array)
    shape_channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else -1)
    if shape_channels != channels or array.dtype != dtype:
        raise ImageConversionError(
            f'{encoding} needs {channels} channel(s) of {dtype}, got shape {array.shape} '
            f'of {array.dtype}')
    array = np.ascontiguousarray(array)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == 'big' and dtype.itemsize > 1)
    msg.step = int(array.shape[1] * channels * dtype.itemsize)
    msg.data = array.tobytes()
    return msg


def rgb_to_compressed(image_rgb: np.ndarray, fmt: str = 'jpeg',
                      header: Optional[Header] = None) -> CompressedImage:
    """Encode an RGB array as a JPEG or PNG ``CompressedImage``."""
    ext = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(fmt.lower())
    if ext is None:
        raise ImageConversionError(f'unsupported compression format {fmt!r} (jpeg or png)')
    ok, buffer = cv2.imencode(ext, cv2.cvtColor(np.asarray(image_rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageConversionError(f'OpenCV could not encode the image as {fmt}')
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = 'jpeg' if ext == '.jpg' else 'png'
    msg.data = buffer.tobytes()
    return msg


def box_to_roi(box: Box, image_width: int, image_height: int) -> RegionOfInterest:
    """Return *box* as integer pixels clipped to the image (at least one pixel)."""
    x1, y1, x2, y2 = box.pixel_bounds(int(image_width), int(image_height))
    return RegionOfInterest(x_offset=x1, y_offset=y1, width=x2 - x1, height=y2 - y1,
                            do_rectify=False)


def roi_to_box(roi: RegionOfInterest) -> Box:
    """Return a ``RegionOfInterest`` as a :class:`Box`.

    Raises:
        ValueError: the region has zero width or height.

    """
    return Box.from_list([roi.x_offset, roi.y_offset, roi.width, roi.height])


def rois_to_boxes(rois: Sequence[RegionOfInterest]) -> Tuple[List[Box], int]:
    """Convert regions to boxes, skipping empty ones; return (boxes, number skipped)."""
    boxes: List[Box] = []
    skipped = 0
    for roi in rois:
        if roi.width == 0 or roi.height == 0:
            skipped += 1
            continue
        boxes.append(roi_to_box(roi))
    return boxes, skipped


def proposals_to_boxes(msg: Proposals) -> List[Box]:
    """Return the non-empty boxes of a ``Proposals`` message, best score first.

    With one score per box the boxes are sorted by score (highest first, ties in message
    order), so that ``max_proposals`` keeps the detector's best; without scores the message
    order is kept.
    """
    scores = list(msg.scores)
    pairs = [(roi, scores[i] if len(scores) == len(msg.boxes) else 0.0)
             for i, roi in enumerate(msg.boxes)]
    if len(scores) == len(msg.boxes):
        pairs.sort(key=lambda pair: -float(pair[1]))
    return rois_to_boxes([roi for roi, _ in pairs])[0]


def camera_info_to_intrinsics(msg: CameraInfo):
    """Return the pinhole intrinsics (``CameraIntrinsics``) of a ``CameraInfo``.

    Raises:
        ValueError: the camera matrix is missing (fx or fy is zero).

    """
    from reclip_ros.core.geometry import CameraIntrinsics
    k = list(msg.k)
    if len(k) != 9 or k[0] <= 0 or k[4] <= 0:
        raise ValueError(f'camera_info has no valid camera matrix K: {k}')
    return CameraIntrinsics(fx=float(k[0]), fy=float(k[4]), cx=float(k[2]), cy=float(k[5]))


def result_to_msg(result: GroundingResult, header: Header, image_width: int = 0,
                  image_height: int = 0, max_candidates: int = 0,
                  queue_wait_ms: float = 0.0, message_suffix: str = '') -> GroundingResultMsg:
    """Build a ``GroundingResult`` message from a core result.

    Args:
        result: the core result.
        header: header of the grounded image (or the command's receipt time).
        image_width: width of the grounded image, to clip boxes (0: no clipping).
        image_height: height of the grounded image.
        max_candidates: keep only the best this many candidates (0: all).
        queue_wait_ms: time the command waited before grounding started.
        message_suffix: appended to the status message (e.g. a depth warning).

    """
    msg = GroundingResultMsg()
    msg.header = header
    msg.expression = result.expression
    msg.status = int(result.status)
    message = result.message or ''
    if message_suffix:
        message = f'{message}; {message_suffix}' if message else message_suffix
    msg.status_message = message
    width = image_width or 1 << 30
    height = image_height or 1 << 30
    if result.status == Status.OK and result.box is not None:
        msg.box = box_to_roi(result.box, width, height)
        msg.confidence = float(min(max(result.confidence, 0.0), 1.0))
        candidates = sorted(result.candidates, key=lambda c: -c.score)
        if max_candidates > 0:
            candidates = candidates[:max_candidates]
        msg.candidates = [
            CandidateMsg(box=box_to_roi(c.box, width, height),
                         score=float(min(max(c.score, 0.0), 1.0)))
            for c in candidates]
        if result.position is not None and all(np.isfinite(result.position)):
            msg.has_position = True
            msg.position.x, msg.position.y, msg.position.z = (float(v) for v in result.position)
    t = result.timings
    msg.latency_proposals_ms = float(max(t.proposals, 0.0))
    msg.latency_isolation_ms = float(max(t.isolation, 0.0))
    msg.latency_image_encoding_ms = float(max(t.image_encoding, 0.0))
    msg.latency_text_encoding_ms = float(max(t.text_encoding, 0.0))
    msg.latency_resolve_ms = float(max(t.resolve, 0.0))
    msg.latency_total_ms = float(max(t.total, 0.0))
    msg.queue_wait_ms = float(max(queue_wait_ms, 0.0))
    return msg


# -- vision_msgs (where it is installed; not on PyPI) --------------------------------------

def roi_to_box_or_none(roi: RegionOfInterest) -> Optional[Box]:
    """A ``RegionOfInterest`` as a :class:`Box`, or None when it is empty (no box)."""
    if roi.width <= 0 or roi.height <= 0:
        return None
    return roi_to_box(roi)


def status_name(code: int) -> str:
    """The name of a result status code ('OK', 'NO_IMAGE', ...), or the number when unknown."""
    try:
        return Status(int(code)).name
    except ValueError:
        return str(code)


def msg_to_result(msg: GroundingResultMsg) -> GroundingResult:
    """A ``GroundingResult`` message back as a core :class:`GroundingResult` (for drawing).

    An unknown status becomes ERROR; the timings and the parse are not carried back.
    """
    try:
        status = Status(int(msg.status))
    except ValueError:
        status = Status.ERROR
    candidates = tuple(Candidate(box, float(c.score)) for c in msg.candidates
                       for box in [roi_to_box_or_none(c.box)] if box is not None)
    position = ((msg.position.x, msg.position.y, msg.position.z) if msg.has_position
                else None)
    return GroundingResult(expression=msg.expression, status=status,
                           message=msg.status_message, box=roi_to_box_or_none(msg.box),
                           confidence=float(msg.confidence), candidates=candidates,
                           position=position)


def vision_msgs_module():
    """The ``vision_msgs.msg`` module, or None when vision_msgs is not installed."""
    try:
        import vision_msgs.msg as vision
    except ImportError:
        return None
    return vision


def detection2d_array_fields(result: GroundingResultMsg) -> dict:
    """A result as the fields of a ``vision_msgs/Detection2DArray`` (plain data).

    One detection per candidate, best first, each with the image header; its one
    hypothesis has ``class_id`` = the expression and ``score`` = the candidate's probability;
    its ``bbox`` centre and size are in pixels; ``id`` is the rank ("0" = chosen). A result
    that is not OK gives no detections.
    """
    detections = []
    if result.status == GroundingResultMsg.OK:
        for rank, candidate in enumerate(result.candidates):
            roi = candidate.box
            detections.append({
                'header': result.header,
                'results': [{'hypothesis': {'class_id': result.expression,
                                            'score': float(candidate.score)}}],
                'bbox': {'center': {'position': {'x': roi.x_offset + roi.width / 2.0,
                                                 'y': roi.y_offset + roi.height / 2.0},
                                    'theta': 0.0},
                         'size_x': float(roi.width), 'size_y': float(roi.height)},
                'id': str(rank)})
    return {'header': result.header, 'detections': detections}


def detection3d_array_fields(result: GroundingResultMsg) -> Optional[dict]:
    """The chosen object as the fields of a ``vision_msgs/Detection3DArray``, or None.

    None unless the result is OK with a position; the detection's ``bbox.center`` is at
    ``position`` (metres, image optical frame, identity orientation); the 3D size is not
    known and left 0.
    """
    if result.status != GroundingResultMsg.OK or not result.has_position:
        return None
    detection = {
        'header': result.header,
        'results': [{'hypothesis': {'class_id': result.expression,
                                    'score': float(result.confidence)}}],
        'bbox': {'center': {'position': {'x': result.position.x, 'y': result.position.y,
                                         'z': result.position.z},
                            'orientation': {'w': 1.0}}},
        'id': '0'}
    return {'header': result.header, 'detections': [detection]}


_VISION_ITEM_TYPES = {'detections_2d': 'Detection2D', 'detections_3d': 'Detection3D',
                      'results': 'ObjectHypothesisWithPose'}


def fill_message(message, fields: Mapping[str, object], vision, kind: str = '2d'):
    """Set *fields* (nested dicts and lists, as above) on a vision_msgs *message*."""
    for name, value in fields.items():
        if isinstance(value, Mapping):
            fill_message(getattr(message, name), value, vision, kind)
        elif isinstance(value, list):
            key = f'detections_{kind}' if name == 'detections' else name
            item_type = getattr(vision, _VISION_ITEM_TYPES[key])
            setattr(message, name, [fill_message(item_type(), item, vision, kind)
                                    for item in value])
        else:
            setattr(message, name, value)
    return message


def position_to_point(position: Sequence[float], header: Header) -> PointStamped:
    """Return a 3D position (metres, in ``header.frame_id``) as a ``PointStamped``."""
    point = PointStamped()
    point.header = header
    point.point.x, point.point.y, point.point.z = (float(v) for v in position)
    return point


def diagnostic_status(name: str, hardware_id: str, level: int, message: str,
                      values: Mapping[str, object]) -> DiagnosticStatus:
    """Build a ``DiagnosticStatus`` with every value rendered as a string."""
    def render(value: object) -> str:
        if isinstance(value, float):
            return f'{value:.3f}'
        if isinstance(value, (list, tuple)):
            return ','.join(str(v) for v in value)
        return str(value)

    return DiagnosticStatus(
        level=bytes([int(level)]), name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=str(k), value=render(v)) for k, v in values.items()])


def parameter_descriptor(spec) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` of a :class:`reclip_ros.runtime.parameters.ParameterSpec`."""
    description = spec.description
    if spec.on_configure:
        description += ' (applied on configure; change it while unconfigured)'
    descriptor = ParameterDescriptor(description=description, read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if isinstance(spec.default, float) and spec.min_value is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)]
    elif (isinstance(spec.default, int) and not isinstance(spec.default, bool)
          and spec.min_value is not None):
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)]
    return descriptor
