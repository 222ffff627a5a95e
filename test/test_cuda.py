"""CUDA-only checks (skipped without a GPU; run by scripts/gpu_check.sh on a CUDA machine).

fp16 by default on CUDA, offload on deactivate freeing GPU memory, restore, and the
detector on CUDA. Reference values come from the same checkpoints in fp32 on the CPU.
"""

import numpy as np
import pytest
import torch

from reclip_ros.core.grounder import Grounder, GrounderConfig
from reclip_ros.core.models import ClipModel
from reclip_ros.core.proposals import DetectorProposals
from reclip_ros.core.types import Box, DeviceError, Status

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


def _pixels(n, size, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def test_auto_precision_is_fp16_on_cuda_and_close_to_fp32_on_cpu(tiny_clip_dir):
    gpu = ClipModel.load(tiny_clip_dir, device='cuda', precision='auto')
    cpu = ClipModel.load(tiny_clip_dir, device='cpu', precision='fp32')
    assert gpu.device.startswith('cuda') and gpu.dtype == torch.float16
    pixels = _pixels(6, gpu.image_size)
    texts = ['a photo of the red mug', 'a photo of a laptop']
    img, img32 = gpu.encode_images(pixels), cpu.encode_images(pixels)
    txt, txt32 = gpu.encode_texts(texts), cpu.encode_texts(texts)
    assert img.device.type == 'cpu' and img.dtype == torch.float32
    assert torch.all((img * img32).sum(-1) > 0.99)
    assert torch.all((txt * txt32).sum(-1) > 0.99)
    gpu.unload()


def test_offload_frees_gpu_memory_and_restore_gives_the_same_embeddings(tiny_clip_dir):
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    model = ClipModel.load(tiny_clip_dir, device='cuda', precision='fp16')
    loaded = torch.cuda.memory_allocated()
    weights = sum(p.numel() * p.element_size() for p in model.model.parameters())
    assert loaded - before >= weights
    pixels = _pixels(3, model.image_size, seed=1)
    first = model.encode_images(pixels)
    assert model.offload()
    assert torch.cuda.memory_allocated() <= before + (loaded - before) - weights
    assert model.restore()
    torch.testing.assert_close(model.encode_images(pixels), first)
    assert model.offload()
    again = model.encode_images(pixels)  # an encode restores by itself
    torch.testing.assert_close(again, first)
    model.unload()


def test_grounder_offload_and_restore_on_cuda(tiny_clip_dir, tiny_owlv2_dir):
    grounder = Grounder.from_config(GrounderConfig(models=(tiny_clip_dir,), device='cuda',
                                                   detector=tiny_owlv2_dir,
                                                   detector_score_threshold=0.0))
    try:
        image = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        boxes = [Box(2, 2, 20, 20), Box(30, 10, 20, 30)]
        first = grounder.ground(image, 'the box on the left', boxes=boxes)
        assert first.status == Status.OK
        torch.cuda.synchronize()
        active = torch.cuda.memory_allocated()
        assert grounder.offload()
        assert torch.cuda.memory_allocated() < active
        assert grounder.restore()
        second = grounder.ground(image, 'the box on the left', boxes=boxes)
        assert second.box == first.box
        detected = grounder.ground(image, 'the box')
        assert detected.status == Status.OK
    finally:
        grounder.close()


def test_detector_on_cuda_matches_cpu_boxes(tiny_owlv2_dir):
    image = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    gpu = DetectorProposals(tiny_owlv2_dir, device='cuda', precision='fp32',
                            score_threshold=0.0)
    cpu = DetectorProposals(tiny_owlv2_dir, device='cpu', precision='fp32',
                            score_threshold=0.0)
    a, b = gpu.propose(image), cpu.propose(image)
    assert len(a) == len(b)
    np.testing.assert_allclose([[x.x, x.y, x.width, x.height] for x in a[:5]],
                               [[x.x, x.y, x.width, x.height] for x in b[:5]], atol=0.5)


def test_int8_is_refused_on_cuda(tiny_clip_dir):
    with pytest.raises(DeviceError, match='CPU only'):
        ClipModel.load(tiny_clip_dir, device='cuda', precision='int8')
