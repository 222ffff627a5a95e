"""Command-line options generated from :data:`reclip_ros.core.config.OPTIONS`.

Each command line names the settings it offers; the flag, type, default, choices and help
come from the one definition (``test/test_config_drift.py`` checks every command line).
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from reclip_ros.core.config import option


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ','.join(value) if value else "''"
    return "''" if value == '' else str(value)


def dest(name: str) -> str:
    """The ``argparse`` attribute of setting *name* (from its flag)."""
    return option(name).flag[2:].replace('-', '_')


def add_config_arguments(parser: Any, names: Iterable[str],
                         defaults: Optional[Mapping[str, Any]] = None,
                         aliases: Optional[Mapping[str, Sequence[str]]] = None,
                         extra: Optional[Mapping[str, Dict[str, Any]]] = None) -> None:
    """Add one argument per setting in *names* to *parser* (a parser or argument group).

    Args:
        defaults: defaults that differ on this command line (config form), by name.
        aliases: further flags of a setting, by name (older spellings).
        extra: further ``add_argument`` keywords of a setting, by name.

    The argument's destination follows its flag (``--model`` -> ``args.model``), as
    argparse names it; a list setting given nowhere stays None (its default is applied by
    :func:`config_values`).
    """
    defaults, aliases, extra = defaults or {}, aliases or {}, extra or {}
    for name in names:
        opt = option(name)
        default = defaults.get(name, opt.default)
        kwargs: Dict[str, Any] = {'dest': dest(opt.name), 'metavar': opt.metavar,
                                  'help': f'{opt.help} (default: {_shown(default)})'}
        if opt.kind is tuple and not opt.joined:
            kwargs.update(action='append', default=None)
        elif opt.kind is bool:
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
            kwargs.pop('metavar')
        else:
            kwargs.update(default=opt.external(default))
            if opt.kind in (int, float):
                kwargs['type'] = opt.kind
            if opt.choices and not opt.joined:
                kwargs['choices'] = opt.choices
                kwargs.pop('metavar')
        kwargs.update(extra.get(name, {}))
        parser.add_argument(opt.flag, *aliases.get(name, ()), **kwargs)


def config_values(args: argparse.Namespace, names: Iterable[str],
                  defaults: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The settings *names* from parsed *args*, in config form (tuples for lists)."""
    defaults = defaults or {}
    values = {}
    for name in names:
        opt = option(name)
        value = getattr(args, dest(name), None)
        if value is None:
            value = defaults.get(name, opt.default)
        values[name] = opt.internal(value)
    return values


def range_problem(args: argparse.Namespace, names: Iterable[str]) -> Optional[str]:
    """Why a numeric setting among *names* in *args* is out of its range, or None."""
    for name in names:
        opt = option(name)
        value = getattr(args, dest(name), None)
        if opt.kind not in (int, float) or value is None:
            continue
        low = -math.inf if opt.min_value is None else opt.min_value
        high = math.inf if opt.max_value is None else opt.max_value
        if not (math.isfinite(value) and low <= value <= high):
            return f'{opt.flag} must be in [{low:g}, {high:g}], got {value}'
    return None

