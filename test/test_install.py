"""The installed package works without sourcing anything (what `make setup` promises)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.prefix) / 'bin'


def _clean_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'LD_LIBRARY_PATH', '_ROS_WHEELS_BOOTSTRAP_COMPLETE',
                        'AMENT_PREFIX_PATH')}
    return env


def test_messages_import_from_outside_the_checkout(tmp_path):
    code = ('import rclpy, reclip_ros.msg, reclip_ros.srv\n'
            'from reclip_ros.msg import GroundingResult, Proposals, Candidate\n'
            'from reclip_ros.srv import Ground\n'
            'print(GroundingResult.DROPPED, Ground.Request().expression == "")\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ['5', 'True']


def test_messages_import_from_the_repository_root():
    proc = subprocess.run([sys.executable, '-c', 'import reclip_ros.msg, reclip_ros.core.types'],
                          cwd=ROOT, env=_clean_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize('exe', ['reclip'])
def test_entry_point_is_installed_and_runs(exe, tmp_path):
    path = VENV_BIN / exe
    assert path.exists(), f'{path} missing: run make setup'
    assert os.access(path, os.X_OK), f'{path} is not executable'
    proc = subprocess.run([str(path), '--help'], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for command in ('ground', 'bench', 'eval', 'node', 'demo', 'sim'):
        assert command in proc.stdout


def test_ros_executables_are_installed_for_ros2_run():
    lib = Path(sys.prefix) / 'lib' / 'reclip_ros'
    for exe in ('reclip_node', 'reclip', 'sim_camera'):
        assert os.access(lib / exe, os.X_OK), f'{lib / exe} missing or not executable'


def test_share_holds_launch_and_config():
    share = Path(sys.prefix) / 'share' / 'reclip_ros'
    assert (share / 'package.xml').exists()
    assert (share / 'launch' / 'reclip.launch.py').exists()
    assert (share / 'config' / 'reclip.yaml').exists()
    assert (share / 'models' / 'sim_clip' / 'config.json').exists()
    assert (share / 'models' / 'sim_clip' / 'model.safetensors').exists()
