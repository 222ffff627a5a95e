"""precision 'int8': dynamically quantised linear layers (oneDNN), on tiny random models."""

import numpy as np
import pytest
import torch
from torch import nn

from reclip_ros.core import int8
from reclip_ros.core.int8 import Int8Linear, int8_unavailable, quantize_linears
from reclip_ros.core.models import ClipModel
from reclip_ros.core.types import DeviceError

pytestmark = pytest.mark.skipif(int8_unavailable('cpu') is not None,
                                reason=str(int8_unavailable('cpu')))


def _reference_int8_linear(x, weight, bias):
    """The same arithmetic written out in float64 (independent of oneDNN)."""
    x = x.double()
    w = weight.double()
    w_scale = w.abs().amax(dim=1) / 63.0  # 7-bit weights (see reclip_ros.core.int8)
    w_q = torch.round(w / w_scale[:, None]).clamp(-63, 63)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255.0
    zp = round(-lo / scale)
    x_q = torch.clamp(torch.round(x / scale) + zp, 0, 255)
    return ((x_q - zp) * scale) @ (w_q * w_scale[:, None]).t() + bias.double()


def test_int8_linear_matches_the_quantised_arithmetic_and_stays_close_to_fp32():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(2, 7, 64)
    layer = Int8Linear(linear)
    with torch.inference_mode():
        got = layer(x)
        exact = linear(x)
    assert got.shape == (2, 7, 48) and got.dtype == torch.float32
    want = _reference_int8_linear(x.reshape(-1, 64), linear.weight, linear.bias).reshape(2, 7, 48)
    # oneDNN accumulates in int32 and rescales in fp32: equal to the float64 model of it
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)
    # and close to the fp32 layer (8-bit error, not a different function)
    err = (got - exact).abs().max() / exact.abs().max()
    assert 0 < err < 0.03


def test_int8_linear_without_bias_and_with_an_all_zero_input():
    linear = nn.Linear(16, 8, bias=False)
    layer = Int8Linear(linear)
    with torch.inference_mode():
        assert torch.equal(layer(torch.zeros(3, 16)), torch.zeros(3, 8))
        x = torch.rand(3, 16)  # all positive: the range still includes 0
        torch.testing.assert_close(layer(x), linear(x), atol=0.05, rtol=0.05)


def test_compiled_and_eager_quantisation_give_the_same_codes():
    x = torch.randn(33, 17) * 3 + 1
    codes, scale, zp = int8._quantizer()(x)
    want_codes, want_scale, want_zp = int8._quantize_eager(x)
    assert torch.equal(codes, want_codes)
    assert float(scale) == pytest.approx(float(want_scale))
    assert float(zp) == float(want_zp)
    assert codes.dtype == torch.uint8


def test_quantize_linears_replaces_every_linear():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 4)))
    assert quantize_linears(model) == 2
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 2


def test_int8_is_cpu_only():
    assert int8_unavailable('cpu') is None
    assert 'CPU only' in int8_unavailable('cuda:0')


def test_int8_clip_model_loads_scores_and_ranks_like_fp32(tiny_clip_dir):
    fp32 = ClipModel.load(tiny_clip_dir, device='cpu', precision='fp32')
    q = ClipModel.load(tiny_clip_dir, device='cpu', precision='int8')
    assert q.quantized and 'int8' in q.describe()
    # every linear layer computes in int8 (q, k and v as one product) and so does the
    # patch convolution
    assert not any(type(m) is nn.Linear for m in q.model.modules())
    shared = [m for m in q.model.modules() if isinstance(m, int8.Int8SharedProjection)]
    attention = [m for m in fp32.model.modules() if hasattr(m, 'q_proj')]
    assert len(shared) == 3 * len(attention) > 0
    assert isinstance(q.model.vision_model.embeddings.patch_embedding, int8.Int8PatchEmbedding)
    rng = np.random.default_rng(1)
    pixels = rng.normal(size=(12, 3, q.image_size, q.image_size)).astype(np.float32)
    texts = ['a photo of the red mug', 'a photo of a laptop', 'a photo of a green cube']
    img, img32 = q.encode_images(pixels), fp32.encode_images(pixels)
    txt, txt32 = q.encode_texts(texts), fp32.encode_texts(texts)
    assert torch.all((img * img32).sum(-1) > 0.99)
    assert torch.all((txt * txt32).sum(-1) > 0.99)
    # the box each text would pick is the same
    assert torch.equal((txt @ img.t()).argmax(1), (txt32 @ img32.t()).argmax(1))


def test_int8_on_cuda_is_refused_with_the_reason(tiny_clip_dir, monkeypatch):
    from reclip_ros.core import models
    monkeypatch.setattr(models, 'resolve_device', lambda device: 'cuda:0')
    with pytest.raises(DeviceError, match='CPU only'):
        ClipModel.load(tiny_clip_dir, device='cuda', precision='int8')


def test_quick_gelu_mlp_is_fused_and_computes_the_same_function():
    from transformers.activations import QuickGELUActivation

    class MLP(nn.Module):  # the shape of transformers' CLIPMLP
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 32)
            self.activation_fn = QuickGELUActivation()

        def forward(self, x):
            return self.fc2(self.activation_fn(self.fc1(x)))

    torch.manual_seed(1)
    mlp = MLP()
    x = torch.randn(5, 32)
    with torch.inference_mode():
        exact = mlp(x)
        assert quantize_linears(mlp) == 2
        assert isinstance(mlp.activation_fn, nn.Identity) and mlp.fc1.post_op == 'swish'
        got = mlp(x)
    err = (got - exact).abs().max() / exact.abs().max()
    assert err < 0.03


def test_a_failing_compiled_quantiser_falls_back_to_eager(monkeypatch):
    def broken(x):
        raise RuntimeError('no compiler for this shape')

    monkeypatch.setattr(int8, '_QUANTIZE', broken)
    x = torch.randn(6, 5)
    codes, _, _ = int8.quantize_activations(x)
    assert torch.equal(codes, int8._quantize_eager(x)[0])
    assert int8._QUANTIZE is int8._quantize_eager


def test_q_k_v_share_one_product_and_each_equals_the_quantised_arithmetic():
    """q, k and v of one input come from one quantisation and one stacked product."""
    torch.manual_seed(4)
    layers = [nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 16)]
    holder = nn.Module()
    for name, layer in zip(int8.QKV_NAMES, layers):
        setattr(holder, name, layer)
    assert quantize_linears(holder) == 3
    x = torch.randn(2, 5, 32)
    stacked_w = torch.cat([m.weight for m in layers])
    stacked_b = torch.cat([m.bias for m in layers])
    want = _reference_int8_linear(x.reshape(-1, 32), stacked_w, stacked_b).reshape(2, 5, 80)
    want = want.split([32, 32, 16], dim=-1)
    with torch.inference_mode():
        got = [getattr(holder, name)(x) for name in int8.QKV_NAMES]
        for g, w in zip(got, want):
            torch.testing.assert_close(g.double(), w, atol=1e-4, rtol=1e-4)
        # a layer called on another input computes for that input, not the kept one
        other = torch.randn(3, 32) * 4
        k_alone = holder.k_proj(other)
        want_k = _reference_int8_linear(other, layers[1].weight, layers[1].bias)
        # the stacked product quantises the weights per row: k's rows are k's own
        torch.testing.assert_close(k_alone.double(), want_k, atol=1e-4, rtol=1e-4)
        # the same tensor object again after a full q, k, v round computes afresh too
        again = [getattr(holder, name)(x) for name in int8.QKV_NAMES]
        for g, a in zip(got, again):
            assert torch.equal(g, a)


def test_patch_convolution_is_an_int8_product_of_the_flattened_patches():
    """Reference: torch's convolution (fp32) and the quantised arithmetic on patches."""
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 24, kernel_size=8, stride=8, bias=False)
    layer = int8.Int8PatchEmbedding(conv)
    x = torch.randn(2, 3, 32, 40)
    with torch.inference_mode():
        got = layer(x)
        exact = conv(x)
    assert got.shape == exact.shape == (2, 24, 4, 5)
    patches = torch.nn.functional.unfold(x, kernel_size=8, stride=8)  # (B, 3*8*8, 20)
    want = _reference_int8_linear(patches.transpose(1, 2).reshape(-1, 192),
                                  conv.weight.reshape(24, -1), torch.zeros(24))
    want = want.reshape(2, 20, 24).transpose(1, 2).reshape(2, 24, 4, 5)
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)
    err = (got - exact).abs().max() / exact.abs().max()
    assert 0 < err < 0.03
    # only a plain patchifying convolution qualifies
    assert int8.Int8PatchEmbedding.applies_to(conv)
    assert not int8.Int8PatchEmbedding.applies_to(nn.Conv2d(3, 8, 3, stride=3, padding=1))
    assert not int8.Int8PatchEmbedding.applies_to(nn.Conv2d(3, 8, 4, stride=2))
