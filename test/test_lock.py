"""requirements.lock: `make setup` installs exactly the locked version of every package."""

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _canonical(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def _lock():
    pins = {}
    for line in (REPO / 'requirements.lock').read_text().splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        name, _, version = line.partition('==')
        assert version, f'not an exact pin: {line}'
        pins[_canonical(name)] = version
    return pins


def _installed():
    """Name -> version of every distribution a fresh interpreter of this venv sees.

    A fresh interpreter, because importing setuptools (torch.compile does) appends its
    vendored packages (an older ``packaging``, ``typing_extensions``) to this process's
    ``sys.path``, where ``importlib.metadata`` would find them too.
    """
    code = ('import json; from importlib import metadata; '
            'print(json.dumps([[d.metadata["Name"], d.version] '
            'for d in metadata.distributions()]))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return {_canonical(name): version for name, version in json.loads(out)}


def test_every_locked_package_is_installed_at_its_locked_version():
    installed = _installed()
    wrong = {name: (version, installed.get(name)) for name, version in _lock().items()
             if installed.get(name) != version}
    assert not wrong, f'locked vs installed: {wrong}'


def test_every_requirement_is_locked():
    pins = _lock()
    for line in (REPO / 'requirements.txt').read_text().splitlines():
        line = line.split('#')[0].strip()
        if not line:
            continue
        name = _canonical(re.split(r'[<>=!~\[ ]', line, maxsplit=1)[0])
        assert name in pins, f'{name} is required but not in requirements.lock'
    assert any(name.startswith('ros-') for name in pins), 'the ROS wheels are locked too'
