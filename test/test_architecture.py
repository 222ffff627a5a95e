"""Architecture rules: the layers, their import directions, and the package layout.

core/ imports no ROS and nothing from the other folders; runtime/ imports no ROS and only
the core; nothing but ros/, tools/, sim/ (and cli/ through them) may import rclpy.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'reclip_ros'
CORE = PACKAGE / 'core'
RUNTIME = PACKAGE / 'runtime'
# folder -> the package folders its modules may import (besides their own)
ALLOWED = {
    'core': set(),
    'runtime': {'core'},
    'evaluation': {'core'},
    'ros': {'core', 'runtime'},
    'cli': {'core', 'runtime', 'evaluation', 'tools', 'sim', 'ros'},
    'tools': {'core', 'runtime', 'evaluation', 'cli', 'ros', 'sim'},
    'sim': {'core', 'runtime', 'evaluation', 'cli', 'ros', 'tools'},
}
ROS_MODULES = ('rclpy', 'std_msgs', 'sensor_msgs', 'geometry_msgs', 'diagnostic_msgs',
               'lifecycle_msgs', 'builtin_interfaces', 'rosidl', 'reclip_ros.msg',
               'reclip_ros.srv', 'cv_bridge', 'launch', 'launch_ros', 'ament_index_python')


def _imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                yield f'{node.module}.{alias.name}'


def _is_ros(name: str) -> bool:
    return any(name == m or name.startswith(m + '.') for m in ROS_MODULES)


@pytest.mark.parametrize('folder', [CORE, RUNTIME], ids=['core', 'runtime'])
def test_core_and_runtime_sources_import_no_ros(folder):
    offenders = []
    for path in sorted(folder.rglob('*.py')):
        bad = sorted({m for m in _imported_modules(path) if _is_ros(m)})
        if bad:
            offenders.append(f'{path.relative_to(ROOT)}: {bad}')
    assert folder.is_dir() and list(folder.glob('*.py')), f'{folder} has no modules'
    assert not offenders, f'{folder.name} imports ROS modules:\n' + '\n'.join(offenders)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def _folder_of(module: str):
    parts = module.split('.')
    return parts[1] if len(parts) > 2 and parts[0] == 'reclip_ros' else None


def test_imports_point_one_way():
    """Each folder imports only the folders below it (core imports none of the others)."""
    offenders = []
    for folder, allowed in ALLOWED.items():
        assert (PACKAGE / folder).is_dir(), folder
        for path in sorted((PACKAGE / folder).rglob('*.py')):
            for module in _imported_modules(path):
                target = _folder_of(module)
                if target in ALLOWED and target != folder and target not in allowed:
                    offenders.append(f'{path.relative_to(ROOT)} imports {module}')
    assert not offenders, '\n'.join(sorted(set(offenders)))


def test_the_layer_check_flags_a_wrong_arrow(tmp_path):
    """The checker itself must see a core -> tools import (guards against a vacuous test)."""
    sample = tmp_path / 'sample.py'
    sample.write_text('from reclip_ros.tools.benchmark import run_benchmark\n')
    targets = {_folder_of(m) for m in _imported_modules(sample)}
    assert 'tools' in targets and 'tools' not in ALLOWED['core']


def test_importing_the_core_and_runtime_loads_no_ros_module():
    """Import every core and runtime module in a fresh interpreter; no ROS module may load."""
    modules = [_module_name(p) for folder in (CORE, RUNTIME) for p in sorted(folder.rglob('*.py'))]
    code = (
        'import importlib, sys\n'
        f'for m in {modules!r}:\n'
        '    importlib.import_module(m)\n'
        f'roots = {ROS_MODULES!r}\n'
        'bad = sorted(n for n in sys.modules if any(n == r or n.startswith(r + ".") '
        'for r in roots))\n'
        'print("\\n".join(bad))\n'
    )
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == '', f'ROS modules loaded by the core: {proc.stdout}'


def test_detects_a_ros_import(tmp_path):
    """The checker itself must flag a ROS import (guards against a vacuous test)."""
    sample = tmp_path / 'sample.py'
    sample.write_text('from rclpy.node import Node\nimport numpy\n')
    assert [m for m in _imported_modules(sample) if _is_ros(m)]


def test_hand_written_init_only_extends_path():
    """Keep the hand-written __init__ free of definitions.

    The generated interfaces also install reclip_ros/__init__.py (see README, Build layout).
    """
    tree = ast.parse((ROOT / 'reclip_ros' / '__init__.py').read_text())
    names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
             if isinstance(t, ast.Name)}
    assert names <= {'__path__'}


def _worker_attributes(path: Path) -> set:
    """Attributes read on ``worker`` / ``self.worker`` in *path*."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            base = node.value
            if (isinstance(base, ast.Name) and base.id == 'worker') or (
                    isinstance(base, ast.Attribute) and base.attr == 'worker'):
                names.add(node.attr)
    return names


def test_the_ros_adapters_call_worker_methods_only():
    """The node reaches the worker through its methods, never through its data."""
    from reclip_ros.runtime.worker import GroundingWorker
    used = set()
    for path in sorted((PACKAGE / 'ros').glob('*.py')):
        used |= _worker_attributes(path)
    assert {'submit', 'feed_image', 'update_settings'} <= used  # the checker sees them
    data = sorted(a for a in used if not callable(getattr(GroundingWorker, a, None)))
    assert not data, f'the ROS adapters touch worker data: {data}'
