"""``reclip bench node``: a short run over real DDS reports one answer per command."""

import json
import subprocess
import sys
from pathlib import Path

from node_helpers import domain_id

ROOT = Path(__file__).resolve().parents[1]


def test_bench_node_reports_client_latency_with_precompute(tiny_clip_dir):
    proc = subprocess.run(
        [sys.executable, '-m', 'reclip_ros.cli', 'bench', 'node', '--model', tiny_clip_dir,
         '--commands', '3', '--interval', '0.2', '--precompute', '--boxes', '4',
         '--domain', str(domain_id('node_bench')), '--json'],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report['commands'] == report['answered'] == 3 and report['missing'] == 0
    assert sum(report['statuses'].values()) == 3
    latency = report['client_latency_ms']
    assert latency['n'] == 3 and {'p50', 'p95', 'max'} <= set(latency)
    assert report['precompute'] and report['node_alive_at_end']
    assert report['machine']['cores'] >= 1 and 'vector_flags' in report['machine']


def test_bench_node_rejects_bad_options():
    proc = subprocess.run([sys.executable, '-m', 'reclip_ros.cli', 'bench', 'node',
                           '--commands', '0'], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and '--commands' in proc.stderr
