"""Rewrite the wheel builder's Python paths baked into the ROS wheels' CMake files.

The message wheels on PyPI export CMake targets that reference
``/opt/python/cp311-cp311/include/python3.11`` and
``/opt/python/cp311-cp311/lib/python3.11/site-packages``; CMake's generate step fails on
them. This script replaces both prefixes with the local virtual environment's paths.
Usage: ``python fix_ros_wheel_cmake.py VENV``.  Safe to run repeatedly.
"""

import sys
import sysconfig
from pathlib import Path

BUILDER_INCLUDE = '/opt/python/cp311-cp311/include/python3.11'
BUILDER_SITE = '/opt/python/cp311-cp311/lib/python3.11/site-packages'


def main(venv: str) -> int:
    """Patch every ``share/**/*.cmake`` below *venv*; print how many files changed."""
    venv_path = Path(venv).resolve()
    version = f'{sys.version_info.major}.{sys.version_info.minor}'
    site = venv_path / 'lib' / f'python{version}' / 'site-packages'
    include = sysconfig.get_paths()['include']
    changed = 0
    for path in (venv_path / 'share').rglob('*.cmake'):
        text = path.read_text(errors='surrogateescape')
        if BUILDER_INCLUDE not in text and BUILDER_SITE not in text:
            continue
        text = text.replace(BUILDER_INCLUDE, include).replace(BUILDER_SITE, str(site))
        path.write_text(text, errors='surrogateescape')
        changed += 1
    print(f'[setup] patched builder paths in {changed} CMake files')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
