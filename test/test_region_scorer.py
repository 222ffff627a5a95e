"""RegionScorer: ensemble logits against a manual computation, caching, LRU bounds, errors."""

import threading

import numpy as np
import pytest
import torch

from reclip_ros.core import region_scorer as scorer_mod
from reclip_ros.core.isolation import blur_frame, isolate_blur, isolate_crop, to_model_input
from reclip_ros.core.models import ClipModel
from reclip_ros.core.region_scorer import RegionScorer
from reclip_ros.core.types import Box


@pytest.fixture(scope='module')
def pair(tiny_clip_dir, tiny_clip_dir_b):
    return (ClipModel.load(tiny_clip_dir, device='cpu'),
            ClipModel.load(tiny_clip_dir_b, device='cpu'))


@pytest.fixture
def image():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)


BOXES = [Box(0, 0, 20, 30), Box(30.5, 10.2, 25.0, 20.7), Box(60, 40, 30, 30), Box(5, 45, 8, 6)]


class CallCounter:
    """Wrap a model method and count its calls (the model itself is the real one)."""

    def __init__(self, monkeypatch, obj, name):
        self.calls = 0
        original = getattr(obj, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(obj, name, counted)


def _manual_logits(models, image, boxes, text, methods=('crop', 'blur'), sigma=100.0):
    blurred = blur_frame(image, sigma)
    total = np.zeros(len(boxes))
    for model in models:
        net, tok = model.model, model.tokenizer
        enc = tok(['a photo of ' + text.lower()], padding=True, return_tensors='pt')
        with torch.no_grad():
            t = net.get_text_features(input_ids=enc['input_ids'],
                                      attention_mask=enc['attention_mask'])
            t = getattr(t, 'pooler_output', t)[0]
            t = t / t.norm()
            for method in methods:
                if method == 'crop':
                    isolated = [isolate_crop(image, b) for b in boxes]
                else:
                    isolated = [isolate_blur(image, blurred, b) for b in boxes]
                pixels = to_model_input(isolated, model.image_size, model.image_mean,
                                        model.image_std)
                f = net.get_image_features(pixel_values=torch.from_numpy(pixels))
                f = getattr(f, 'pooler_output', f)
                f = f / f.norm(dim=-1, keepdim=True)
                scale = net.logit_scale.exp().item()
                total += (scale * (f @ t)).numpy()
    return total


def test_prompt_format():
    assert RegionScorer.prompt('The Red MUG left of the laptop') == \
        'a photo of the red mug left of the laptop'
    assert RegionScorer.prompt('  mug ') == 'a photo of mug'


def test_ensemble_sums_logits_over_models_and_methods(pair, image):
    scorer = RegionScorer(pair, blur_sigma=100.0)
    frame = scorer.encode_frame(image, BOXES)
    text = 'The red mug'
    got = scorer.logits(frame, text)
    want = _manual_logits(pair, image, BOXES, text)
    assert got.shape == (len(BOXES),)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    # Each model alone, and each method alone, are the parts of the sum.
    single = RegionScorer(pair[:1]).logits(RegionScorer(pair[:1]).encode_frame(image, BOXES),
                                          text)
    np.testing.assert_allclose(single, _manual_logits(pair[:1], image, BOXES, text),
                               rtol=1e-4, atol=1e-3)
    crop = scorer.logits(frame, text, methods=['crop'])
    blur = scorer.logits(frame, text, methods=['blur'])
    np.testing.assert_allclose(crop + blur, got, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(crop, _manual_logits(pair, image, BOXES, text, ('crop',)),
                               rtol=1e-4, atol=1e-3)


def test_logits_many_matches_logits(pair, image):
    scorer = RegionScorer(pair)
    frame = scorer.encode_frame(image, BOXES)
    texts = ['the mug', 'the laptop', 'the book on the left']
    many = scorer.logits_many(frame, texts)
    assert many.shape == (3, len(BOXES))
    for row, text in zip(many, texts):
        np.testing.assert_allclose(row, scorer.logits(frame, text), rtol=1e-5, atol=1e-4)


def test_probabilities_are_a_softmax(pair, image):
    scorer = RegionScorer(pair)
    frame = scorer.encode_frame(image, BOXES)
    p = scorer.probabilities(frame, 'the mug')
    z = scorer.logits(frame, 'the mug')
    assert p.sum() == pytest.approx(1.0)
    assert np.argmax(p) == np.argmax(z)


def test_second_expression_does_no_image_encoding(monkeypatch, pair, image):
    counters = [CallCounter(monkeypatch, m.model, 'get_image_features') for m in pair]
    scorer = RegionScorer(pair, batch_size=32)
    frame = scorer.encode_frame(image, BOXES, frame_key=('cam', 1))
    assert not frame.from_cache
    assert frame.image_encoding_ms > 0 and frame.isolation_ms > 0
    assert [c.calls for c in counters] == [1, 1]  # one batched pass per model
    scorer.logits(frame, 'the red mug')
    again = scorer.encode_frame(image, BOXES, frame_key=('cam', 1))
    scorer.logits(again, 'the laptop near the book')
    assert again.from_cache and again.image_encoding_ms == 0.0
    assert [c.calls for c in counters] == [1, 1]
    # Without a frame key, identical bytes are recognised; changed bytes are not.
    scorer.encode_frame(image, BOXES)
    scorer.encode_frame(image.copy(), BOXES)
    assert [c.calls for c in counters] == [2, 2]
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    assert not scorer.encode_frame(changed, BOXES).from_cache
    # Other boxes on the same frame are another entry.
    assert not scorer.encode_frame(image, BOXES[:2], frame_key=('cam', 1)).from_cache
    stats = scorer.stats()
    assert stats['frame_cache_hits'] == 2 and stats['frames_encoded'] == 4


def test_text_embeddings_are_cached(monkeypatch, pair, image):
    counters = [CallCounter(monkeypatch, m.model, 'get_text_features') for m in pair]
    scorer = RegionScorer(pair)
    frame = scorer.encode_frame(image, BOXES)
    first = scorer.logits(frame, 'the red mug')
    spent = scorer.text_encoding_ms_total
    assert spent > 0 and [c.calls for c in counters] == [1, 1]
    second = scorer.logits(frame, 'The Red Mug')  # same prompt after lower-casing
    assert [c.calls for c in counters] == [1, 1]
    assert scorer.text_encoding_ms_total == spent
    np.testing.assert_array_equal(first, second)
    scorer.logits_many(frame, ['the red mug', 'a book', 'a laptop'])
    assert [c.calls for c in counters] == [2, 2]  # the two new prompts in one batch
    assert scorer.text_encoding_ms_total > spent
    assert scorer.stats()['texts_encoded'] == 2 * 3


def test_frame_cache_is_bounded_lru(monkeypatch, pair, image):
    counter = CallCounter(monkeypatch, pair[0].model, 'get_image_features')
    scorer = RegionScorer(pair[:1], frame_cache_size=2)
    for key in ('a', 'b', 'c'):
        scorer.encode_frame(image, BOXES, frame_key=key)
    assert counter.calls == 3 and scorer.stats()['frames_cached'] == 2
    assert scorer.encode_frame(image, BOXES, frame_key='c').from_cache
    assert scorer.encode_frame(image, BOXES, frame_key='b').from_cache
    assert not scorer.encode_frame(image, BOXES, frame_key='a').from_cache  # evicted
    assert not scorer.encode_frame(image, BOXES, frame_key='c').from_cache  # LRU victim
    no_cache = RegionScorer(pair[:1], frame_cache_size=0)
    no_cache.encode_frame(image, BOXES, frame_key='x')
    assert not no_cache.encode_frame(image, BOXES, frame_key='x').from_cache


def test_text_cache_is_bounded(pair, image):
    scorer = RegionScorer(pair, text_cache_size=3)
    frame = scorer.encode_frame(image, BOXES)
    for i in range(5):
        scorer.logits(frame, f'object {i}')
    assert scorer.stats()['texts_cached'] == 3


def test_batches_are_chunked(monkeypatch, pair, image):
    reference = RegionScorer(pair[:1]).encode_frame(image, BOXES)
    counter = CallCounter(monkeypatch, pair[0].model, 'get_image_features')
    scorer = RegionScorer(pair[:1], batch_size=3)
    frame = scorer.encode_frame(image, BOXES)
    assert counter.calls == 3  # 4 boxes x 2 methods = 8 images in chunks of 3
    for key, emb in frame.embeddings.items():
        torch.testing.assert_close(emb, reference.embeddings[key], atol=1e-5, rtol=1e-4)


def test_frame_blur_is_computed_once(monkeypatch, pair, image):
    calls = []
    original = scorer_mod.blur_frame

    def counted(img, sigma):
        calls.append(sigma)
        return original(img, sigma)
    monkeypatch.setattr(scorer_mod, 'blur_frame', counted)
    scorer = RegionScorer(pair, blur_sigma=20.0)
    scorer.encode_frame(image, BOXES)
    assert calls == [20.0]
    RegionScorer(pair, methods=('crop',)).encode_frame(image, BOXES)
    assert calls == [20.0]


def test_bad_inputs_give_clear_errors(pair, image):
    scorer = RegionScorer(pair, methods=('crop',))
    with pytest.raises(ValueError, match='uint8'):
        scorer.encode_frame(image.astype(np.float32), BOXES)
    with pytest.raises(ValueError, match='RGB'):
        scorer.encode_frame(image[:, :, 0], BOXES)
    with pytest.raises(ValueError, match='numpy'):
        scorer.encode_frame([[1, 2, 3]], BOXES)
    with pytest.raises(ValueError, match='positive'):
        scorer.encode_frame(image, [[0, 0, 0, 5]])
    frame = scorer.encode_frame(image, [[0, 0, 10, 10]])
    with pytest.raises(ValueError, match='empty'):
        scorer.logits(frame, '   ')
    with pytest.raises(ValueError, match='not available'):
        scorer.logits(frame, 'mug', methods=['blur'])
    with pytest.raises(ValueError):
        RegionScorer(pair, methods=('sharpen',))
    with pytest.raises(ValueError):
        RegionScorer([], methods=('crop',))
    with pytest.raises(ValueError):
        RegionScorer(pair, batch_size=0)


def test_no_boxes_gives_empty_scores(pair, image):
    scorer = RegionScorer(pair)
    frame = scorer.encode_frame(image, [])
    assert len(frame) == 0
    assert scorer.logits(frame, 'the mug').shape == (0,)


def test_stats_can_be_read_while_scoring(pair, image):
    scorer = RegionScorer(pair, frame_cache_size=1)
    errors, stop = [], threading.Event()

    def reader():
        try:
            while not stop.is_set():
                scorer.stats()
                _ = scorer.text_encoding_ms_total
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(6):
            frame = scorer.encode_frame(image, BOXES, frame_key=i % 2)
            scorer.logits(frame, f'thing {i}')
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert scorer.stats()['frames_encoded'] == 6


def test_close_unloads_models(tiny_clip_dir, image):
    model = ClipModel.load(tiny_clip_dir, device='cpu')
    scorer = RegionScorer([model])
    scorer.encode_frame(image, BOXES)
    scorer.close()
    assert scorer.stats()['frames_cached'] == 0
    assert not model.loaded


def test_boxes_with_the_same_pixels_share_the_cache(pair, image):
    scorer = RegionScorer(pair[:1])
    box = Box(30.5, 10.2, 25.0, 20.7)
    first = scorer.encode_frame(image, [box], frame_key='f')
    clipped = box.clipped(image.shape[1], image.shape[0])  # x2 - x1 may differ by rounding
    same = scorer.encode_frame(image, [Box(box.x, box.y, box.width + 1e-9, box.height)],
                               frame_key='f')
    assert same.from_cache and same.boxes[0].width == box.width + 1e-9
    assert scorer.encode_frame(image, [clipped], frame_key='f').from_cache
    assert not scorer.encode_frame(image, [Box(box.x, box.y, box.width + 1.0, box.height)],
                                   frame_key='f').from_cache
    assert first.boxes == (box,)


def test_chunks_are_balanced(pair):
    scorer = RegionScorer(pair[:1], batch_size=32)
    assert [scorer.chunk_size(t) for t in (1, 32, 33, 40, 64, 65)] == [1, 32, 17, 20, 32, 22]
