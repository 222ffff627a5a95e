"""``reclip ground`` end to end in subprocesses, with the tiny CLIP checkpoint and real spaCy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from reclip_ros.cli.ground import CliInputError, read_boxes, read_depth, save_path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / '.venv' / 'bin' / 'python'
BOXES = [[5, 10, 30, 20], [50, 20, 35, 30], [20, 40, 20, 15]]
JSON_KEYS = {'box', 'confidence', 'candidates', 'status', 'message', 'parse', 'timings_ms'}


def reclip(*args, timeout=300):
    """Run ``python -m reclip_ros.cli ground ARGS``; return the completed process."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1',
               TRANSFORMERS_OFFLINE='1')
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    return subprocess.run([python, '-m', 'reclip_ros.cli', 'ground', *map(str, args)],
                          cwd=str(REPO), env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """A 90x60 PNG with a red, a green and a blue block, and a boxes file around them."""
    d = tmp_path_factory.mktemp('cli_scene')
    rgb = np.full((60, 90, 3), 200, np.uint8)
    rgb[10:30, 5:35] = (220, 20, 20)
    rgb[20:50, 50:85] = (20, 200, 20)
    rgb[40:55, 20:40] = (20, 20, 220)
    image = d / 'scene.png'
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    boxes = d / 'boxes.json'
    boxes.write_text(json.dumps(BOXES))
    return {'dir': d, 'image': image, 'boxes': boxes, 'rgb': rgb}


def _json_lines(proc):
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def _assert_clean_error(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]


def test_json_output_several_expressions_and_save(scene, tiny_clip_dir):
    out = scene['dir'] / 'annotated.png'
    expressions = ['the red block', 'the green block to the right of the red block',
                   'pick up the blue block']
    args = [scene['image'], '--boxes', scene['boxes'], '--model', tiny_clip_dir,
            '--device', 'cpu', '--json', '--save', out]
    for e in expressions:
        args += ['-e', e]
    proc = reclip(*args)
    assert proc.returncode == 0, proc.stderr
    results = _json_lines(proc)
    assert len(results) == len(expressions)
    for expr, res in zip(expressions, results):
        assert JSON_KEYS <= set(res)
        assert res['expression'] == expr
        assert res['status'] == 'OK'
        assert res['box'] in BOXES
        assert len(res['candidates']) == len(BOXES)
        assert {tuple(c['box']) for c in res['candidates']} == {tuple(b) for b in BOXES}
        scores = [c['score'] for c in res['candidates']]
        assert sum(scores) == pytest.approx(1.0, abs=1e-4)
        assert scores == sorted(scores, reverse=True)
        assert res['confidence'] == pytest.approx(scores[0])
        assert res['candidates'][0]['box'] == res['box']
        assert res['timings_ms']['total'] > 0
        assert res['position'] is None
    # The relation expression was parsed into a structure; the command reduced to its object.
    assert results[1]['parse']
    # Second and third expressions reuse the frame's image embeddings.
    assert results[1]['timings_ms']['image_encoding'] == 0
    assert results[2]['timings_ms']['image_encoding'] == 0
    for i in range(len(expressions)):
        saved = cv2.imread(str(scene['dir'] / f'annotated_{i + 1}.png'))
        assert saved is not None and saved.shape == (60, 90, 3)
        assert not np.array_equal(cv2.cvtColor(saved, cv2.COLOR_BGR2RGB), scene['rgb'])
    assert not out.exists()


def test_readable_output_one_line_per_expression(scene, tiny_clip_dir):
    out = scene['dir'] / 'single.png'
    proc = reclip(scene['image'], '-e', 'the red block', '-e', 'the blue block',
                  '--boxes', scene['boxes'], '--model', tiny_clip_dir, '--save', out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("'the red block': box [")
    assert lines[1].startswith("'the blue block': box [")
    assert 'confidence' in lines[0]
    # Two expressions -> numbered files.
    assert (scene['dir'] / 'single_1.png').exists() and (scene['dir'] / 'single_2.png').exists()


def _depth_files(directory):
    depth_mm = np.full((60, 90), 2000, np.uint16)
    for x, y, w, h in BOXES:
        depth_mm[y:y + h, x:x + w] = 1000 + 10 * x  # each block its own depth
    depth_png = directory / 'depth.png'
    cv2.imwrite(str(depth_png), depth_mm)
    depth_npy = directory / 'depth.npy'
    np.save(depth_npy, depth_mm.astype(np.float32) / 1000.0)
    return depth_png, depth_npy


def test_depth_png_and_intrinsics_give_a_position(scene, tiny_clip_dir):
    depth_png, depth_npy = _depth_files(scene['dir'])
    proc = reclip(scene['image'], '-e', 'the red block', '--boxes', scene['boxes'],
                  '--model', tiny_clip_dir, '--json', '--depth', depth_png,
                  '--intrinsics', 100, 100, 44.5, 29.5, '--center-offset', 0)
    assert proc.returncode == 0, proc.stderr
    (res,) = _json_lines(proc)
    x, y, w, h = res['box']
    assert res['position'] is not None
    px, py, pz = res['position']
    assert pz == pytest.approx((1000 + 10 * x) / 1000.0, abs=1e-4)
    assert px == pytest.approx((x + w / 2 - 0.5 - 44.5) * pz / 100, abs=1e-4)
    assert py == pytest.approx((y + h / 2 - 0.5 - 29.5) * pz / 100, abs=1e-4)
    # The default centre offset moves the point back along the viewing ray by
    # 0.6 x the apparent half-width (w * z / fx / 2).
    proc = reclip(scene['image'], '-e', 'the red block', '--boxes', scene['boxes'],
                  '--model', tiny_clip_dir, '--json', '--depth', depth_png,
                  '--intrinsics', 100, 100, 44.5, 29.5)
    (shifted,) = _json_lines(proc)
    assert shifted['box'] == res['box']
    moved = np.subtract(shifted['position'], res['position'])
    assert np.linalg.norm(moved) == pytest.approx(0.6 * 0.5 * w * pz / 100, rel=1e-3)
    assert np.dot(moved, res['position']) > 0
    # Depth (.npy, metres) without intrinsics: grounded, no position.
    proc = reclip(scene['image'], '-e', 'the red block', '--boxes', scene['boxes'],
                  '--model', tiny_clip_dir, '--json', '--depth', depth_npy)
    assert proc.returncode == 0, proc.stderr
    assert _json_lines(proc)[0]['position'] is None


def test_read_depth_png_millimetres_equals_npy_metres(tmp_path):
    depth_png, depth_npy = _depth_files(tmp_path)
    a, b = read_depth(str(depth_png)), read_depth(str(depth_npy))
    assert a.dtype == np.float32 and a.shape == (60, 90)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert a[0, 0] == pytest.approx(2.0)
    zeros = tmp_path / 'zeros.png'
    cv2.imwrite(str(zeros), np.zeros((4, 4), np.uint16))
    assert np.isnan(read_depth(str(zeros))).all()  # 0 mm = no measurement


def test_detector_proposals_with_tiny_owlv2(scene, tiny_clip_dir, tiny_owlv2_dir):
    proc = reclip(scene['image'], '-e', 'the red block', '--model', tiny_clip_dir,
                  '--detector', tiny_owlv2_dir, '--json')
    assert 'Traceback' not in proc.stderr
    (res,) = _json_lines(proc)
    # A random detector may find nothing above its threshold: that is a status, exit 1.
    if res['status'] == 'OK':
        assert proc.returncode == 0
        for c in res['candidates']:
            bx, by, bw, bh = c['box']
            assert 0 <= bx and bx + bw <= 90 + 1e-3 and 0 <= by and by + bh <= 60 + 1e-3
    else:
        assert res['status'] == 'NO_PROPOSALS'
        assert proc.returncode == 1


@pytest.mark.parametrize('case', ['missing_image', 'unreadable_image', 'empty_expression',
                                  'bad_json', 'bad_box', 'empty_boxes', 'missing_boxes'])
def test_bad_input_exits_2_with_one_line(case, scene, tiny_clip_dir, tmp_path):
    image, boxes, expr = scene['image'], scene['boxes'], 'the red block'
    words = []
    if case == 'missing_image':
        image = tmp_path / 'nope.png'
        words = ['image file not found', 'nope.png']
    elif case == 'unreadable_image':
        image = tmp_path / 'text.png'
        image.write_text('not an image')
        words = ['cannot read image', 'text.png']
    elif case == 'empty_expression':
        expr = '  '
        words = ['empty expression']
    elif case == 'bad_json':
        boxes = tmp_path / 'b.json'
        boxes.write_text('[[1, 2, 3, 4],')
        words = ['cannot read boxes file', 'b.json']
    elif case == 'bad_box':
        boxes = tmp_path / 'b.json'
        boxes.write_text('[[1, 2, 3, 4], [1, 2, -3, 4]]')
        words = ['box 1', 'positive width']
    elif case == 'empty_boxes':
        boxes = tmp_path / 'b.json'
        boxes.write_text('[]')
        words = ['no boxes']
    elif case == 'missing_boxes':
        boxes = tmp_path / 'absent.json'
        words = ['boxes file not found']
    proc = reclip(image, '-e', expr, '--boxes', boxes, '--model', tiny_clip_dir)
    _assert_clean_error(proc, *words)


def test_missing_models_and_depth_mismatch_exit_2(scene, tiny_clip_dir, tmp_path):
    missing = tmp_path / 'no_such_model'
    proc = reclip(scene['image'], '-e', 'x', '--boxes', scene['boxes'], '--model', missing)
    _assert_clean_error(proc, 'no_such_model')
    proc = reclip(scene['image'], '-e', 'x', '--model', tiny_clip_dir, '--detector', missing)
    _assert_clean_error(proc, 'no_such_model', '--boxes')
    depth = tmp_path / 'small_depth.png'
    cv2.imwrite(str(depth), np.full((30, 45), 1000, np.uint16))
    proc = reclip(scene['image'], '-e', 'x', '--boxes', scene['boxes'], '--model', tiny_clip_dir,
                  '--depth', depth)
    _assert_clean_error(proc, '45x30', '90x60')
    depth8 = tmp_path / 'depth8.png'
    cv2.imwrite(str(depth8), np.full((60, 90), 10, np.uint8))
    proc = reclip(scene['image'], '-e', 'x', '--boxes', scene['boxes'], '--model', tiny_clip_dir,
                  '--depth', depth8)
    _assert_clean_error(proc, '16-bit')


# -- helpers, in process ---------------------------------------------------------------------


def test_read_boxes_formats(tmp_path):
    f = tmp_path / 'b.json'
    f.write_text(json.dumps({'boxes': [[0, 0, 5, 6]]}))
    assert [b.to_list() for b in read_boxes(str(f))] == [[0, 0, 5, 6]]
    f.write_text(json.dumps([{'x': 1}]))
    with pytest.raises(CliInputError, match='box 0'):
        read_boxes(str(f))
    f.write_text(json.dumps({'other': 1}))
    with pytest.raises(CliInputError, match='JSON list'):
        read_boxes(str(f))


def test_save_path_numbering():
    assert save_path('out/a.png', 0, 1) == Path('out/a.png')
    assert save_path('out/a.png', 1, 3) == Path('out/a_2.png')
    assert save_path('out/a', 0, 2) == Path('out/a_1.png')


def test_relations_flag_selects_the_mode(scene, tiny_clip_dir):
    base = [scene['image'], '--boxes', scene['boxes'], '--model', tiny_clip_dir,
            '--device', 'cpu', '--json', '-e', 'the blue block behind the red block',
            '-e', 'pick up the blue block behind the red block']
    extended = _json_lines(reclip(*base))
    paper = _json_lines(reclip(*base, '--relations', 'paper'))
    assert all('(relations: extended)' in r['parse'] for r in extended)
    assert all('relation behind' in r['parse'] for r in extended)
    assert 'command: pick up' in extended[1]['parse']
    # the paper's code: "behind" means above; no command reduction, and a command's root
    # verb is no entity, so the parse is not used
    assert all('(relations: paper)' in r['parse'] for r in paper)
    assert 'relation above' in paper[0]['parse']
    assert 'command:' not in paper[1]['parse'] and 'no head entity' in paper[1]['parse']
    proc = reclip(*base, '--relations', 'fancy')
    assert proc.returncode == 2 and 'fancy' in proc.stderr


def test_limits_apply_on_the_command_line(scene, tiny_clip_dir):
    base = [scene['image'], '--boxes', scene['boxes'], '--model', tiny_clip_dir,
            '--device', 'cpu', '--json', '-e', 'the red block']
    result = _json_lines(reclip(*base, '--max-proposals', '2'))[0]
    assert result['status'] == 'OK' and len(result['candidates']) == 2
    assert f'{len(BOXES) - 2} of {len(BOXES)} proposal boxes left out (max_proposals=2)' \
        in result['message']
    proc = reclip(*base, '--max-image-pixels', '100')
    assert proc.returncode == 2
    assert 'the limit is 100 (--max-image-pixels)' in proc.stderr
