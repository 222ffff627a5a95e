"""The ``reclip`` command line: one sub-command per module, imported on demand.

``reclip ground | bench | eval | node | sim | demo | soak | replay | delivery`` and the
installed executables
``reclip_node`` and ``sim_camera`` all come through :func:`run_entry_point`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional, Sequence

# sub-command -> module providing ``register(parser)`` and ``run(args) -> int``.
SUBCOMMANDS = {
    'ground': ('reclip_ros.cli.ground', 'ground expressions in image files'),
    'bench': ('reclip_ros.cli.bench', 'measure per-stage latency of the core'),
    'eval': ('reclip_ros.cli.eval', 'evaluate accuracy (sim, refcoco, jsonl)'),
    'demo': ('reclip_ros.sim.demo', 'simulated camera + node + scripted commands'),
    'sim': ('reclip_ros.sim.camera_node', 'run the simulated RGB-D camera node'),
    'replay': ('reclip_ros.tools.replay',
               'ground commands on a rosbag2 recording (mcap/sqlite3)'),
    'delivery': ('reclip_ros.tools.frame_delivery',
                 'measure camera-frame delivery per DDS transport'),
    'soak': ('reclip_ros.tools.soak',
             'drive the node for a long run; report memory, answers, latency'),
}
# sub-commands that take ROS arguments (--ros-args ...) and parse them themselves.
PASSTHROUGH = {
    'node': 'reclip_ros.ros.node_process',
    'sim': 'reclip_ros.sim.camera_node',
}
# installed executable name -> argv prefix
EXECUTABLES = {
    'reclip_node': ['node'],
    'sim_camera': ['sim'],
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser (sub-command modules are imported here)."""
    parser = argparse.ArgumentParser(
        prog='reclip', description='ReCLIP zero-shot referring-expression grounding.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.add_parser('node', help='run the ROS 2 node (accepts --ros-args ...)', add_help=False)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a broken install should still show the other commands
            sp.set_defaults(_broken=f'{name}: cannot import {module_name}: {exc}')
            continue
        module.register(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``reclip`` with *argv* (default: ``sys.argv[1:]``); return the exit code."""
    args_list: List[str] = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in PASSTHROUGH:
        module = importlib.import_module(PASSTHROUGH[args_list[0]])
        return int(module.main(args_list[1:]) or 0)
    if args_list[:2] in (['bench', 'node'],):
        from reclip_ros.tools import node_bench
        node_parser = argparse.ArgumentParser(
            prog='reclip bench node',
            description='command-to-result latency of the running node, from a client')
        node_bench.register(node_parser)
        return int(node_bench.run(node_parser.parse_args(args_list[2:])) or 0)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if getattr(args, '_broken', None):
        print(f'error: {args._broken}', file=sys.stderr)
        return 2
    if not getattr(args, '_run', None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


def run_entry_point(name: str, argv: Sequence[str]) -> int:
    """Dispatch an installed executable by its file name."""
    return main(EXECUTABLES.get(name, []) + list(argv))

