"""Architecture rules: the core is ROS-free and the package layout is what the build expects."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / 'reclip_ros' / 'core'
ROS_MODULES = ('rclpy', 'std_msgs', 'sensor_msgs', 'geometry_msgs', 'diagnostic_msgs',
               'lifecycle_msgs', 'builtin_interfaces', 'rosidl', 'reclip_ros.msg',
               'reclip_ros.srv', 'cv_bridge', 'launch', 'launch_ros')


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


def test_core_sources_import_no_ros():
    offenders = []
    for path in sorted(CORE.rglob('*.py')):
        bad = sorted({m for m in _imported_modules(path) if _is_ros(m)})
        if bad:
            offenders.append(f'{path.relative_to(ROOT)}: {bad}')
    assert CORE.is_dir() and list(CORE.glob('*.py')), 'reclip_ros/core has no modules'
    assert not offenders, 'the ROS-free core imports ROS modules:\n' + '\n'.join(offenders)


def test_importing_the_core_loads_no_ros_module():
    """Import every core module in a fresh interpreter; no ROS module may get loaded."""
    modules = [f'reclip_ros.core.{p.stem}' for p in sorted(CORE.glob('*.py'))
               if p.stem != '__init__']
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
