"""``reclip bench``: per-stage latency of region scoring on a synthetic frame.

Example (no network needed, real ViT-B/32 compute with random weights)::

    reclip bench --random-init vit-b-32 --proposals 10 20 40 --threads 2

``reclip bench node [--precompute] [--detector ID] [--json]`` measures the running node
from a client's side instead (:mod:`reclip_ros.tools.node_bench`).

Exit codes: 0 done; 2 bad arguments, missing model or unavailable device.
"""

from __future__ import annotations

import argparse
import json
import sys

from reclip_ros.cli.options import add_config_arguments, config_values
from reclip_ros.tools.random_models import CLIP_PRESETS


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` arguments to *parser*."""
    parser.epilog = ("'reclip bench node --help': the node's command-to-result latency "
                     'from a client (--precompute, --detector ID, --json)')
    parser.add_argument('--random-init', choices=CLIP_PRESETS, default='',
                        help='benchmark a CLIP with random weights and this architecture '
                             'instead of --model (works offline)')
    parser.add_argument('--random-dir', default='', metavar='DIR',
                        help='save/reuse the random-weight model under DIR '
                             '(default: a temporary directory)')
    add_config_arguments(parser, ('models', 'allow_download'))
    parser.add_argument('--proposals', type=int, nargs='+', default=[10, 20, 40], metavar='N',
                        help='numbers of proposal boxes to measure (default: 10 20 40)')
    parser.add_argument('--repeats', type=int, default=3, metavar='R',
                        help='timed repeats per N, median reported (default: 3)')
    add_config_arguments(
        parser, ('precision', 'device', 'batch_size'), defaults={'precision': 'fp32'},
        extra={'precision': {'help': 'model precision; other than fp32 also compares rankings '
                                     'with fp32 (default: fp32)'}})
    parser.add_argument('--threads', type=int, default=0, metavar='T',
                        help='torch CPU threads (default: 0 = torch default)')
    parser.add_argument('--no-grounder', action='store_true',
                        help='emulate the relational expression with scorer calls instead of '
                             'running the Grounder')
    parser.add_argument('--ranking-frames', type=int, default=3, metavar='F',
                        help='frames of the ranking check against fp32 (x 6 expressions; '
                             'default 3)')
    parser.add_argument('--detector', action='append', default=[], metavar='ID_OR_DIR',
                        help='also measure the per-frame time of this detector at its native '
                             'input size (repeatable)')
    parser.add_argument('--random-detectors', action='store_true',
                        help="also measure random-weight copies of both 'auto' detector "
                             'architectures (OWLv2 base/16 at 960 px, OWL-ViT base/32 at '
                             '768 px; works offline)')
    parser.add_argument('--json', action='store_true', help='print the report as JSON')


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print a table (or JSON)."""
    from reclip_ros.tools.benchmark import BenchConfig, format_table, run_benchmark
    from reclip_ros.core.types import ReclipError

    if args.repeats < 1 or args.batch_size < 1 or min(args.proposals) < 1:
        print('error: --repeats, --batch-size and --proposals must be >= 1', file=sys.stderr)
        return 2
    config = BenchConfig(
        models=config_values(args, ('models',))['models'], allow_download=args.allow_download,
        random_init=args.random_init or '',
        random_dir=args.random_dir, proposals=tuple(args.proposals), repeats=args.repeats,
        precision=args.precision, device=args.device, batch_size=args.batch_size,
        threads=args.threads, use_grounder=not args.no_grounder,
        detectors=tuple(args.detector), random_detectors=args.random_detectors,
        ranking_frames=args.ranking_frames)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        report = run_benchmark(config, log=log)
    except (ReclipError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0
