"""Linters: ruff (pycodestyle at 99 columns, pep257 docstrings, pyflakes) and package.xml."""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    proc = subprocess.run(
        [sys.executable, '-m', 'ruff', 'check', '--no-cache', '--output-format', 'concise',
         'reclip_ros', 'test', 'scripts', 'launch', 'setup.py'],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_package_xml_is_valid_format3():
    from catkin_pkg.package import parse_package
    ET.parse(ROOT / 'package.xml')  # well-formed XML
    pkg = parse_package(str(ROOT / 'package.xml'))
    pkg.validate()
    assert pkg.name == 'reclip_ros'
    assert pkg.package_format == 3
    deps = {d.name for d in pkg.build_depends + pkg.exec_depends + pkg.buildtool_depends}
    for needed in ('rclpy', 'sensor_msgs', 'std_msgs', 'geometry_msgs', 'diagnostic_msgs',
                   'cv_bridge', 'launch_ros', 'rosidl_default_generators', 'python3-numpy',
                   'python3-opencv', 'python3-torch'):
        assert needed in deps, f'package.xml does not declare {needed}'
    assert pkg.get_build_type() == 'ament_cmake'


def test_launch_and_setup_files_compile():
    for path in list((ROOT / 'launch').glob('*.py')) + [ROOT / 'setup.py']:
        compile(path.read_text(), str(path), 'exec')
