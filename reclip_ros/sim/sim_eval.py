"""``reclip eval sim``: referring-expression accuracy on simulated tabletop scenes.

For scenes ``seed .. seed + scenes - 1`` the benchmark renders the scene, writes
unambiguous expressions with ground truth (:mod:`reclip_ros.sim.expressions`) and grounds
each with the :class:`reclip_ros.core.grounder.Grounder` in the variants of
:mod:`reclip_ros.evaluation.variants` (by default ``full``, ``paper``, ``no_relations``,
``crop_only`` and ``blur_only``; the same names mean the same in every report).

Proposals are the ground-truth boxes (the paper's GT-proposal setting); with
``--detector`` the same expressions are also grounded on the detector's boxes. A grounding
is correct when its box has IoU > 0.5 with the referent's box. Depth (metres) and the
true intrinsics are passed, so depth-aware relations (behind, in front of, closest) work.

Held-out seeds: the embedded model is trained on seeds >= 1,000,000
(:mod:`reclip_ros.sim.training`); use seeds below that here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from reclip_ros.cli.options import add_config_arguments, config_values
from reclip_ros.core.config import DEFAULT_RELATION_MODE
from reclip_ros.core.types import ReclipError
from reclip_ros.evaluation.tally import AccuracyTally
from reclip_ros.evaluation.variants import (IOU_THRESHOLD, SIM_DEFAULT_VARIANTS, is_correct,
                                            make_variants, parse_variant_list)
from reclip_ros.sim.expressions import CATEGORIES, generate_expressions

VARIANTS = SIM_DEFAULT_VARIANTS
DEFAULT_SCENES = 50
DEFAULT_SEED = 0
TRAIN_SEED_START = 1_000_000
#: The grounding settings ``reclip eval sim`` offers (flags generated from ``core/config.py``).
SETTINGS = ('models', 'allow_download', 'detector', 'device', 'precision', 'spacy_model',
            'relations')


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``reclip eval sim`` arguments to *parser*."""
    parser.add_argument('--scenes', type=int, default=DEFAULT_SCENES,
                        help=f'number of scenes (default {DEFAULT_SCENES})')
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED,
                        help=f'first scene seed (default {DEFAULT_SEED}; the embedded model '
                             f'is trained on seeds >= {TRAIN_SEED_START})')
    add_config_arguments(
        parser, SETTINGS, defaults={'models': ('sim',)},
        extra={'models': {'help': "CLIP model: 'sim' (embedded, default), a hub id or a "
                                  'directory; repeat to ensemble'},
               'detector': {'help': 'also evaluate on detector proposals (e.g. '
                                    'google/owlv2-base-patch16-ensemble or a directory)'},
               'relations': {'help': "relation mode of every variant but 'paper' (default: "
                                     f'{DEFAULT_RELATION_MODE})'}})
    parser.add_argument('--per-category', type=int, default=2,
                        help='at most this many expressions per category and scene (default 2)')
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        help=f'comma-separated variants (default {",".join(VARIANTS)}; also '
                             'full_size_prior)')
    parser.add_argument('--out', default='', metavar='DIR',
                        help='write results.md, results.json and expressions.jsonl here')


def evaluate(grounder, seeds, variants=VARIANTS, per_category: int = 2,
             use_detector: bool = False, log=None, records: Optional[list] = None,
             relations: str = DEFAULT_RELATION_MODE) -> dict:
    """Ground every expression of every scene; return ``{setting: table}``.

    Settings: ``'gt'`` (ground-truth proposals) and, with *use_detector*, ``'detector'``
    (the grounder's own proposals). *records*, if given, receives one dict per expression.
    """
    from reclip_ros.sim.world import TabletopScene

    settings = ['gt'] + (['detector'] if use_detector else [])
    tallies = {s: {v: AccuracyTally(CATEGORIES) for v in variants} for s in settings}
    options = {v.name: v.grounding_options(relations) for v in make_variants(variants)}
    for seed in seeds:
        with TabletopScene(seed) as scene:
            frame = scene.render()
        rng = np.random.default_rng([int(seed), 2024])
        expressions = generate_expressions(frame.objects, rng, max_per_category=per_category)
        gt_boxes = frame.boxes
        for expr in expressions:
            target = frame.objects[expr.target_index].box
            record = {'seed': int(seed), 'text': expr.text, 'category': expr.category,
                      'template': expr.template, 'target': target.to_list()}
            for setting in settings:
                boxes = gt_boxes if setting == 'gt' else None
                for variant in variants:
                    result = grounder.ground(frame.rgb, expr.text, boxes=boxes,
                                             depth_m=frame.depth, intrinsics=frame.intrinsics,
                                             frame_key=('sim', int(seed), setting),
                                             options=options[variant])
                    correct = bool(result.ok and is_correct(result.box, [target]))
                    tallies[setting][variant].add(expr.category, correct)
                    record[f'{setting}:{variant}'] = {
                        'correct': correct, 'status': result.status.name,
                        'box': result.box.to_list() if result.box is not None else None,
                        'confidence': float(result.confidence)}
            if records is not None:
                records.append(record)
        if log:
            full = tallies['gt'][variants[0]].table()['overall']
            log(f'scene {seed}: {len(frame.objects)} objects, {len(expressions)} expressions; '
                f'running {variants[0]} accuracy {full["accuracy"]:.3f} (n={full["n"]})')
    return {s: {v: tally.table() for v, tally in by_variant.items()}
            for s, by_variant in tallies.items()}


def _modes(variants, relations: str) -> str:
    """Which relation mode each variant ran in, e.g. 'paper for paper, extended otherwise'."""
    modes = {v.name: v.relation_mode(relations) for v in make_variants(variants)}
    odd = [f'{mode} for {name}' for name, mode in modes.items() if mode != relations]
    return ', '.join(odd + [f'{relations} otherwise' if odd else relations])


def format_table(table: dict, title: str) -> str:
    """A Markdown table: one row per category (and overall), one column per variant."""
    variants = list(table)
    lines = [f'### {title}', '', '| category | ' + ' | '.join(variants) + ' |',
             '| --- |' + ' ---: |' * len(variants)]
    for category in (*CATEGORIES, 'overall'):
        cells = []
        for v in variants:
            cell = table[v][category]
            cells.append(f'{100 * cell["accuracy"]:.1f} ({cell["correct"]}/{cell["n"]})'
                         if cell['n'] else '-')
        lines.append(f'| {category} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by *args*; print and optionally write results."""
    from reclip_ros.core.grounder import Grounder, GrounderConfig

    if args.scenes < 1:
        print('error: --scenes must be at least 1', file=sys.stderr)
        return 2
    variants = tuple(parse_variant_list(args.variants))
    try:
        make_variants(variants)
    except ValueError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    values = config_values(args, SETTINGS, defaults={'models': ('sim',)})
    models = values['models']
    seeds = list(range(args.seed, args.seed + args.scenes))
    if any(s >= TRAIN_SEED_START for s in seeds) and 'sim' in models:
        print(f'warning: seeds >= {TRAIN_SEED_START} are the embedded model\'s training '
              'scenes; accuracy there is not held-out', file=sys.stderr)
    values.pop('relations')  # per variant: the run's mode, or the variant's own
    cfg = GrounderConfig.from_values(values)
    try:
        grounder = Grounder.from_config(cfg)
    except ReclipError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    start = time.monotonic()
    records: List[dict] = []
    try:
        tables = evaluate(grounder, seeds, variants, args.per_category,
                          use_detector=bool(args.detector), records=records,
                          log=lambda m: print(m, file=sys.stderr, flush=True),
                          relations=args.relations)
    finally:
        grounder.close()
    seconds = time.monotonic() - start
    header = (f'Simulation benchmark: {args.scenes} scenes (seeds {seeds[0]}..{seeds[-1]}), '
              f'models {", ".join(models)} ({args.precision}), accuracy in % '
              f'(IoU > {IOU_THRESHOLD}), '
              f'relations: {_modes(variants, args.relations)}, {seconds:.0f} s\n')
    text = header + '\n' + format_table(tables['gt'], 'ground-truth proposals')
    if 'detector' in tables:
        text += '\n' + format_table(tables['detector'], f'detector proposals ({args.detector})')
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / 'results.md').write_text(text)
        (out / 'results.json').write_text(json.dumps(tables['gt'], indent=2) + '\n')
        if 'detector' in tables:
            (out / 'results_detector.json').write_text(
                json.dumps(tables['detector'], indent=2) + '\n')
        with open(out / 'expressions.jsonl', 'w', encoding='utf-8') as f:
            for record in records:
                f.write(json.dumps(record) + '\n')
        print(f'wrote {out / "results.md"} and {out / "results.json"}')
    return 0


def main(argv=None) -> int:
    """Entry point for ``python -m reclip_ros.sim.sim_eval``."""
    parser = argparse.ArgumentParser(prog='reclip eval sim', description=__doc__.splitlines()[0])
    register(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
