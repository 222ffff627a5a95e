"""Malformed start-up arguments give a one-line error and exit code 2, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('ros_args,expected', [
    (['-p', 'detector:='], "invalid ROS arguments"),
    (['-p', 'autostart:=maybe'], "cannot start the node"),
])
def test_bad_ros_arguments_exit_2_with_a_clear_message(ros_args, expected):
    env = dict(os.environ, PYTHONPATH=str(ROOT), ROS_DOMAIN_ID='93')
    proc = subprocess.run([sys.executable, '-m', 'reclip_ros.cli', 'node', '--ros-args']
                          + ros_args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr
    assert 'Traceback' not in proc.stderr
