"""The parameter tables of the README and docs/node.md list every node parameter and default."""

import re
from pathlib import Path

import pytest

from reclip_ros.runtime.parameters import PARAMETERS, SPECS

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r'^\| `(?P<name>[a-z_]+)` \| (?P<type>[^|]+) \| (?P<default>[^|]+) \|')


def _shown(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


@pytest.mark.parametrize('doc', ['README.md', 'docs/node.md'])
def test_parameter_table_matches_the_parameter_definitions(doc):
    rows = {}
    for line in (ROOT / doc).read_text().splitlines():
        match = ROW.match(line)
        if match and match['name'] in SPECS:
            rows[match['name']] = match['default'].strip().strip('`')
    assert set(rows) == set(SPECS), f'{doc}: missing {set(SPECS) - set(rows)}'
    for spec in PARAMETERS:
        assert rows[spec.name] == _shown(spec.default), (doc, spec.name)
