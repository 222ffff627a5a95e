"""Image <-> numpy and result -> message conversions, tested on message objects (no DDS)."""

import math

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from reclip_ros.ros import conversions as conv
from reclip_ros.core.types import Box, Candidate, GroundingResult, Status, Timings
from reclip_ros.msg import GroundingResult as GroundingResultMsg
from reclip_ros.msg import Proposals


def _rng_image(h=5, w=7, c=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.uniform(0.1, 9.0, size=(h, w) if c == 1 else (h, w, c)).astype(dtype)
    info = np.iinfo(dtype)
    shape = (h, w) if c == 1 else (h, w, c)
    return rng.integers(0, info.max, size=shape, dtype=dtype)


def _padded_msg(array, encoding, pad=5, big_endian=False):
    """Build an Image by hand with `pad` junk bytes at the end of every row."""
    array = np.ascontiguousarray(array)
    if big_endian:
        array = array.astype(array.dtype.newbyteorder('>'))
    h = array.shape[0]
    row = array.reshape(h, -1).view(np.uint8).reshape(h, -1)
    junk = np.full((h, pad), 0xAB, dtype=np.uint8)
    data = np.concatenate([row, junk], axis=1)
    msg = Image(height=h, width=array.shape[1], encoding=encoding,
                is_bigendian=int(big_endian), step=data.shape[1])
    msg.data = data.tobytes()
    return msg


@pytest.mark.parametrize('encoding,channels,dtype', [
    ('rgb8', 3, np.uint8), ('bgr8', 3, np.uint8), ('rgba8', 4, np.uint8),
    ('bgra8', 4, np.uint8), ('mono8', 1, np.uint8), ('mono16', 1, np.uint16),
    ('16UC1', 1, np.uint16), ('32FC1', 1, np.float32)])
def test_round_trip_every_encoding(encoding, channels, dtype):
    array = _rng_image(c=channels, dtype=dtype)
    msg = conv.array_to_image(array, encoding)
    assert msg.step == array.shape[1] * channels * np.dtype(dtype).itemsize
    out = conv.image_to_array(msg)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize('encoding,channels,dtype', [
    ('rgb8', 3, np.uint8), ('mono16', 1, np.uint16), ('32FC1', 1, np.float32)])
def test_row_padding_is_skipped(encoding, channels, dtype):
    array = _rng_image(c=channels, dtype=dtype, seed=3)
    out = conv.image_to_array(_padded_msg(array, encoding, pad=6))
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize('encoding,dtype', [('16UC1', np.uint16), ('32FC1', np.float32)])
def test_big_endian_data_is_byte_swapped(encoding, dtype):
    array = _rng_image(c=1, dtype=dtype, seed=4)
    out = conv.image_to_array(_padded_msg(array, encoding, pad=2, big_endian=True))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, array)


def test_colour_orders_become_rgb():
    rgb = _rng_image(seed=5)
    bgr = rgb[:, :, ::-1]
    alpha = np.full(rgb.shape[:2] + (1,), 7, dtype=np.uint8)
    np.testing.assert_array_equal(conv.image_to_rgb(conv.array_to_image(rgb, 'rgb8')), rgb)
    np.testing.assert_array_equal(conv.image_to_rgb(conv.array_to_image(bgr, 'bgr8')), rgb)
    rgba = np.concatenate([rgb, alpha], axis=2)
    bgra = np.concatenate([bgr, alpha], axis=2)
    np.testing.assert_array_equal(conv.image_to_rgb(conv.array_to_image(rgba, 'rgba8')), rgb)
    np.testing.assert_array_equal(conv.image_to_rgb(conv.array_to_image(bgra, 'bgra8')), rgb)


def test_grey_images_are_replicated():
    grey = _rng_image(c=1, seed=6)
    out = conv.image_to_rgb(conv.array_to_image(grey, 'mono8'))
    assert out.shape == grey.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)
    grey16 = _rng_image(c=1, dtype=np.uint16, seed=7)
    out16 = conv.image_to_rgb(conv.array_to_image(grey16, 'mono16'))
    np.testing.assert_array_equal(out16[:, :, 1], (grey16 >> 8).astype(np.uint8))


@pytest.mark.parametrize('encoding', ['yuv422', 'bayer_rggb8', '8UC3', '', 'rgb16'])
def test_unsupported_encoding_names_the_encoding(encoding):
    msg = Image(height=2, width=2, encoding=encoding, step=6)
    msg.data = bytes(12)
    with pytest.raises(conv.ImageConversionError, match='unsupported'):
        conv.image_to_rgb(msg)
    with pytest.raises(conv.ImageConversionError, match='unsupported'):
        conv.image_to_array(msg)


def test_depth_encoding_is_not_a_colour_image():
    msg = conv.array_to_image(np.ones((3, 4), np.float32), '32FC1')
    with pytest.raises(conv.ImageConversionError, match='depth encoding'):
        conv.image_to_rgb(msg)


def test_truncated_data_is_reported():
    msg = conv.array_to_image(_rng_image(h=10, w=10), 'rgb8')
    msg.data = bytes(msg.data)[: msg.step * 9 + 5]
    with pytest.raises(conv.ImageConversionError, match='truncated'):
        conv.image_to_rgb(msg)


def test_step_smaller_than_row_and_zero_size_are_reported():
    msg = conv.array_to_image(_rng_image(), 'rgb8')
    msg.step = msg.width * 3 - 1
    with pytest.raises(conv.ImageConversionError, match='step'):
        conv.image_to_rgb(msg)
    with pytest.raises(conv.ImageConversionError, match='zero size'):
        conv.image_to_rgb(Image(height=0, width=4, encoding='rgb8', step=12))


def test_compressed_png_is_lossless_and_jpeg_close():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 30, 10)
    rgb[:, 24:] = (10, 40, 220)
    png = conv.rgb_to_compressed(rgb, 'png')
    assert png.format == 'png'
    np.testing.assert_array_equal(conv.compressed_to_rgb(png), rgb)
    jpeg = conv.compressed_to_rgb(conv.rgb_to_compressed(rgb, 'jpeg'))
    assert jpeg.shape == rgb.shape
    assert np.abs(jpeg[4:28, 4:20].astype(int) - rgb[4:28, 4:20]).max() < 12


def test_compressed_garbage_and_depth_are_reported():
    with pytest.raises(conv.ImageConversionError, match='cannot decode'):
        conv.compressed_to_rgb(CompressedImage(format='jpeg', data=b'not a jpeg at all'))
    with pytest.raises(conv.ImageConversionError, match='no data'):
        conv.compressed_to_rgb(CompressedImage(format='png'))
    with pytest.raises(conv.ImageConversionError, match='depth'):
        conv.compressed_to_rgb(CompressedImage(format='16UC1; compressedDepth', data=b'x'))


def test_depth_to_meters_both_encodings():
    mm = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    out = conv.depth_image_to_meters(conv.array_to_image(mm, '16UC1'))
    assert out.dtype == np.float32
    assert math.isnan(out[0, 0])
    assert out[0, 1] == pytest.approx(1.0)
    assert out[1, 0] == pytest.approx(2.5)
    m = np.array([[0.5, np.nan]], dtype=np.float32)
    out = conv.depth_image_to_meters(conv.array_to_image(m, '32FC1'))
    assert out[0, 0] == pytest.approx(0.5) and math.isnan(out[0, 1])
    with pytest.raises(conv.ImageConversionError, match='16UC1'):
        conv.depth_image_to_meters(conv.array_to_image(_rng_image(), 'rgb8'))


def test_box_roi_round_trip_and_clipping():
    roi = conv.box_to_roi(Box(10.4, 5.6, 20.2, 30.0), 640, 480)
    assert (roi.x_offset, roi.y_offset) == (10, 5)
    assert roi.x_offset + roi.width >= 30 and roi.y_offset + roi.height >= 35
    back = conv.roi_to_box(roi)
    assert back == Box(roi.x_offset, roi.y_offset, roi.width, roi.height)
    clipped = conv.box_to_roi(Box(-20, -5, 100, 100), 50, 40)
    assert (clipped.x_offset, clipped.y_offset, clipped.width, clipped.height) == (0, 0, 50, 40)
    with pytest.raises(ValueError):
        conv.roi_to_box(RegionOfInterest(x_offset=1, y_offset=1, width=0, height=3))


def test_proposals_skip_empty_boxes():
    msg = Proposals(boxes=[RegionOfInterest(x_offset=1, y_offset=2, width=3, height=4),
                           RegionOfInterest(x_offset=5, y_offset=5, width=0, height=4)])
    assert conv.proposals_to_boxes(msg) == [Box(1, 2, 3, 4)]


def test_camera_info_intrinsics():
    info = CameraInfo(width=640, height=480)
    info.k = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    k = conv.camera_info_to_intrinsics(info)
    assert (k.fx, k.fy, k.cx, k.cy) == (500.0, 510.0, 320.0, 240.0)
    with pytest.raises(ValueError, match='camera matrix'):
        conv.camera_info_to_intrinsics(CameraInfo())


def _ok_result():
    cands = (Candidate(Box(0, 0, 10, 10), 0.2), Candidate(Box(5, 5, 10, 10), 0.7),
             Candidate(Box(20, 0, 10, 10), 0.1))
    return GroundingResult(expression='the mug', status=Status.OK, box=cands[1].box,
                           confidence=0.7, candidates=cands,
                           timings=Timings(proposals=1.0, isolation=2.0, image_encoding=3.0,
                                           text_encoding=4.0, resolve=5.0, total=16.0),
                           position=(0.1, -0.2, 1.5))


def test_result_to_msg_ok():
    header = Header(frame_id='camera_optical')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = conv.result_to_msg(_ok_result(), header, 64, 48, queue_wait_ms=2.5)
    assert isinstance(msg, GroundingResultMsg)
    assert msg.header.frame_id == 'camera_optical' and msg.header.stamp.nanosec == 345
    assert msg.status == GroundingResultMsg.OK and msg.expression == 'the mug'
    assert (msg.box.x_offset, msg.box.y_offset, msg.box.width) == (5, 5, 10)
    assert msg.confidence == pytest.approx(0.7)
    scores = [c.score for c in msg.candidates]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    assert msg.has_position and msg.position.z == pytest.approx(1.5)
    assert msg.latency_resolve_ms == pytest.approx(5.0)
    assert msg.latency_total_ms == pytest.approx(16.0)
    assert msg.queue_wait_ms == pytest.approx(2.5)
    assert len(conv.result_to_msg(_ok_result(), header, 64, 48, max_candidates=2)
               .candidates) == 2


def test_result_to_msg_failure_has_zero_box_and_suffix():
    failed = GroundingResult.failure('x', Status.BAD_IMAGE, 'bad encoding')
    msg = conv.result_to_msg(failed, Header(), message_suffix='depth ignored')
    assert msg.status == GroundingResultMsg.BAD_IMAGE
    assert msg.status_message == 'bad encoding; depth ignored'
    assert msg.box.width == 0 and msg.confidence == 0.0 and not msg.candidates
    assert not msg.has_position


def test_status_codes_match_message_constants():
    for status in Status:
        assert getattr(GroundingResultMsg, status.name) == int(status)


def test_stamp_round_trip():
    ns = 1_700_000_123_456_789_012
    assert conv.stamp_to_ns(conv.ns_to_stamp(ns)) == ns


def test_large_image_converts_without_copy_explosion():
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[1500, 2000] = (1, 2, 3)
    msg = conv.array_to_image(big[:, :, ::-1].copy(), 'bgr8')
    out = conv.image_to_rgb(msg)
    assert out.shape == (3000, 4000, 3) and tuple(out[1500, 2000]) == (1, 2, 3)
    assert cv2.countNonZero(out[:, :, 0]) == 1


def test_diagnostic_status_renders_values():
    status = conv.diagnostic_status('reclip', 'cpu', 1, 'warn',
                                    {'models': ['a', 'b'], 'mean': 1.23456, 'n': 3})
    values = {kv.key: kv.value for kv in status.values}
    assert values == {'models': 'a,b', 'mean': '1.235', 'n': '3'}
    assert status.level == b'\x01' and status.hardware_id == 'cpu'


# -- vision_msgs layout (checked without vision_msgs: the documented field layout) -------------

def _ok_result_msg(with_position=True):
    result = GroundingResult(
        expression='the red mug', status=Status.OK, box=Box(10, 20, 30, 40), confidence=0.7,
        candidates=(Candidate(Box(10, 20, 30, 40), 0.7), Candidate(Box(50, 5, 8, 6), 0.3)),
        position=(0.1, -0.2, 1.5) if with_position else None)
    header = Header(stamp=conv.ns_to_stamp(1_500_000_123), frame_id='camera_optical')
    return conv.result_to_msg(result, header, 640, 480)


def test_detection2d_array_fields_follow_the_vision_msgs_layout():
    msg = _ok_result_msg()
    fields = conv.detection2d_array_fields(msg)
    assert fields['header'] == msg.header
    first, second = fields['detections']
    assert first['header'] == msg.header and first['id'] == '0' and second['id'] == '1'
    assert first['results'] == [{'hypothesis': {'class_id': 'the red mug',
                                                'score': pytest.approx(0.7)}}]
    # vision_msgs/BoundingBox2D: centre (pixels) and full size
    assert first['bbox'] == {'center': {'position': {'x': 25.0, 'y': 40.0}, 'theta': 0.0},
                             'size_x': 30.0, 'size_y': 40.0}
    assert second['bbox']['center']['position'] == {'x': 54.0, 'y': 8.0}
    assert second['results'][0]['hypothesis']['score'] == pytest.approx(0.3)
    failed = conv.result_to_msg(GroundingResult.failure('x', Status.NO_IMAGE, 'none'),
                                Header())
    assert conv.detection2d_array_fields(failed)['detections'] == []


def test_detection3d_array_fields_put_the_chosen_object_at_its_position():
    msg = _ok_result_msg()
    fields = conv.detection3d_array_fields(msg)
    (detection,) = fields['detections']
    assert detection['bbox']['center']['position'] == {'x': pytest.approx(0.1),
                                                       'y': pytest.approx(-0.2),
                                                       'z': pytest.approx(1.5)}
    assert detection['results'][0]['hypothesis'] == {'class_id': 'the red mug',
                                                     'score': pytest.approx(0.7)}
    assert conv.detection3d_array_fields(_ok_result_msg(with_position=False)) is None


def test_vision_messages_are_filled_from_the_layout():
    vision = conv.vision_msgs_module()
    msg = _ok_result_msg()
    array = conv.fill_message(vision.Detection2DArray(), conv.detection2d_array_fields(msg),
                              vision, '2d')
    assert array.header == msg.header and len(array.detections) == 2
    first = array.detections[0]
    assert first.bbox.center.position.x == 25.0 and first.bbox.size_y == 40.0
    assert first.results[0].hypothesis.class_id == 'the red mug'
    assert first.results[0].hypothesis.score == pytest.approx(0.7)
    array3d = conv.fill_message(vision.Detection3DArray(), conv.detection3d_array_fields(msg),
                                vision, '3d')
    assert array3d.detections[0].bbox.center.position.z == pytest.approx(1.5)
    assert array3d.detections[0].bbox.center.orientation.w == 1.0
