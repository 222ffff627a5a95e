"""Proposal isolation on pixel values: crop bounds, blur outside / sharp inside, inputs."""

import cv2
import numpy as np
import pytest

from reclip_ros.core import isolation
from reclip_ros.core.isolation import (blur_frame, isolate_all, isolate_blur, isolate_crop,
                                       resize_square, to_model_input)
from reclip_ros.core.types import Box


@pytest.fixture
def coded():
    """A 40 x 50 image whose pixels encode their own coordinates (row, column, 7)."""
    rows, cols = np.mgrid[0:40, 0:50]
    return np.stack([rows, cols, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


@pytest.fixture
def checker():
    """A high-frequency 2-pixel checkerboard (what a blur must wipe out)."""
    rows, cols = np.mgrid[0:96, 0:128]
    value = (((rows // 2) + (cols // 2)) % 2 * 255).astype(np.uint8)
    return np.repeat(value[..., None], 3, axis=-1)


def test_crop_integer_box(coded):
    crop = isolate_crop(coded, Box(10, 5, 20, 8))
    assert crop.shape == (8, 20, 3)
    assert crop[0, 0, 0] == 5 and crop[0, 0, 1] == 10
    assert crop[-1, -1, 0] == 12 and crop[-1, -1, 1] == 29


def test_crop_fractional_box_covers_every_touched_pixel(coded):
    crop = isolate_crop(coded, Box(10.2, 5.7, 20.5, 10.1))  # x 10.2..30.7, y 5.7..15.8
    assert crop.shape == (11, 21, 3)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (5, 10)
    assert (crop[-1, -1, 0], crop[-1, -1, 1]) == (15, 30)


def test_crop_box_partly_outside_is_clipped(coded):
    crop = isolate_crop(coded, Box(-10, -5, 30, 20))
    assert crop.shape == (15, 20, 3)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (0, 0)
    crop = isolate_crop(coded, Box(40, 30, 100, 100))
    assert crop.shape == (10, 10, 3)
    assert (crop[-1, -1, 0], crop[-1, -1, 1]) == (39, 49)


def test_sub_pixel_and_outside_boxes_give_one_pixel(coded):
    tiny = isolate_crop(coded, Box(3.2, 4.1, 0.3, 0.2))
    assert tiny.shape == (1, 1, 3) and (tiny[0, 0, 0], tiny[0, 0, 1]) == (4, 3)
    outside = isolate_crop(coded, Box(100, 100, 10, 10))
    assert outside.shape == (1, 1, 3)
    assert (outside[0, 0, 0], outside[0, 0, 1]) == (39, 49)


def test_blur_isolation_sharp_inside_blurred_outside(checker):
    blurred = blur_frame(checker, 20.0)
    assert blurred.std() < 0.1 * checker.std()  # the checkerboard is gone
    box = Box(30, 20, 40, 24)
    out = isolate_blur(checker, blurred, box)
    assert out.shape == checker.shape
    inside = np.zeros(checker.shape[:2], bool)
    inside[20:44, 30:70] = True
    np.testing.assert_array_equal(out[inside], checker[inside])
    np.testing.assert_array_equal(out[~inside], blurred[~inside])
    # The inputs are left untouched.
    assert blurred.std() < 0.1 * checker.std()


def test_blur_frame_matches_full_resolution_gaussian():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    image = cv2.resize(small, (320, 240), interpolation=cv2.INTER_CUBIC)
    fast = blur_frame(image, 30.0).astype(np.float64)
    k = 2 * round(3 * 30.0) + 1
    reference = cv2.GaussianBlur(image, (k, k), 30.0, borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(fast - reference).mean() < 3.0


def test_blur_frame_properties(checker):
    np.testing.assert_array_equal(blur_frame(checker, 0.0), checker)
    flat = np.full((50, 70, 3), 123, np.uint8)
    np.testing.assert_array_equal(blur_frame(flat, 100.0), flat)
    assert blur_frame(checker, 100.0).shape == checker.shape


def test_isolate_all_blurs_the_frame_once(monkeypatch, checker):
    calls = []
    original = isolation.blur_frame

    def counted(image, sigma):
        calls.append(sigma)
        return original(image, sigma)
    monkeypatch.setattr(isolation, 'blur_frame', counted)
    boxes = [Box(0, 0, 10, 10), Box(20, 20, 30, 10), Box(50, 5, 5, 50)]
    out = isolate_all(checker, boxes, blur_sigma=15.0)
    assert calls == [15.0]
    assert len(out['crop']) == len(out['blur']) == 3
    assert out['crop'][1].shape == (10, 30, 3)
    with pytest.raises(ValueError, match='unknown isolation'):
        isolate_all(checker, boxes, methods=('crop', 'grey'))


def test_resize_square_ignores_aspect_ratio():
    image = np.zeros((20, 80, 3), np.uint8)
    image[:, :10] = (255, 0, 0)    # left eighth red
    image[:, 10:70] = (0, 255, 0)
    image[:, 70:] = (0, 0, 255)    # right eighth blue
    out = resize_square(image, 16)
    assert out.shape == (16, 16, 3)
    # Squeezed, not centre-cropped: both edge stripes survive, each 2 columns wide.
    assert np.all(out[:, 0, 0] > 200) and np.all(out[:, 0, 2] < 50)
    assert np.all(out[:, -1, 2] > 200) and np.all(out[:, -1, 0] < 50)
    assert np.all(out[:, 8, 1] > 200)


def test_to_model_input_normalises_per_channel():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    a = np.full((10, 30, 3), (255, 0, 51), np.uint8)
    b = np.full((7, 5, 3), (0, 255, 102), np.uint8)
    batch = to_model_input([a, b], 8, mean, std)
    assert batch.shape == (2, 3, 8, 8) and batch.dtype == np.float32
    assert batch.flags['C_CONTIGUOUS']
    want_a = [(1.0 - 0.5) / 0.2, (0.0 - 0.4) / 0.25, (0.2 - 0.3) / 0.5]
    want_b = [(0.0 - 0.5) / 0.2, (1.0 - 0.4) / 0.25, (0.4 - 0.3) / 0.5]
    for c in range(3):
        np.testing.assert_allclose(batch[0, c], want_a[c], atol=1e-5)
        np.testing.assert_allclose(batch[1, c], want_b[c], atol=1e-5)


def _natural_image(size: int, seed: int = 0) -> np.ndarray:
    """An RGB image with natural statistics: a 1/f amplitude spectrum with random phases."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size)
    channels = []
    for _ in range(3):
        phase = np.exp(2j * np.pi * rng.random((size, size)))
        plane = np.real(np.fft.ifft2(amplitude * phase))
        plane = (plane - plane.mean()) / plane.std()
        channels.append(np.clip(128 + 45 * plane, 0, 255))
    return np.stack(channels, axis=-1).astype(np.uint8)


@pytest.mark.parametrize('resample', [3, 2])
def test_model_input_matches_clip_image_processor_when_shrinking(resample):
    """Pixel values equal transformers' CLIPImageProcessor (the reference) within 1e-5.

    A square image, so the processor's shortest-edge resize plus centre crop is the same
    square resize ReCLIP uses; 448 -> 224 shrinks by 2, where an interpolating (not
    antialiased) bicubic resize differs by several grey levels.
    """
    from transformers import CLIPImageProcessor
    image = _natural_image(448)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    processor = CLIPImageProcessor(size={'shortest_edge': 224},
                                   crop_size={'height': 224, 'width': 224},
                                   image_mean=list(mean), image_std=list(std),
                                   resample=resample)
    reference = processor(images=image, return_tensors='np')['pixel_values']
    ours = isolation.to_model_input([image], 224, mean, std, resample=resample)
    assert ours.shape == reference.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    # the check has teeth: OpenCV's bicubic interpolation is far from the reference here
    interpolated = cv2.resize(image, (224, 224), interpolation=cv2.INTER_CUBIC)
    plain = ((interpolated.astype(np.float32) / 255.0 - np.array(mean, np.float32))
             / np.array(std, np.float32)).transpose(2, 0, 1)[None]
    assert np.max(np.abs(plain - reference)) > 0.1


def test_clip_model_takes_the_checkpoints_resize_filter(tmp_path, tiny_clip_dir):
    import json
    import shutil

    from reclip_ros.core.models import ClipModel
    assert ClipModel.load(tiny_clip_dir, device='cpu').resample == 3
    other = tmp_path / 'bilinear'
    shutil.copytree(tiny_clip_dir, other)
    config_path = other / 'preprocessor_config.json'
    config = json.loads(config_path.read_text())
    config['resample'] = 2
    config_path.write_text(json.dumps(config))
    assert ClipModel.load(str(other), device='cpu').resample == 2


def _random_boxes(rng, w, h, n):
    boxes = []
    for _ in range(n):
        bw, bh = rng.uniform(1, w * 0.6), rng.uniform(1, h * 0.6)
        boxes.append(Box(rng.uniform(-10, w - bw), rng.uniform(-10, h - bh), bw, bh))
    boxes += [Box(0, 0, w, h), Box(w - 3, h - 2, 3, 2), Box(0, 0, 1, 1)]  # whole, corner
    return boxes


@pytest.mark.parametrize('resample', [2, 3])
@pytest.mark.parametrize('shape', [(480, 640), (96, 128), (40, 50)])
def test_blur_isolations_resized_around_each_box_match_the_whole_frame_resize(shape,
                                                                             resample):
    """Equal to PIL's resize of the whole composite within one grey level.

    The reference is ``isolate_blur`` then ``resize_square``. The sub-region resize may
    differ by one grey level on a few pixels (Pillow's filter positions in floating point),
    nowhere by more. Shrinking (640x480, 128x96) and enlarging (50x40) to 64 px.
    """
    h, w = shape
    image = _natural_image(max(h, w))[:h, :w]
    blurred = blur_frame(image, 10.0)
    boxes = _random_boxes(np.random.default_rng(h), w, h, 25)
    fast = isolation.resize_blur_isolations(image, blurred, boxes, 64, resample)
    differing = 0
    for box, got in zip(boxes, fast):
        want = resize_square(isolate_blur(image, blurred, box), 64, resample)
        assert got.shape == want.shape and got.dtype == want.dtype
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1, box
        differing += int(np.count_nonzero(diff))
    assert differing <= 0.005 * len(boxes) * 64 * 64 * 3
    # the sharp box really is inside: a box's resized isolation differs from the blur's
    base = resize_square(blurred, 64, resample)
    assert np.abs(fast[0].astype(int) - base).max() > 10


def test_normalise_batch_is_the_float32_formula_bit_for_bit():
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (9, 9, 3), dtype=np.uint8) for _ in range(4)]
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    got = isolation.normalise_batch(images, mean, std)
    stack = np.stack(images).astype(np.float32) / np.float32(255.0)
    want = ((stack - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
    want = want.transpose(0, 3, 1, 2)
    assert got.dtype == np.float32 and got.flags['C_CONTIGUOUS']
    assert np.array_equal(got, want)
