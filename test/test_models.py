"""ClipModel loading, devices, precision and encoding, on tiny random checkpoints (CPU)."""

import json
import math
import os
import string
from pathlib import Path

import numpy as np
import pytest
import torch

from reclip_ros.core import models as models_mod
from reclip_ros.tools import random_models
from reclip_ros.core.models import (ClipModel, load_models, resolve_device,
                                    resolve_model_path, resolve_precision)
from reclip_ros.tools.random_models import build_clip_tokenizer, save_random_clip
from reclip_ros.core.types import Box, DeviceError, ModelLoadError


@pytest.fixture(scope='module')
def tiny(tiny_clip_dir):
    return ClipModel.load(tiny_clip_dir, device='cpu')


def _pixels(n, size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3, size, size)).astype(np.float32)


def test_load_reports_device_dtype_and_preprocessing(tiny, tiny_clip_dir):
    processor = json.loads((Path(tiny_clip_dir) / 'preprocessor_config.json').read_text())
    assert tiny.device == 'cpu'
    assert tiny.dtype == torch.float32
    assert tiny.image_size == processor['crop_size']['height']
    assert tiny.image_mean == pytest.approx(processor['image_mean'])
    assert tiny.image_std == pytest.approx(processor['image_std'])
    raw = tiny.model.logit_scale.detach().item()
    assert tiny.logit_scale == pytest.approx(math.exp(raw))
    assert tiny.logit_bias == 0.0
    assert tiny.name == tiny_clip_dir


def test_encodings_match_transformers_from_pretrained(tiny, tiny_clip_dir):
    from transformers import AutoTokenizer, CLIPModel
    ref = CLIPModel.from_pretrained(tiny_clip_dir, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(tiny_clip_dir)
    texts = ['a photo of the red mug', 'a photo of a laptop left of the book']
    pixels = _pixels(3, tiny.image_size)
    with torch.no_grad():
        img = ref.get_image_features(pixel_values=torch.from_numpy(pixels))
        img = getattr(img, 'pooler_output', img)
        enc = tok(texts, padding=True, return_tensors='pt')
        txt = ref.get_text_features(input_ids=enc['input_ids'],
                                    attention_mask=enc['attention_mask'])
        txt = getattr(txt, 'pooler_output', txt)
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    got_img = tiny.encode_images(pixels)
    got_txt = tiny.encode_texts(texts)
    assert got_img.dtype == torch.float32 and got_img.device.type == 'cpu'
    torch.testing.assert_close(got_img, img, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_txt, txt, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_img.norm(dim=-1), torch.ones(3))


def test_encode_texts_does_not_depend_on_batch_padding(tiny):
    alone = tiny.encode_texts(['a photo of a mug'])
    padded = tiny.encode_texts(['a photo of a mug', 'a photo of the big blue bowl on the shelf'])
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-4)


def test_two_seeds_give_different_models(tiny, tiny_clip_dir_b):
    other = ClipModel.load(tiny_clip_dir_b, device='cpu')
    pixels = _pixels(2, tiny.image_size)
    assert not torch.allclose(tiny.encode_images(pixels), other.encode_images(pixels))


def test_bad_pixel_batch_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match='batch'):
        tiny.encode_images(np.zeros((3, 32, 32), np.float32))


def test_bf16_precision_is_close_to_fp32(tiny, tiny_clip_dir):
    bf16 = ClipModel.load(tiny_clip_dir, device='cpu', precision='bf16')
    assert bf16.dtype == torch.bfloat16
    pixels = _pixels(4, tiny.image_size, seed=3)
    got = bf16.encode_images(pixels)
    assert got.dtype == torch.float32
    cos = (got * tiny.encode_images(pixels)).sum(-1)
    assert torch.all(cos > 0.98)


def test_precision_resolution():
    assert resolve_precision('auto', 'cpu') == torch.float32
    assert resolve_precision('auto', 'cuda:0') == torch.float16
    assert resolve_precision('fp16', 'cpu') == torch.float16
    with pytest.raises(ValueError, match='precision'):
        resolve_precision('fp8', 'cpu')


def test_unknown_precision_fails_at_load(tiny_clip_dir):
    with pytest.raises(ModelLoadError, match='precision'):
        ClipModel.load(tiny_clip_dir, device='cpu', precision='int4')


def test_missing_hub_model_offline_names_model_and_fix(monkeypatch, tmp_path):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
    name = 'nobody-here/clip-model-that-does-not-exist'
    with pytest.raises(ModelLoadError) as info:
        ClipModel.load(name, device='cpu')
    message = str(info.value)
    assert name in message
    assert 'huggingface-cli download' in message and 'HF_HOME' in message


def test_nonexistent_directory(tmp_path):
    missing = str(tmp_path / 'no' / 'such' / 'model')
    with pytest.raises(ModelLoadError, match='does not exist'):
        ClipModel.load(missing, device='cpu')


def test_directory_without_weights(tmp_path, tiny_clip_dir):
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'config.json').write_text((Path(tiny_clip_dir) / 'config.json').read_text())
    with pytest.raises(ModelLoadError, match='safetensors'):
        ClipModel.load(str(broken), device='cpu')


def test_non_clip_model_is_rejected(tmp_path, tiny_clip_dir):
    import shutil

    from transformers import ViTConfig, ViTModel
    vit_dir = tmp_path / 'vit'
    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, image_size=32, patch_size=16)
    ViTModel(config).save_pretrained(str(vit_dir), safe_serialization=True)
    for name in os.listdir(tiny_clip_dir):
        if name not in ('config.json', 'model.safetensors'):
            shutil.copy(os.path.join(tiny_clip_dir, name), vit_dir / name)
    with pytest.raises(ModelLoadError, match='not a CLIP-family'):
        ClipModel.load(str(vit_dir), device='cpu')


def test_load_models_ensemble(tiny_clip_dir, tiny_clip_dir_b):
    pair = load_models([tiny_clip_dir, tiny_clip_dir_b], device='cpu')
    assert [m.name for m in pair] == [tiny_clip_dir, tiny_clip_dir_b]
    with pytest.raises(ModelLoadError):
        load_models([], device='cpu')


def test_unload_frees_the_model(tiny_clip_dir):
    model = ClipModel.load(tiny_clip_dir, device='cpu')
    model.unload()
    assert not model.loaded
    with pytest.raises(RuntimeError, match='unloaded'):
        model.encode_texts(['a photo of a mug'])


def test_device_resolution_on_this_machine():
    if torch.cuda.is_available():
        assert resolve_device('auto').startswith('cuda:')
    else:
        assert resolve_device('auto') == 'cpu'
        for name in ('cuda', 'cuda:0', 'CUDA:1'):
            with pytest.raises(DeviceError, match='CUDA is not available'):
                resolve_device(name)
    assert resolve_device('cpu') == 'cpu'
    with pytest.raises(DeviceError, match='unknown device'):
        resolve_device('tpu')


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only failure')
def test_load_on_cuda_without_cuda(tiny_clip_dir):
    with pytest.raises(DeviceError):
        ClipModel.load(tiny_clip_dir, device='cuda')


def test_resolve_model_path(monkeypatch, tmp_path, tiny_clip_dir):
    assert resolve_model_path('org/model') == 'org/model'
    assert resolve_model_path(tiny_clip_dir) == os.path.abspath(tiny_clip_dir)
    with pytest.raises(ModelLoadError):
        resolve_model_path('  ')
    places = models_mod._package_model_dirs('sim_clip')
    repo_root = Path(models_mod.__file__).resolve().parents[2]
    assert repo_root / 'models' / 'sim_clip' in places
    assert any(str(p).endswith(os.path.join('share', 'reclip_ros', 'models', 'sim_clip'))
               for p in places)
    empty, full = tmp_path / 'a' / 'sim_clip', tmp_path / 'b' / 'sim_clip'
    full.mkdir(parents=True)
    (full / 'config.json').write_text('{}')
    monkeypatch.setattr(models_mod, '_package_model_dirs', lambda name: [empty, full])
    assert resolve_model_path('sim') == str(full)
    monkeypatch.setattr(models_mod, '_package_model_dirs', lambda name: [empty])
    with pytest.raises(ModelLoadError, match='sim'):
        resolve_model_path('sim')


def test_tokenizer_keeps_known_words_whole(tmp_path):
    tok = build_clip_tokenizer(tmp_path / 'tok', extra_words=['spatula'])
    tokens = tok.convert_ids_to_tokens(
        tok('pick up the red mug left of the Spatula')['input_ids'])
    assert tokens[0] == '<|startoftext|>' and tokens[-1] == '<|endoftext|>'
    assert tokens[1:-1] == ['pick</w>', 'up</w>', 'the</w>', 'red</w>', 'mug</w>',
                            'left</w>', 'of</w>', 'the</w>', 'spatula</w>']
    # Unknown words fall back to smaller pieces, never to the unknown token.
    ids = tok('zyxwv qq!')['input_ids']
    assert tok.unk_token_id not in ids[1:-1]
    assert (tmp_path / 'tok' / 'vocab.json').is_file()
    assert (tmp_path / 'tok' / 'merges.txt').is_file()


def test_unknown_preset(tmp_path):
    with pytest.raises(ValueError, match='preset'):
        save_random_clip(tmp_path, preset='vit-h-14')


def test_tiny_owlv2_loads_with_auto_classes(tiny_owlv2_dir):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
    model = AutoModelForZeroShotObjectDetection.from_pretrained(tiny_owlv2_dir,
                                                                use_safetensors=True)
    processor = AutoProcessor.from_pretrained(tiny_owlv2_dir)
    text = processor(text=[['a red mug', 'a laptop']], return_tensors='pt',
                     padding='max_length')
    with torch.no_grad():
        out = model(pixel_values=torch.zeros(1, 3, 64, 64), **text)
    assert out.logits.shape == (1, 64, 2)
    assert out.pred_boxes.shape == (1, 64, 4)


# --------------------------------------------------------------------------- SigLIP
SIGLIP_PROMPTS = ['a photo of the red mug', 'a photo of a laptop left of the book',
                  'a photo of the small green bottle']


@pytest.fixture(scope='module')
def siglip(tiny_siglip_dir):
    return ClipModel.load(tiny_siglip_dir, device='cpu')


def _reference_siglip(directory):
    """The checkpoint loaded straight through transformers, without ClipModel."""
    from transformers import AutoTokenizer, SiglipModel
    model = SiglipModel.from_pretrained(directory, use_safetensors=True).eval()
    return model, AutoTokenizer.from_pretrained(directory)


def _scene(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    image[10:50, 10:45] = (220, 30, 30)
    image[40:85, 60:110] = (30, 30, 220)
    boxes = [[10, 10, 35, 40], [60, 40, 50, 45], [0, 0, 120, 90], [45, 5, 30, 30]]
    return image, boxes


def test_siglip_loads_through_the_clip_path(siglip, tiny_siglip_dir):
    processor = json.loads((Path(tiny_siglip_dir) / 'preprocessor_config.json').read_text())
    config = json.loads((Path(tiny_siglip_dir) / 'config.json').read_text())
    assert processor['image_processor_type'] == 'SiglipImageProcessor'
    assert siglip.model_type == 'siglip'
    assert type(siglip.model).__name__ == 'SiglipModel'
    assert siglip.image_size == processor['size']['height'] == 48
    assert siglip.image_mean == pytest.approx(processor['image_mean'])
    assert siglip.image_std == pytest.approx(processor['image_std'])
    assert siglip.text_max_length == config['text_config']['max_position_embeddings']
    raw_scale = siglip.model.logit_scale.detach().item()
    raw_bias = siglip.model.logit_bias.detach().item()
    assert siglip.logit_scale == pytest.approx(math.exp(raw_scale))
    assert siglip.logit_bias == pytest.approx(raw_bias)
    assert siglip.logit_bias != 0.0  # SigLIP's bias is part of every logit
    if random_models.protobuf_available():
        assert type(siglip.tokenizer).__name__ == 'SiglipTokenizer'


def test_siglip_text_is_padded_to_max_length_without_mask(siglip):
    inputs = siglip.tokenize(['a photo of a mug', SIGLIP_PROMPTS[1]])
    assert set(inputs) == {'input_ids'}  # SigLIP was trained without an attention mask
    ids = inputs['input_ids']
    assert ids.shape == (2, siglip.text_max_length)
    pad = siglip.tokenizer.pad_token_id
    assert pad == siglip.tokenizer.eos_token_id
    assert torch.all(ids[:, -1] == pad)  # the pooled last position is a pad/eos token
    # Fixed-length padding: an embedding does not depend on the other texts of the batch.
    alone = siglip.encode_texts(['a photo of a mug'])
    batch = siglip.encode_texts(['a photo of a mug', SIGLIP_PROMPTS[1]])
    torch.testing.assert_close(alone[0], batch[0], atol=1e-6, rtol=1e-5)


def test_siglip_logits_match_the_model_forward(siglip, tiny_siglip_dir):
    ref, tok = _reference_siglip(tiny_siglip_dir)
    pixels = _pixels(3, siglip.image_size, seed=5)
    enc = tok(SIGLIP_PROMPTS, padding='max_length', max_length=siglip.text_max_length,
              truncation=True, return_tensors='pt')
    with torch.no_grad():
        expected = ref(input_ids=enc['input_ids'],
                       pixel_values=torch.from_numpy(pixels)).logits_per_image
        masked = ref(input_ids=enc['input_ids'], attention_mask=enc['attention_mask'],
                     pixel_values=torch.from_numpy(pixels)).logits_per_image
    img = siglip.encode_images(pixels)
    txt = siglip.encode_texts(SIGLIP_PROMPTS)
    got = siglip.logit_scale * img @ txt.T + siglip.logit_bias
    assert got.shape == expected.shape == (3, len(SIGLIP_PROMPTS))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # The check can fail: masking the pad tokens (not how SigLIP was trained) changes them.
    assert (masked - expected).abs().max() > 1e-3


def test_siglip_region_logits_match_the_model_forward(siglip, tiny_siglip_dir):
    from reclip_ros.core.isolation import to_model_input
    from reclip_ros.core.region_scorer import RegionScorer

    ref, tok = _reference_siglip(tiny_siglip_dir)
    image, boxes = _scene()
    scorer = RegionScorer([siglip], batch_size=3)  # several chunks per frame
    frame = scorer.encode_frame(image, boxes)
    got = scorer.logits(frame, 'The red mug')
    isolated = scorer.isolated_images(image, frame.boxes)
    ids = tok(['a photo of the red mug'], padding='max_length',
              max_length=siglip.text_max_length, return_tensors='pt')['input_ids']
    expected = np.zeros(len(boxes))
    for method in ('crop', 'blur'):
        batch = to_model_input(isolated[method], siglip.image_size, siglip.image_mean,
                               siglip.image_std)
        with torch.no_grad():
            out = ref(input_ids=ids, pixel_values=torch.from_numpy(batch))
        expected += out.logits_per_image[:, 0].double().numpy()
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-5)


def test_fast_siglip_tokenizer_matches_sentencepiece(tmp_path):
    import sentencepiece as spm

    tok = random_models.build_siglip_tokenizer(tmp_path / 'fast', fmt='fast', max_length=32)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / 'fast' / 'spiece.model'))
    texts = ['a photo of the red mug', 'A photo of THE Laptop, left of the book!',
             '  pick   up the mug near the  lamp. ', "the robot's gripper (left)",
             'zyxwv qq 42 spatula']
    for text in texts:
        # SiglipTokenizer's canonicalisation: lower case, no punctuation, single spaces.
        canonical = ' '.join(text.lower().translate(
            str.maketrans('', '', string.punctuation)).split())
        expected = sp.encode(canonical) + [sp.eos_id()]
        assert tok(text)['input_ids'] == expected, text
    assert sp.unk_id() not in tok('zyxwv qq 42 spatula')['input_ids']
    pieces = tok.convert_ids_to_tokens(tok('pick up the red mug left of the laptop')['input_ids'])
    assert pieces == ['\u2581pick', '\u2581up', '\u2581the', '\u2581red', '\u2581mug',
                      '\u2581left', '\u2581of', '\u2581the', '\u2581laptop', '</s>']


def test_sentencepiece_siglip_tokenizer_equals_fast_twin(tmp_path):
    slow = random_models.build_siglip_tokenizer(tmp_path / 'sp', fmt='sentencepiece')
    fast = random_models.build_siglip_tokenizer(tmp_path / 'fast', fmt='fast')
    assert type(slow).__name__ == 'SiglipTokenizer'
    for text in ('a photo of the red mug', 'The Mug, left of the BOOK!', 'zyxwv 42 spatula'):
        assert slow(text)['input_ids'] == fast(text)['input_ids'], text


def test_siglip_tokenizer_format_is_checked(tmp_path):
    with pytest.raises(ValueError, match='format'):
        random_models.build_siglip_tokenizer(tmp_path, fmt='bpe')


def test_missing_tokenizer_package_names_the_package_and_the_fix():
    """Transformers' own "requires the protobuf/SentencePiece library" errors, as it words them.

    protobuf and sentencepiece are required dependencies (requirements.txt), so the real
    error cannot be produced in this venv; the texts are transformers' constants.
    """
    from transformers.utils import import_utils
    from reclip_ros.core.models import _missing_package_message
    for constant, package in ((import_utils.PROTOBUF_IMPORT_ERROR, 'protobuf'),
                              (import_utils.SENTENCEPIECE_IMPORT_ERROR, 'sentencepiece')):
        message = _missing_package_message('google/siglip-base-patch16-224',
                                           ImportError(constant.format('SiglipTokenizer')))
        assert f'pip install {package}' in message, message
        assert 'google/siglip-base-patch16-224' in message


def test_siglip2_is_rejected_with_a_reason(tmp_path, tiny_clip_dir):
    import shutil

    from transformers import Siglip2Config, Siglip2Model
    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                 num_attention_heads=2)
    config = Siglip2Config(text_config=dict(tower, vocab_size=600, max_position_embeddings=16),
                           vision_config=dict(tower, num_patches=16, patch_size=8))
    directory = tmp_path / 'siglip2'
    Siglip2Model(config).save_pretrained(str(directory), safe_serialization=True)
    for name in os.listdir(tiny_clip_dir):
        if name not in ('config.json', 'model.safetensors'):
            shutil.copy(os.path.join(tiny_clip_dir, name), directory / name)
    with pytest.raises(ModelLoadError, match='siglip2.*not supported'):
        ClipModel.load(str(directory), device='cpu')


def test_clip_plus_siglip_ensemble_in_region_scorer(tiny, siglip):
    from reclip_ros.core.region_scorer import RegionScorer

    assert tiny.image_size != siglip.image_size  # two input sizes, two preprocessings
    image, boxes = _scene(seed=1)
    both = RegionScorer([tiny, siglip])
    singles = [RegionScorer([tiny]), RegionScorer([siglip])]
    frame = both.encode_frame(image, boxes)
    for text in ('the red mug', 'the blue book on the right'):
        summed = sum(s.logits(s.encode_frame(image, boxes), text) for s in singles)
        got = both.logits(frame, text)
        np.testing.assert_allclose(got, summed, atol=1e-5, rtol=1e-6)
        probs = both.probabilities(frame, text)
        assert probs.shape == (len(boxes),) and np.all(probs >= 0)
        assert probs.sum() == pytest.approx(1.0)
        expected = np.exp(summed - summed.max())
        np.testing.assert_allclose(probs, expected / expected.sum(), atol=1e-6)
    # The SigLIP bias enters each (model, method) term once: 2 methods x -10.
    crop_blur = singles[1].logits(singles[1].encode_frame(image, boxes), 'the red mug')
    no_bias = crop_blur - 2 * siglip.logit_bias
    frame_s = singles[1].encode_frame(image, boxes)
    text_emb = singles[1].text_embeddings(['the red mug'])[0]
    cos_sum = sum((frame_s.embeddings[(0, m)] @ text_emb.T)[:, 0] for m in ('crop', 'blur'))
    np.testing.assert_allclose(no_bias, siglip.logit_scale * cos_sum.double().numpy(),
                               atol=1e-5)


def test_clip_plus_siglip_ensemble_through_grounder(tiny_clip_dir, tiny_siglip_dir):
    from reclip_ros.core.grounder import Grounder, GrounderConfig, GroundingOptions
    from reclip_ros.core.region_scorer import RegionScorer
    from reclip_ros.core.types import Status

    cfg = GrounderConfig(models=(tiny_clip_dir, tiny_siglip_dir), device='cpu',
                         spacy_model='en_core_web_sm')
    grounder = Grounder.from_config(cfg)
    try:
        assert grounder.model_names == [tiny_clip_dir, tiny_siglip_dir]
        assert [m.model_type for m in grounder.scorer.models] == ['clip', 'siglip']
        image, boxes = _scene(seed=2)
        expression = 'the red mug'
        result = grounder.ground(image, expression, boxes=boxes,
                                 options=GroundingOptions(use_relations=False))
        assert result.status == Status.OK, result.message
        scores = {tuple(c.box.to_list()): c.score for c in result.candidates}
        assert len(scores) == len(boxes)
        assert sum(scores.values()) == pytest.approx(1.0)
        assert all(0.0 <= s <= 1.0 for s in scores.values())
        text = grounder.parser.parse(expression).text
        summed = np.zeros(len(boxes))
        for model in grounder.scorer.models:
            single = RegionScorer([model])
            summed += single.logits(single.encode_frame(image, boxes), text)
        expected = np.exp(summed - summed.max())
        expected /= expected.sum()
        got = np.array([scores[tuple(Box.from_list(b).to_list())] for b in boxes])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert result.box.to_list() == Box.from_list(boxes[int(np.argmax(expected))]).to_list()
    finally:
        grounder.close()


def test_offload_and_restore_keep_the_model_usable(tiny_clip_dir):
    """On CPU offloading is a no-op; the model encodes the same before and after."""
    model = ClipModel.load(tiny_clip_dir, device='cpu')
    texts = ['a photo of the red cube']
    before = model.encode_texts(texts)
    assert model.offload() is False and not model.offloaded
    assert model.restore() is False
    after = model.encode_texts(texts)
    assert torch.allclose(before, after)


def test_encoding_after_offload_moves_the_model_back(tiny_clip_dir):
    """Restore an offloaded model on the next encode.

    The CUDA path is simulated by marking the CPU model offloaded.
    """
    model = ClipModel.load(tiny_clip_dir, device='cpu')
    expected = model.encode_texts(['a photo of a duck'])
    model.offloaded = True
    got = model.encode_texts(['a photo of a duck'])
    assert not model.offloaded
    assert torch.allclose(expected, got)
