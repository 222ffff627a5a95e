"""ClipModel loading, devices, precision and encoding, on tiny random checkpoints (CPU)."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from reclip_ros.core import models as models_mod
from reclip_ros.core.models import (ClipModel, load_models, resolve_device,
                                    resolve_model_path, resolve_precision)
from reclip_ros.core.random_models import build_clip_tokenizer, save_random_clip
from reclip_ros.core.types import DeviceError, ModelLoadError


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
