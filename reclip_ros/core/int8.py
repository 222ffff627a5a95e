"""int8 inference on CPU: a model's ``nn.Linear`` layers replaced by dynamically quantised ones.

Why this path (measured on this project's 2-core machines, torch 2.13, ViT-B/32 vision
tower, 40 images; details in ``docs/scoring.md``):

- ``torch.ao.quantization.quantize_dynamic`` is deprecated in torch 2.13: it builds
  ``torch.qint8`` tensors, whose creation functions warn that they will be removed.
- Its documented successor, torchao (``quantize_(model,
  Int8DynamicActivationInt8WeightConfig())``), runs its int8 products through
  ``torch._int_mm``, which on CPU is a naive loop here: one 1000x768x3072 product took
  1.7-4.2 s against 72 ms in fp32, and the whole tower 16x slower than fp32, eager or
  compiled.
- PyTorch's own x86 quantisation flow (PT2E with the X86 inductor quantizer) lowers linear
  layers to oneDNN's ``onednn::qlinear_pointwise`` (u8 activations x s8 weights, VNNI).
  This module calls that kernel directly, on plain ``uint8`` / ``int8`` tensors (no
  deprecated quantised dtypes):

  - weights: symmetric per output channel over 7 bits (codes -63..63), packed once by
    ``onednn::qlinear_prepack``;
  - activations: asymmetric uint8 per tensor over the full 8 bits (codes 0..255), with the
    range taken from each call's input (dynamic quantisation, as ``quantize_dynamic``
    does); output in fp32 with the bias added by the kernel.

  Why 7-bit weights: x86 u8 x s8 dot products (``vpmaddubsw``) add pairs of products in
  int16, which saturates when both sides use full range (255 * 127 * 2 > 32767); measured
  with this kernel on a random layer: 14-32% maximum relative error. One side must give up
  a bit (fbgemm's ``reduce_range`` takes it from the activations). Per-tensor activations
  are the larger error, so the bit comes from the weights (per channel): with the embedded
  model and 10 frames x 6 expressions, top-1 agreement with fp32 was 0.95 with 7-bit
  activations and 8-bit weights, 1.00 with 8-bit activations and 7-bit weights (largest
  logit difference 0.48 against 0.08).

  CLIP's MLP activation, ``x * sigmoid(1.702 x)``, runs inside the first layer's kernel as
  oneDNN's ``swish`` post-op: that layer's weights and bias are multiplied by 1.702 and
  the second layer's weight scales divided by it (its input is quantised over its own
  range, so the factor costs no precision). Eagerly the activation took about a fifth of
  the int8 tower's time.

  q, k and v of an attention layer read the same input: :class:`Int8SharedProjection`
  quantises it once and multiplies it once by the stacked weights. A patchifying
  convolution (kernel = stride) is a linear map of the flattened patches:
  :class:`Int8PatchEmbedding`. Computing CLIP's activation inside the second MLP layer's
  input quantisation instead of the swish post-op was measured slower (107 against 91 ms
  for a 2000-row ViT-B/32 MLP).

  The activation quantisation is one fused elementwise function, compiled with
  ``torch.compile`` when a C++ compiler is present (3-5x faster than the same ops eager),
  otherwise run eagerly; both give the same integers.

Only CPU tensors are supported; :func:`int8_unavailable` says why int8 cannot be used.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional, Tuple

import torch
from torch import nn

_QUANTIZE: Optional[Callable] = None
_QUANTIZE_LOCK = threading.Lock()


def int8_unavailable(device: str) -> Optional[str]:
    """None when int8 can run on *device*; otherwise the reason, for an error message."""
    if not str(device).startswith('cpu'):
        return (f"precision 'int8' runs on CPU only (device {device}); use 'fp16' on CUDA "
                "('auto' picks it)")
    if not hasattr(torch.ops, 'onednn') or not hasattr(torch.ops.onednn, 'qlinear_pointwise'):
        return (f'this torch build ({torch.__version__}) has no oneDNN int8 linear kernel '
                '(onednn::qlinear_pointwise)')
    if not torch.backends.mkldnn.is_available():
        return f'this torch build ({torch.__version__}) was built without oneDNN (mkldnn)'
    return None


ACTIVATION_LEVELS = 255  # codes 0..255 (see the module docstring)
WEIGHT_LEVELS = 63  # codes -63..63


def _quantize_eager(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 codes, scale and zero point of *x* (per tensor, range including 0)."""
    lo, hi = torch.aminmax(x)
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / ACTIVATION_LEVELS, min=1e-12)
    zero_point = torch.round(-lo / scale)
    codes = torch.clamp(torch.round(x / scale) + zero_point, 0, ACTIVATION_LEVELS)
    codes = codes.to(torch.uint8)
    return codes, scale, zero_point


def _quantizer() -> Callable:
    global _QUANTIZE
    with _QUANTIZE_LOCK:
        if _QUANTIZE is None:
            _QUANTIZE = _compiled_or_eager()
        return _QUANTIZE


def quantize_activations(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantise *x* (:func:`_quantize_eager`), compiled when possible.

    A compiled call that fails (e.g. a recompilation for a new shape without a working
    compiler) switches to the eager function for good; both give the same integers.
    """
    global _QUANTIZE
    quantize = _quantizer()
    if quantize is _quantize_eager:
        return quantize(x)
    try:
        return quantize(x)
    except Exception:  # noqa: BLE001 - same integers from the eager function
        with _QUANTIZE_LOCK:
            _QUANTIZE = _quantize_eager
        return _quantize_eager(x)


def _compiled_or_eager() -> Callable:
    try:
        compiled = torch.compile(_quantize_eager, dynamic=True)
        probe = torch.linspace(-3.0, 5.0, 64).reshape(4, 16)
        got, want = compiled(probe), _quantize_eager(probe)
        if torch.equal(got[0], want[0]):
            return compiled
    except Exception:  # noqa: BLE001 - no compiler, unsupported platform: stay eager
        pass
    return _quantize_eager


class Int8Linear(nn.Module):
    """A frozen ``nn.Linear`` computing in int8 (see the module docstring).

    Args:
        linear: the fp32 layer to replace; its weight and bias are copied and quantised.
    """

    def __init__(self, linear: nn.Linear, pre_scale: float = 1.0, post_op: str = 'none',
                 input_scale: float = 1.0) -> None:
        super().__init__()
        weight = linear.weight.detach().to(torch.float32) * pre_scale
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / WEIGHT_LEVELS
        codes = torch.round(weight / scale[:, None]).clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS)
        codes = codes.to(torch.int8)
        scale = scale * input_scale
        self.post_op = post_op
        self.in_features = int(linear.in_features)
        self.out_features = int(linear.out_features)
        self.register_buffer('packed_weight', torch.ops.onednn.qlinear_prepack(codes, None),
                             persistent=False)
        self.register_buffer('weight_scale', scale, persistent=False)
        self.register_buffer('weight_zero_point', torch.zeros(scale.numel(), dtype=torch.long),
                             persistent=False)
        bias = linear.bias
        self.register_buffer('bias', None if bias is None
                             else bias.detach().to(torch.float32) * pre_scale,
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b`` with *x* quantised to uint8 over its own range."""
        shape = x.shape
        flat = x.reshape(-1, self.in_features).to(torch.float32)
        codes, scale, zero_point = quantize_activations(flat)
        out = torch.ops.onednn.qlinear_pointwise(
            codes, float(scale), int(zero_point), self.packed_weight, self.weight_scale,
            self.weight_zero_point, self.bias, 1.0, 0, torch.float32, self.post_op, [], '')
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        """Sizes, for ``print(model)``."""
        return (f'in_features={self.in_features}, out_features={self.out_features}, int8'
                + (f', post_op={self.post_op}' if self.post_op != 'none' else ''))


class _SharedInput:
    """One int8 product for several linear layers that read the same input (q, k and v).

    Their weights are stacked into one :class:`Int8Linear`, so the input is quantised once
    and multiplied once (one 768 x 2304 product instead of three 768 x 768 ones). The
    first projection called with an input computes all outputs and keeps the others for
    the calls that follow with the same tensor object; a call with any other input
    computes afresh, so a caller that uses the layers separately still gets right results.
    Kept per thread.
    """

    def __init__(self, linears) -> None:
        stacked = nn.Linear(linears[0].in_features, sum(m.out_features for m in linears),
                            bias=any(m.bias is not None for m in linears))
        with torch.no_grad():
            stacked.weight.copy_(torch.cat([m.weight.detach().float() for m in linears]))
            if stacked.bias is not None:
                stacked.bias.copy_(torch.cat([
                    m.bias.detach().float() if m.bias is not None
                    else torch.zeros(m.out_features) for m in linears]))
        self.linear = Int8Linear(stacked)
        self.sizes = [int(m.out_features) for m in linears]
        self._local = threading.local()

    def output(self, index: int, x: torch.Tensor) -> torch.Tensor:
        stash = getattr(self._local, 'stash', None)
        if stash is not None and stash[0] is x and stash[1][index] is not None:
            out, stash[1][index] = stash[1][index], None
            if all(part is None for part in stash[1]):
                self._local.stash = None
            return out
        parts = list(self.linear(x).split(self.sizes, dim=-1))
        out, parts[index] = parts[index], None
        self._local.stash = (x, parts)
        return out


class Int8SharedProjection(nn.Module):
    """One of the layers of a :class:`_SharedInput` group (e.g. ``k_proj``)."""

    def __init__(self, group: _SharedInput, index: int) -> None:
        super().__init__()
        self._group = group
        self.index = index
        self.in_features = group.linear.in_features
        self.out_features = group.sizes[index]
        self.shared = group.linear  # registered, so .to() and state views see it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """This layer's part of the group's product."""
        return self._group.output(self.index, x)

    def extra_repr(self) -> str:
        """Sizes, for ``print(model)``."""
        return (f'in_features={self.in_features}, out_features={self.out_features}, int8, '
                f'part {self.index} of {len(self._group.sizes)} (one shared product)')


class Int8PatchEmbedding(nn.Module):
    """A patchifying ``nn.Conv2d`` (kernel = stride, no padding) as an int8 linear layer.

    Such a convolution is a linear map of each non-overlapping patch, flattened in the
    weight's (channel, row, column) order; the result has the convolution's (B, C, H', W')
    layout. In fp32 the ViT-B/32 patch convolution took 5% of the int8 tower's time.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        out_channels, in_channels, kh, kw = conv.weight.shape
        linear = nn.Linear(in_channels * kh * kw, out_channels, bias=conv.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.detach().float().reshape(out_channels, -1))
            if conv.bias is not None:
                linear.bias.copy_(conv.bias.detach().float())
        self.linear = Int8Linear(linear)
        self.kernel = (int(kh), int(kw))
        self.out_channels = int(out_channels)
        # Models read ``patch_embedding.weight.dtype`` to cast their pixels: fp32 input.
        self.register_buffer('weight', torch.empty(0, dtype=torch.float32), persistent=False)

    @staticmethod
    def applies_to(module) -> bool:
        """True for a plain patchifying convolution."""
        if type(module) is not nn.Conv2d:
            return False
        kernel, stride = tuple(module.kernel_size), tuple(module.stride)
        return (kernel == stride and tuple(module.padding) == (0, 0)
                and tuple(module.dilation) == (1, 1) and module.groups == 1
                and module.padding_mode == 'zeros')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, out_channels, H // kh, W // kw), as the convolution."""
        kh, kw = self.kernel
        b, c, h, w = x.shape
        rows, cols = h // kh, w // kw
        x = x[:, :, :rows * kh, :cols * kw]
        patches = x.reshape(b, c, rows, kh, cols, kw).permute(0, 2, 4, 1, 3, 5)
        out = self.linear(patches.reshape(b, rows * cols, c * kh * kw))
        return out.transpose(1, 2).reshape(b, self.out_channels, rows, cols)


QKV_NAMES = ('q_proj', 'k_proj', 'v_proj')

QUICK_GELU_FACTOR = 1.702  # x * sigmoid(1.702 x) = swish(1.702 x) / 1.702


def _is_quick_gelu(module) -> bool:
    return type(module).__name__ == 'QuickGELUActivation'


def quantize_linears(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` inside *model* (on CPU, fp32) by :class:`Int8Linear`.

    An MLP of the form ``fc2(quick_gelu(fc1(x)))`` (CLIP's) gets the activation fused into
    ``fc1`` (see the module docstring).

    Returns:
        The number of layers replaced.

    Raises:
        RuntimeError: int8 is not available here (see :func:`int8_unavailable`).
    """
    problem = int8_unavailable('cpu')
    if problem:
        raise RuntimeError(problem)
    replaced = 0
    for module in list(model.modules()):
        projections = [getattr(module, name, None) for name in QKV_NAMES]
        if all(type(p) is nn.Linear for p in projections) and \
                len({p.in_features for p in projections}) == 1:
            group = _SharedInput(projections)
            for index, name in enumerate(QKV_NAMES):
                setattr(module, name, Int8SharedProjection(group, index))
            replaced += len(QKV_NAMES)
        patch = getattr(module, 'patch_embedding', None)
        if Int8PatchEmbedding.applies_to(patch):
            module.patch_embedding = Int8PatchEmbedding(patch)
            replaced += 1
        fc1, fc2 = getattr(module, 'fc1', None), getattr(module, 'fc2', None)
        if type(fc1) is nn.Linear and type(fc2) is nn.Linear and \
                _is_quick_gelu(getattr(module, 'activation_fn', None)):
            module.fc1 = Int8Linear(fc1, pre_scale=QUICK_GELU_FACTOR, post_op='swish')
            module.fc2 = Int8Linear(fc2, input_scale=1.0 / QUICK_GELU_FACTOR)
            module.activation_fn = nn.Identity()
            replaced += 2
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, Int8Linear(child))
                replaced += 1
    return replaced
