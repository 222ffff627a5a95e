"""The sim-CLIP training script runs end to end and writes a model the pipeline loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

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
