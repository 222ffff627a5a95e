"""``reclip eval``: accuracy on RefCOCO/+/g and RefGTA (REFER layout), jsonl files, simulation.

Sub-commands::

    reclip eval refcoco --refs-dir DIR --images-dir DIR --dataset refcocog --split-by umd \
        --split val [--detections FILE | --detector ID] [--model ID ...] [--out DIR]
    reclip eval jsonl FILE --images-dir DIR [--detector ID] [--model ID ...] [--out DIR]
    reclip eval convert-refer --refs-dir DIR --images-dir DIR --dataset refgta \
        --split-by utokyo --split val --output FILE.jsonl
    reclip eval convert-reclip INPUT.jsonl --output FILE.jsonl
    reclip eval sim ...            (simulation benchmark, reclip_ros.sim.sim_eval)

See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

from reclip_ros.cli.options import add_config_arguments, config_values
from reclip_ros.core.config import DEFAULT_RELATION_MODE
from reclip_ros.core.types import ReclipError
from reclip_ros.evaluation.engine import (
    DEFAULT_SIZE_PRIOR, VARIANT_NAMES, EvalRecord, EvalSettings, evaluate, make_variants)
from reclip_ros.evaluation.variants import DEFAULT_VARIANTS

#: The grounding settings ``reclip eval`` offers (flags generated from ``core/config.py``).
SETTINGS = ('models', 'allow_download', 'device', 'precision', 'spacy_model', 'blur_sigma',
            'relations', 'batch_size', 'detector', 'detector_score_threshold')
SIM_EVAL_MODULE = 'reclip_ros.sim.sim_eval'


def _add_common(p: argparse.ArgumentParser) -> None:
    """Model, device, variants and output options shared by the dataset sub-commands."""
    g = p.add_argument_group('model and run')
    add_config_arguments(
        g, SETTINGS, defaults={'detector': ''},
        aliases={'detector_score_threshold': ('--detector-threshold',)},
        extra={'models': {'nargs': '+', 'action': 'extend'},
               'relations': {'help': "relation mode of every variant but 'paper' (default: "
                                     f"{DEFAULT_RELATION_MODE}; 'paper' = the authors' public "
                                     'code)'},
               'detector': {'help': 'detector checkpoint for proposals (e.g. '
                                    'google/owlv2-base-patch16-ensemble); default: no detector'}})
    g.add_argument('--variants', nargs='+', default=list(DEFAULT_VARIANTS), metavar='NAME',
                   choices=VARIANT_NAMES,
                   help=f'variants to evaluate (default: {", ".join(DEFAULT_VARIANTS)}; also '
                        f'{", ".join(n for n in VARIANT_NAMES if n not in DEFAULT_VARIANTS)})')
    g.add_argument('--size-prior', type=float, default=DEFAULT_SIZE_PRIOR,
                   help='area fraction of the full_size_prior variant (default 0.05)')
    g.add_argument('--limit', type=int, default=0, metavar='N',
                   help='evaluate only the first N expressions (0 = all)')
    g.add_argument('--out', default='', metavar='DIR',
                   help='output directory (results.jsonl, report.md, report.json)')
    g.add_argument('--retry-failures', action='store_true',
                   help='re-evaluate records whose stored result is a failure')
    g.add_argument('--no-progress', action='store_true', help='no progress bar on stderr')


def _add_refer_source(p: argparse.ArgumentParser) -> None:
    from reclip_ros.evaluation.refcoco import DATASETS, SENTENCE_FIELDS, SPLIT_BYS, SPLITS
    p.add_argument('--refs-dir', required=True, metavar='DIR',
                   help='folder holding <dataset>/refs(<splitBy>).p and instances.json '
                        '(or the dataset folder itself)')
    p.add_argument('--images-dir', required=True, metavar='DIR',
                   help='image folder (COCO train2014 for RefCOCO/+/g)')
    p.add_argument('--dataset', required=True, choices=DATASETS)
    p.add_argument('--split-by', required=True, choices=SPLIT_BYS,
                   help='unc (RefCOCO, RefCOCO+), umd or google (RefCOCOg), utokyo (RefGTA)')
    p.add_argument('--split', required=True, choices=SPLITS)
    p.add_argument('--sentence-field', default='raw', choices=SENTENCE_FIELDS,
                   help="sentence text to use ('raw', as the paper's code; lower-cased)")


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``eval`` sub-commands to *parser*."""
    sub = parser.add_subparsers(dest='eval_command', metavar='DATASET')

    p = sub.add_parser('refcoco', help='RefCOCO / RefCOCO+ / RefCOCOg / RefGTA (REFER layout)',
                       description='Evaluate on a dataset in the REFER layout.')
    _add_refer_source(p)
    p.add_argument('--detections', default='', metavar='FILE',
                   help='JSON detections (image id -> [[x, y, w, h], ...]) used as proposals '
                        'instead of the ground-truth boxes')
    _add_common(p)

    p = sub.add_parser('jsonl', help='a jsonl file (one expression per line)',
                       description='Evaluate a jsonl file: {"image", "expression", "box", '
                                   '"proposals"?, "id"?, "category"?, "split"?} per line.')
    p.add_argument('file', metavar='FILE', help='the .jsonl file')
    p.add_argument('--images-dir', default='', metavar='DIR',
                   help='folder the "image" paths are relative to (default: the file\'s '
                        'folder)')
    _add_common(p)

    p = sub.add_parser('convert-refer', help='write a REFER-layout split as jsonl (RefGTA...)',
                       description='Convert a REFER-layout dataset split (e.g. RefGTA) into '
                                   'the jsonl format, with all annotated boxes as proposals.')
    _add_refer_source(p)
    p.add_argument('--output', required=True, metavar='FILE', help='jsonl file to write')

    p = sub.add_parser('convert-reclip', help="convert the ReCLIP authors' jsonl files",
                       description="Convert a jsonl input file of the ReCLIP authors' code "
                                   '(file_name, anns, ann_id, sentences) into our jsonl format.')
    p.add_argument('input', metavar='INPUT', help="the authors' .jsonl file")
    p.add_argument('--output', required=True, metavar='FILE', help='jsonl file to write')

    p = sub.add_parser('sim', help='simulated tabletop scenes (reclip_ros.sim.sim_eval)',
                       add_help=False, prefix_chars='\x00',
                       description='Arguments are passed to reclip_ros.sim.sim_eval.')
    p.add_argument('sim_args', nargs='*', help='arguments of the simulation benchmark')


def _err(message: str) -> int:
    print(f'error: {message}', file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run the selected ``eval`` sub-command; return the exit code."""
    command = getattr(args, 'eval_command', None)
    if command is None:
        return _err('choose what to evaluate: reclip eval {refcoco,jsonl,convert-refer,'
                    'convert-reclip,sim} ... (see reclip eval -h)')
    if command == 'sim':
        return run_sim(list(args.sim_args))
    try:
        if command == 'convert-refer':
            return _convert_refer(args)
        if command == 'convert-reclip':
            return _convert_reclip(args)
        return _run_dataset(args)
    except ReclipError as exc:
        return _err(str(exc))
    except ValueError as exc:
        return _err(str(exc))


def run_sim(argv: List[str]) -> int:
    """Delegate to the simulation benchmark module (imported only now)."""
    try:
        module = importlib.import_module(SIM_EVAL_MODULE)
    except ImportError as exc:
        return _err(f'the simulation benchmark is not available ({SIM_EVAL_MODULE}: {exc}); '
                    'it needs pybullet and the reclip_ros.sim package')
    parser = argparse.ArgumentParser(prog='reclip eval sim')
    module.register(parser)
    sim_args = parser.parse_args(argv)
    return int(module.run(sim_args) or 0)


# ------------------------------------------------------------------------------ datasets

def _load_records(args: argparse.Namespace) -> tuple:
    """Return ``(records, source_config, default_out_dir)`` for refcoco / jsonl."""
    if args.eval_command == 'refcoco':
        from reclip_ros.evaluation.refcoco import load_detections, load_refer, refer_records
        if args.detections and args.detector:
            raise ValueError('give --detections or --detector, not both')
        data = load_refer(args.refs_dir, args.dataset, args.split_by)
        detections, proposals = None, 'gt'
        if args.detections:
            detections, proposals = load_detections(args.detections), 'detections'
        elif args.detector:
            proposals = 'detector'
        records = refer_records(data, args.images_dir, args.split, proposals=proposals,
                                detections=detections, sentence_field=args.sentence_field)
        source = {'format': 'refer', 'dataset': args.dataset, 'split_by': args.split_by,
                  'split': args.split, 'sentence_field': args.sentence_field,
                  'refs': str(data.folder.resolve()),
                  'proposals': (f'detections:{Path(args.detections).resolve()}'
                                if args.detections else
                                f'detector:{args.detector}' if args.detector else
                                'ground_truth')}
        out = Path('eval_output') / f'{args.dataset}_{args.split_by}_{args.split}'
        return records, source, out
    from reclip_ros.evaluation.jsonl import load_jsonl
    path = Path(args.file).expanduser()
    images_dir = args.images_dir or str(path.parent)
    records = load_jsonl(path, images_dir)
    source = {'format': 'jsonl', 'file': str(path.resolve()),
              'images_dir': str(Path(images_dir).resolve()),
              'proposals': ('per-record, else ' +
                            (f'detector:{args.detector}' if args.detector else
                             'gold boxes of the image'))}
    return records, source, Path('eval_output') / path.stem


def _grounder_factory(args: argparse.Namespace, models: List[str]) -> Callable[[], Any]:
    def factory() -> Any:
        from reclip_ros.core.grounder import Grounder, GrounderConfig
        values = config_values(args, SETTINGS)
        values.update(models=tuple(models), detector='', size_prior=0.0)
        cfg = GrounderConfig.from_values(values)
        grounder = Grounder.from_config(cfg)
        print(f'loaded {", ".join(grounder.model_names)} on {grounder.device}',
              file=sys.stderr)
        return grounder
    return factory


class _LazyDetector:
    """Loads the detector on first use (not at all when every result is already stored)."""

    def __init__(self, model: str, device: str, threshold: float, allow_download: bool):
        self.model, self.device, self.threshold = model, device, threshold
        self.allow_download = allow_download
        self._detector = None

    def __call__(self, image_rgb):
        """Return the proposals of one image."""
        if self._detector is None:
            from reclip_ros.core.proposals import DetectorProposals
            self._detector = DetectorProposals(model=self.model, device=self.device,
                                               score_threshold=self.threshold,
                                               local_files_only=not self.allow_download)
        return self._detector.propose(image_rgb)


def _run_dataset(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise ValueError('--limit must be >= 0')
    if args.batch_size < 1:
        raise ValueError('--batch-size must be >= 1')
    variants = make_variants(args.variants, args.size_prior)
    records, source, default_out = _load_records(args)
    total = len(records)
    records: List[EvalRecord] = records[:args.limit] if args.limit else records
    models = list(config_values(args, ('models',))['models'])
    from reclip_ros.core.models import resolve_device, resolved_precision_name
    device = resolve_device(args.device)
    config = {
        'source': source, 'models': models,
        'precision': resolved_precision_name(args.precision, device),
        'spacy_model': args.spacy_model, 'blur_sigma': args.blur_sigma,
        'relations': args.relations,
        'detector': ({'model': args.detector,
                      'score_threshold': args.detector_score_threshold}
                     if args.detector else None),
    }
    out_dir = Path(args.out) if args.out else default_out
    detector = (_LazyDetector(args.detector, args.device, args.detector_score_threshold,
                              args.allow_download) if args.detector else None)
    settings = EvalSettings(
        out_dir=str(out_dir), config=config, variants=variants,
        retry_failures=args.retry_failures, progress=not args.no_progress,
        extra_report={'records_in_source': total, 'limit': args.limit or None,
                      'device': device})
    print(f'evaluating {len(records)} expressions ({total} in the source) x '
          f'{len(variants)} variants -> {out_dir}', file=sys.stderr)
    report = evaluate(records, settings, _grounder_factory(args, models), detector=detector)
    print_summary(report, out_dir)
    return 130 if report.get('interrupted') else 0


def print_summary(report: dict, out_dir: Optional[Path] = None) -> None:
    """Print the accuracy table of a report to stdout."""
    print(f'{"variant":<18} {"relations":<9} {"accuracy":>9} {"correct":>8} {"total":>6} '
          f'{"failed":>6}')
    for name, v in report['variants'].items():
        acc = '-' if v['accuracy'] is None else f'{v["accuracy"]:.2f}'
        print(f'{name:<18} {v.get("relations", ""):<9} {acc:>9} {v["correct"]:>8} '
              f'{v["total"]:>6} {v["failed"]:>6}')
    if out_dir is not None:
        print(f'report: {Path(out_dir) / "report.md"}')


# ------------------------------------------------------------------------------ converters

def _convert_refer(args: argparse.Namespace) -> int:
    from reclip_ros.evaluation.jsonl import write_jsonl
    from reclip_ros.evaluation.refcoco import (
        load_refer, records_to_jsonl_lines, refer_records)
    data = load_refer(args.refs_dir, args.dataset, args.split_by)
    records = refer_records(data, args.images_dir, args.split, proposals='gt',
                            sentence_field=args.sentence_field)
    lines = records_to_jsonl_lines(records, args.images_dir)
    path = write_jsonl(lines, args.output)
    skipped = len(records) - len(lines)
    print(f'wrote {len(lines)} expressions to {path}'
          + (f' ({skipped} left out: missing annotation or bad box)' if skipped else ''))
    return 0


def _convert_reclip(args: argparse.Namespace) -> int:
    from reclip_ros.evaluation.jsonl import write_jsonl
    from reclip_ros.evaluation.refcoco import reclip_datum_to_jsonl_lines
    lines, bad = [], 0
    try:
        text = Path(args.input).expanduser().read_text(encoding='utf-8')
    except OSError as exc:
        return _err(f'cannot read {args.input}: {exc}')
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            lines.extend(reclip_datum_to_jsonl_lines(json.loads(line)))
        except (KeyError, TypeError, ValueError) as exc:
            bad += 1
            print(f'line {line_no}: skipped ({exc!r})', file=sys.stderr)
    path = write_jsonl(lines, args.output)
    print(f'wrote {len(lines)} expressions to {path}' + (f' ({bad} bad lines)' if bad else ''))
    return 0 if lines else 1
