"""The benchmark's helpers and a tiny end-to-end run of ``reclip bench``."""

import json

import numpy as np
import pytest

from reclip_ros import cli
from reclip_ros.tools.benchmark import kendall_tau, random_boxes, spearman, synthetic_frame


def test_rank_correlations():
    a = np.array([0.1, 0.5, 0.3, 0.9])
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert kendall_tau(a, a ** 3) == pytest.approx(1.0)
    b = np.array([0.1, 0.3, 0.5, 0.9])  # one adjacent pair swapped: 5 of 6 pairs agree
    assert kendall_tau(a, b) == pytest.approx((5 - 1) / 6)
    assert spearman(a, b) == pytest.approx(1 - 6 * 2 / (4 * 15))


def test_synthetic_frame_and_boxes_are_seeded():
    a, b = synthetic_frame(64, 48, seed=1), synthetic_frame(64, 48, seed=1)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, synthetic_frame(64, 48, seed=2))
    boxes = random_boxes(7, 640, 480, seed=3)
    assert len(boxes) == 7 and boxes == random_boxes(7, 640, 480, seed=3)
    assert all(0 <= bx.x and bx.x2 <= 640 and 0 <= bx.y and bx.y2 <= 480 for bx in boxes)


def test_bench_command_json(tiny_clip_dir, capsys):
    code = cli.main(['bench', '--model', tiny_clip_dir, '--proposals', '3', '--repeats', '1',
                     '--precision', 'bf16', '--device', 'cpu', '--no-grounder', '--json'])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report['results']
    from reclip_ros.tools.machine import describe_machine
    assert report['machine']['cpu_model'] == describe_machine()['cpu_model']
    assert report['machine']['cores'] >= 1 and 'vector_flags' in report['machine']
    assert row['proposals'] == 3 and row['images_per_model'] == 6
    for key in ('cold_ms', 'second_ms', 'relational_ms', 'floor_ms', 'image_encoding_ms'):
        assert row[key] > 0
    assert report['relational_via'].startswith('emulated')
    (ranking,) = report['ranking_vs_fp32']
    assert 0.0 <= ranking['top1_agreement'] <= 1.0
    assert 0.0 <= ranking['fp32_margin_min'] <= ranking['fp32_margin_median']
    assert -1.0 <= ranking['kendall_min'] <= ranking['kendall_mean'] <= 1.0


def test_bench_command_bad_input(capsys):
    assert cli.main(['bench', '--model', '/no/such/model', '--device', 'cpu']) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert cli.main(['bench', '--repeats', '0']) == 2


def test_bench_int8_reports_the_fp32_floor_and_the_ranking_check(tiny_clip_dir, capsys):
    code = cli.main(['bench', '--model', tiny_clip_dir, '--proposals', '4', '--repeats', '1',
                     '--precision', 'int8', '--device', 'cpu', '--no-grounder', '--json'])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report['dtype'] == 'int8' and 'int8' in report['models'][0]
    (row,) = report['results']
    assert row['fp32_floor_ms'] > 0 and row['cold_over_fp32_floor'] > 0
    assert row['cold_over_fp32_floor'] == pytest.approx(row['cold_ms'] / row['fp32_floor_ms'])
    (ranking,) = report['ranking_vs_fp32']
    assert ranking['comparisons'] == 3 * 6  # ranking frames x expressions


def test_bench_fp32_has_no_fp32_comparison(tiny_clip_dir, capsys):
    assert cli.main(['bench', '--model', tiny_clip_dir, '--proposals', '2', '--repeats', '1',
                     '--device', 'cpu', '--no-grounder', '--json']) == 0
    report = json.loads(capsys.readouterr().out)
    assert 'ranking_vs_fp32' not in report
    assert 'fp32_floor_ms' not in report['results'][0]


def test_bench_measures_a_detector_per_frame(tiny_owlv2_dir, tiny_clip_dir, capsys):
    assert cli.main(['bench', '--model', tiny_clip_dir, '--proposals', '2', '--repeats', '1',
                     '--device', 'cpu', '--no-grounder', '--detector', tiny_owlv2_dir,
                     '--json']) == 0
    report = json.loads(capsys.readouterr().out)
    (det,) = report['detector_results']
    assert det['detector'] == tiny_owlv2_dir and det['model_type'] == 'owlv2'
    assert det['input_size'] == 64 and det['frame_ms'] > 0 and det['precision'] == 'float32'


def test_ranking_check_of_a_model_against_itself_agrees_fully(tiny_clip_dir):
    from reclip_ros.core.models import ClipModel
    from reclip_ros.tools.benchmark import BenchConfig, compare_rankings
    model = ClipModel.load(tiny_clip_dir, device='cpu', precision='fp32')
    out = compare_rankings([model], [model], BenchConfig(ranking_frames=2), 5)
    assert out['comparisons'] == 12 and out['top1_agreement'] == 1.0
    assert out['max_abs_logit_diff'] == 0.0 and out['spearman_min'] == pytest.approx(1.0)
    assert 0.0 < out['fp32_margin_min'] <= out['fp32_margin_median']
