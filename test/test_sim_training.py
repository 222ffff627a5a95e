"""The sim-CLIP training script runs end to end and writes a model the pipeline loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reclip_ros.core.models import ClipModel

ROOT = Path(__file__).resolve().parents[1]


def test_training_script_writes_a_loadable_model(tmp_path):
    out = tmp_path / 'clip'
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'scripts' / 'train_sim_clip.py'), '--out', str(out),
         '--train-scenes', '3', '--validation-scenes', '2', '--epochs', '1',
         '--cache-dir', '', '--workers', '1', '--threads', '1', '--max-minutes', '5'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'held-out retrieval' in proc.stdout
    info = json.loads((out / 'training_info.json').read_text())
    assert info['train_seeds'][0] >= 1_000_000 and info['validation_seeds'][0] >= 2_000_000
    for name in ('config.json', 'model.safetensors', 'preprocessor_config.json',
                 'vocab.json', 'merges.txt'):
        assert (out / name).exists(), name
    model = ClipModel.load(str(out), device='cpu')
    try:
        batch = np.zeros((2, 3, model.image_size, model.image_size), np.float32)
        feats = model.encode_images(batch)
        texts = model.encode_texts(['a photo of the red cube', 'a photo of a duck'])
        assert feats.shape[0] == 2 and texts.shape[0] == 2
        assert np.allclose(np.linalg.norm(texts.numpy(), axis=1), 1.0, atol=1e-4)
    finally:
        model.unload()



def test_kind_loss_rewards_the_right_kind_and_runs_in_training(tmp_path):
    import torch

    from reclip_ros.sim.training import TrainConfig, kind_loss, train

    texts = torch.eye(3)  # one caption embedding per kind
    images = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.9]])
    images = images / images.norm(dim=1, keepdim=True)
    right = kind_loss(images, texts, torch.tensor([0, 2]), 10.0)
    wrong = kind_loss(images, texts, torch.tensor([1, 0]), 10.0)
    # written out: -log softmax of the true kind's logit, averaged
    logits = 10.0 * images @ texts.T
    want = -(logits[[0, 1], [0, 2]] - torch.logsumexp(logits, dim=1)).mean()
    assert float(right) == pytest.approx(float(want), rel=1e-3)
    assert float(right) < 0.1 < float(wrong)

    cfg = TrainConfig(train_scenes=3, validation_scenes=2, epochs=1, batch_size=16,
                      threads=1, workers=1, cache_dir='', max_minutes=0, max_steps=1,
                      kind_loss_weight=0.5)
    info = train(str(tmp_path / 'k'), cfg, log=lambda m: None)
    assert info['config']['kind_loss_weight'] == 0.5 and info['steps'] == 1
