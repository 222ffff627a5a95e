"""Offline by default: no network request unless ``allow_download`` is set.

A fake Hugging Face hub (a local HTTP server, ``HF_ENDPOINT``) records every request it
gets and answers 404. Each command runs as its own process with ``HF_HUB_OFFLINE`` unset
and an empty ``HF_HOME``, so the only thing that keeps it off the network is the project's
own default. With ``--allow-download`` (``allow_download:=true``) the same command does ask
the hub, which shows that the fake hub is reachable and would have seen a request.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from node_helpers import REPO, domain_id, wait_until

MISSING_CLIP = 'reclip-test-org/no-such-clip'
MISSING_DETECTOR = 'reclip-test-org/no-such-detector'


class _RecordingHub(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.requests = []
        lock = threading.Lock()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                with lock:
                    hub.requests.append(f'{self.command} {self.path}')
                self.send_response(404)
                self.send_header('Content-Length', '0')
                self.end_headers()

            do_GET = do_HEAD = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        super().__init__(('127.0.0.1', 0), Handler)


@pytest.fixture()
def hub():
    server = _RecordingHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _env(hub, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_DATASETS_OFFLINE')}
    env.update(HF_ENDPOINT=f'http://127.0.0.1:{hub.server_address[1]}',
               HF_HOME=str(tmp_path / 'hf_home'), PYTHONPATH=str(REPO),
               HF_HUB_ETAG_TIMEOUT='2', HF_HUB_DOWNLOAD_TIMEOUT='2', PYTHONUNBUFFERED='1')
    return env


def _ground(hub, tmp_path, *args) -> subprocess.CompletedProcess:
    image = tmp_path / 'scene.png'
    if not image.exists():
        Image.fromarray(np.full((32, 48, 3), 200, np.uint8)).save(image)
    cmd = [sys.executable, '-m', 'reclip_ros.cli', 'ground', str(image), '-e', 'the cup',
           *args]
    return subprocess.run(cmd, env=_env(hub, tmp_path), capture_output=True, text=True,
                          timeout=300, cwd=str(REPO))


def _boxes(tmp_path) -> str:
    path = tmp_path / 'boxes.json'
    path.write_text('[[0, 0, 10, 10], [20, 5, 10, 10]]')
    return str(path)


def test_missing_clip_model_makes_no_request_and_names_the_model(hub, tmp_path):
    done = _ground(hub, tmp_path, '--model', MISSING_CLIP, '--boxes', _boxes(tmp_path))
    assert done.returncode == 2, done.stderr
    assert MISSING_CLIP in done.stderr and 'allow_download' in done.stderr, done.stderr
    assert 'hf download' in done.stderr or 'huggingface-cli download' in done.stderr
    assert hub.requests == []


def test_allow_download_asks_the_hub_for_the_clip_model(hub, tmp_path):
    done = _ground(hub, tmp_path, '--model', MISSING_CLIP, '--boxes', _boxes(tmp_path),
                   '--allow-download')
    assert done.returncode == 2, done.stderr
    assert any(MISSING_CLIP in r for r in hub.requests), hub.requests


def test_missing_detector_makes_no_request(hub, tmp_path, tiny_clip_dir):
    done = _ground(hub, tmp_path, '--model', tiny_clip_dir, '--detector', MISSING_DETECTOR)
    assert done.returncode == 2, done.stderr
    assert MISSING_DETECTOR in done.stderr, done.stderr
    assert hub.requests == []


def test_allow_download_asks_the_hub_for_the_detector(hub, tmp_path, tiny_clip_dir):
    done = _ground(hub, tmp_path, '--model', tiny_clip_dir, '--detector', MISSING_DETECTOR,
                   '--allow-download')
    assert done.returncode == 2, done.stderr
    assert any(MISSING_DETECTOR in r for r in hub.requests), hub.requests


@pytest.mark.parametrize('allow', [False, True])
def test_node_configure_downloads_only_when_allowed(hub, tmp_path, allow):
    log_path = tmp_path / 'node.log'
    env = _env(hub, tmp_path)
    env['ROS_DOMAIN_ID'] = str(domain_id('offline'))
    cmd = [sys.executable, '-m', 'reclip_ros.cli', 'node', '--ros-args',
           '-p', f'models:=[{MISSING_CLIP}]', '-p', "detector:=''", '-p', 'autostart:=true',
           '-p', f'allow_download:={str(allow).lower()}']
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(REPO))
    try:
        assert wait_until(lambda: 'configure failed' in log_path.read_text(), 120.0, 0.1), \
            log_path.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    text = log_path.read_text()
    assert MISSING_CLIP in text
    if allow:
        assert any(MISSING_CLIP in r for r in hub.requests), hub.requests
    else:
        assert 'allow_download' in text, text
        assert hub.requests == []
