"""Each grounding setting is defined once (reclip_ros/core/config.py).

The node parameters, the command lines and config/reclip.yaml are generated from it or
checked against it.
"""

import argparse
import dataclasses
import importlib
import re
from pathlib import Path

import pytest
import yaml

from reclip_ros.cli import options as cli_options
from reclip_ros.core import config
from reclip_ros.core.config import OPTIONS, GrounderConfig, GroundingOptions, Option
from reclip_ros.runtime import parameters

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'reclip_ros'
# the command lines that offer grounding settings: module -> argv prefix of its parser
COMMANDS = {
    'reclip_ros.cli.ground': [],
    'reclip_ros.cli.eval': ['refcoco'],
    'reclip_ros.cli.bench': [],
    'reclip_ros.sim.sim_eval': [],
    'reclip_ros.tools.replay': [],
}
# defaults that deliberately differ on one command line (setting -> {module: default})
CLI_DEFAULTS = {
    'precision': {'reclip_ros.cli.bench': 'fp32'},  # the benchmark's floor is fp32
    'models': {'reclip_ros.sim.sim_eval': ['sim']},  # the embedded model
    'detector': {'reclip_ros.cli.ground': 'auto'},  # ground proposes when no --boxes
}

# flags that share a setting's name but mean something else on that command line
OTHER_MEANINGS = {
    ('reclip_ros.cli.bench', 'detector'): 'detectors whose per-frame time is measured',
    ('reclip_ros.cli.eval', 'size_prior'): "the full_size_prior variant's area fraction",
}


def test_every_config_field_is_an_option_and_every_option_a_field():
    config_fields = {f.name for f in dataclasses.fields(GrounderConfig)}
    call_fields = {f.name for f in dataclasses.fields(GroundingOptions)}
    names = {o.name for o in OPTIONS}
    assert config_fields <= names, config_fields - names
    assert names <= config_fields | call_fields, names - config_fields - call_fields
    for field in dataclasses.fields(GrounderConfig):
        assert field.default == config.option(field.name).default, field.name


def test_node_parameters_are_generated_from_the_options():
    for option in OPTIONS:
        if option.parameter is None:
            assert option.name not in parameters.SPECS
            continue
        spec = parameters.SPECS[option.parameter]
        assert spec.default == option.parameter_default, option.name
        assert spec.description == option.help, option.name
        assert (spec.min_value, spec.max_value) == (option.min_value, option.max_value)
        assert spec.choices == option.choices, option.name
        assert parameters.validate(spec.name, spec.default) is None, option.name


def test_config_yaml_lists_every_option_parameter_with_its_default():
    values = yaml.safe_load((ROOT / 'config' / 'reclip.yaml').read_text())
    values = values['/**']['ros__parameters']
    for option in OPTIONS:
        if option.parameter:
            assert values[option.parameter] == option.parameter_default, option.parameter
    # and the node's configure turns the YAML back into the library's defaults
    built = parameters.grounder_config(values)
    for field in dataclasses.fields(GrounderConfig):
        option = config.option(field.name)
        expected = option.default if option.node_default is None else option.node_default
        assert getattr(built, field.name) == expected, field.name


def _parser(module_name):
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser()
    module.register(parser)
    return parser


def _actions(parser, prefix):
    """Every argparse action reachable from *parser* along the sub-command *prefix*."""
    actions = list(parser._actions)
    for name in prefix:
        sub = next(a for a in actions if isinstance(a, argparse._SubParsersAction))
        actions = list(sub.choices[name]._actions)
    return actions


@pytest.mark.parametrize('module_name', sorted(COMMANDS))
def test_command_line_options_match_the_definition(module_name):
    by_flag = {o.flag: o for o in OPTIONS if o.flag}
    seen = set()
    for action in _actions(_parser(module_name), COMMANDS[module_name]):
        flags = [f for f in action.option_strings if f in by_flag]
        if not flags:
            continue
        option = by_flag[flags[0]]
        if (module_name, option.name) in OTHER_MEANINGS:
            continue
        seen.add(option.name)
        assert action.dest == cli_options.dest(option.name), option.name
        expected = CLI_DEFAULTS.get(option.name, {}).get(module_name)
        if option.kind is tuple and not option.joined:
            assert action.default is None, option.name  # config_values applies the default
            continue
        if expected is None:
            expected = option.external(option.default)
        if module_name == 'reclip_ros.cli.eval' and option.name == 'detector':
            expected = ''  # eval grounds the datasets' own boxes unless asked
        assert action.default == expected, (module_name, option.name, action.default)
        if option.choices and not option.joined:
            assert tuple(action.choices) == option.choices, option.name
        if option.kind in (int, float):
            assert action.type is option.kind, option.name
    module = importlib.import_module(module_name)
    declared = set(getattr(module, 'SETTINGS', ()))
    assert declared <= seen | {'methods'}, (module_name, declared - seen)


def test_reclip_ground_offers_every_setting_with_a_flag():
    flags = {f for a in _actions(_parser('reclip_ros.cli.ground'), []) for f in a.option_strings}
    assert {o.flag for o in OPTIONS if o.flag} <= flags


def test_a_new_option_reaches_the_node_and_the_command_line(monkeypatch):
    """The generators take any row: one more Option is one more parameter and flag."""
    knob = Option('new_knob', 7, 'a knob added in one place', min_value=0, max_value=10,
                  metavar='K')
    monkeypatch.setitem(config.OPTION_BY_NAME, knob.name, knob)
    spec = parameters.spec_of(knob)
    assert (spec.name, spec.default, spec.min_value, spec.max_value, spec.on_configure) == \
        ('new_knob', 7, 0, 10, True)
    parser = argparse.ArgumentParser()
    cli_options.add_config_arguments(parser, ('new_knob',))
    args = parser.parse_args(['--new-knob', '3'])
    assert args.new_knob == 3
    assert parser.parse_args([]).new_knob == 7
    assert cli_options.config_values(parser.parse_args([]), ('new_knob',)) == {'new_knob': 7}
    assert 'a knob added in one place (default: 7)' in parser.format_help()


def test_each_default_is_written_once_in_the_package():
    """The default CLIP id, the precision names and the blur sigma live in core/config.py."""
    literals = {
        "'openai/clip-vit-base-patch32'": 1,
        'PRECISIONS = (': 1,
        'BLUR_SIGMA = ': 1,
    }
    sources = {p: p.read_text() for p in PACKAGE.rglob('*.py')}
    for literal, count in literals.items():
        where = [str(p.relative_to(ROOT)) for p, text in sources.items() for _ in
                 re.finditer(re.escape(literal), text)]
        assert len(where) == count, (literal, where)
        assert where == ['reclip_ros/core/config.py'], (literal, where)


def test_command_line_values_are_checked_against_the_option_ranges():
    parser = _parser('reclip_ros.cli.ground')
    ok = parser.parse_args(['x.png', '-e', 'the cup', '--batch-size', '1024'])
    assert cli_options.range_problem(ok, ('batch_size', 'max_proposals')) is None
    low = parser.parse_args(['x.png', '-e', 'the cup', '--batch-size', '0'])
    assert cli_options.range_problem(low, ('batch_size',)) == \
        '--batch-size must be in [1, 1024], got 0'
    nan = parser.parse_args(['x.png', '-e', 'the cup', '--detector-score-threshold', 'nan'])
    assert 'detector-score-threshold' in cli_options.range_problem(
        nan, ('detector_score_threshold',))


def test_docs_cli_lists_every_ground_option_with_its_default():
    row = re.compile(r'^\| `(--[a-z-]+)[^`]*` \| `?([^|`]*)`? \|')
    shown = {}
    for line in (ROOT / 'docs' / 'cli.md').read_text().splitlines():
        match = row.match(line)
        if match:
            shown.setdefault(match[1], match[2].strip())
    for action in _actions(_parser('reclip_ros.cli.ground'), []):
        flags = [f for f in action.option_strings if f.startswith('--') and f != '--help']
        option = next((o for o in OPTIONS if o.flag in flags), None)
        if option is None:
            continue
        assert option.flag in shown, f'docs/cli.md does not list {option.flag}'
        default = action.default if action.default is not None else \
            option.external(option.default)
        if isinstance(default, list):
            default = ','.join(default)
        if isinstance(default, float):
            assert float(shown[option.flag]) == default, option.flag
        else:
            assert shown[option.flag] == str(default), (option.flag, shown[option.flag])


def test_node_per_call_options_come_from_the_parameters():
    values = {spec.name: spec.default for spec in parameters.PARAMETERS}
    values.update(use_relations=False, size_prior=0.25, relations='paper')
    options = parameters.grounding_options(values)
    assert (options.use_relations, options.size_prior, options.relations) == \
        (False, 0.25, 'paper')
    assert options.methods == GroundingOptions().methods
