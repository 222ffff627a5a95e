"""``reclip soak``: a short run against the real node process, and the RSS slope rule."""

import json
import subprocess
import sys

import pytest

from node_helpers import REPO, domain_id
from reclip_ros.tools.soak import rss_slope_mb_per_min


def test_rss_slope_is_the_least_squares_line_after_the_warm_up():
    # 600 MB flat for the first minute (warm-up), then +2 MB per minute exactly
    samples = [(t, 600 * 1024) for t in range(0, 60, 5)]
    samples += [(t, int((600 + 2 * (t - 60) / 60) * 1024)) for t in range(60, 600, 5)]
    assert rss_slope_mb_per_min(samples, warmup_s=60) == pytest.approx(2.0, abs=0.01)
    assert rss_slope_mb_per_min(samples[:2], warmup_s=0) is None


@pytest.mark.slow
def test_a_short_soak_answers_every_command_once(tmp_path):
    report_path = tmp_path / 'soak.json'
    proc = subprocess.run(
        [sys.executable, '-m', 'reclip_ros.cli', 'soak', '--duration', '12',
         '--command-rate', '4', '--camera-rate', '10', '--rss-period', '1',
         '--domain', str(domain_id('soak')), '--json', str(report_path),
         '--log', str(tmp_path / 'node.log')],
        cwd=str(REPO), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    assert report['commands_sent'] >= 30
    assert report['missing'] == 0 and report['duplicates'] == 0
    assert report['commands_answered'] == report['commands_sent']
    assert report['statuses'].get('OK', 0) > 0
    assert report['statuses'].get('INVALID_COMMAND', 0) > 0
    assert report['node_alive_at_end']
    assert len(report['rss_series_s_kb']) >= 5
    assert report['client_latency_ms']['p50'] is not None
    assert 'commands' in proc.stdout and 'RSS MB' in proc.stdout
    assert report['node_stop_s'] is not None  # SIGINT ended the node by itself (measured)
