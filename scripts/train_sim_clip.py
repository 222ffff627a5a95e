#!/usr/bin/env python3
"""Train the embedded simulation CLIP model and save it to ``models/sim_clip``.

Renders isolated objects (crop and blur, as the pipeline isolates them) from seeded
PyBullet tabletop scenes, trains a small ``transformers.CLIPModel`` contrastively against
region-scorer prompts, prints the held-out retrieval accuracy per epoch and saves the
model in Hugging Face format. Seeded; about 15 minutes on 2 CPU cores.

    .venv/bin/python scripts/train_sim_clip.py [--out models/sim_clip] [--epochs 6] ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reclip_ros.sim.training import ModelSpec, TrainConfig, train  # noqa: E402


def main(argv=None) -> int:
    """Parse arguments, train, print the held-out accuracy; return the exit code."""
    d = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=str(ROOT / 'models' / 'sim_clip'),
                        help='output directory (default: models/sim_clip)')
    parser.add_argument('--train-scenes', type=int, default=d.train_scenes)
    parser.add_argument('--validation-scenes', type=int, default=d.validation_scenes)
    parser.add_argument('--epochs', type=int, default=d.epochs)
    parser.add_argument('--batch-size', type=int, default=d.batch_size)
    parser.add_argument('--lr', type=float, default=d.learning_rate)
    parser.add_argument('--seed', type=int, default=d.seed)
    parser.add_argument('--threads', type=int, default=d.threads,
                        help='torch threads (default 2)')
    parser.add_argument('--workers', type=int, default=d.workers,
                        help='rendering processes (default 2)')
    parser.add_argument('--cache-dir', default=d.cache_dir,
                        help='where rendered training data is cached ("" = no cache)')
    parser.add_argument('--max-minutes', type=float, default=d.max_minutes,
                        help='time budget of the whole run, rendering included: training stops '
                             'when it is spent (default 28; 0 = no limit)')
    parser.add_argument('--max-steps', type=int, default=d.max_steps,
                        help='stop after this many optimiser steps (default 0 = no limit)')
    parser.add_argument('--output-logit-scale', type=float, default=d.output_logit_scale,
                        help='logit scale stored in the saved model (0 = the trained one; '
                             f'default {d.output_logit_scale})')
    parser.add_argument('--kind-loss-weight', type=float, default=d.kind_loss_weight,
                        help='weight of the auxiliary loss of each image against one caption '
                             f'per kind (0 = off; default {d.kind_loss_weight})')
    spec = ModelSpec()
    parser.add_argument('--image-size', type=int, default=spec.image_size,
                        help=f'model input size in pixels (default {spec.image_size})')
    parser.add_argument('--patch-size', type=int, default=spec.patch_size,
                        help=f'vision patch size in pixels (default {spec.patch_size})')
    args = parser.parse_args(argv)
    if args.image_size < 1 or args.patch_size < 1 or args.image_size % args.patch_size:
        parser.error('--image-size must be a positive multiple of --patch-size')
    for name in ('train_scenes', 'validation_scenes', 'epochs', 'batch_size', 'threads',
                 'workers'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))
    cfg = TrainConfig(train_scenes=args.train_scenes, validation_scenes=args.validation_scenes,
                      epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                      seed=args.seed, threads=args.threads, workers=args.workers,
                      cache_dir=args.cache_dir or None, max_minutes=args.max_minutes,
                      output_logit_scale=args.output_logit_scale, max_steps=args.max_steps,
                      kind_loss_weight=args.kind_loss_weight)
    spec = replace(spec, image_size=args.image_size, patch_size=args.patch_size)
    info = train(args.out, cfg, spec, log=lambda m: print(m, flush=True))
    acc = info['held_out_retrieval']
    print('held-out retrieval accuracy (image -> one of 96 "a photo of the <size> <colour> '
          '<kind>" captions):')
    print(json.dumps(acc, indent=2))
    print(f'saved to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
