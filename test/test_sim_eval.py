"""``reclip eval sim``: runs the real grounder on simulated scenes and writes the schema."""

import argparse
import json
from pathlib import Path

import pytest


from reclip_ros.sim import sim_eval
from reclip_ros.sim.expressions import CATEGORIES


def _args(**overrides):
    parser = argparse.ArgumentParser()
    sim_eval.register(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_two_scenes_write_results(tmp_path, tiny_clip_dir, capsys):
    out = tmp_path / 'res'
    code = sim_eval.run(_args(scenes=2, seed=3, model=[tiny_clip_dir], out=str(out),
                              device='cpu'))
    assert code == 0
    results = json.loads((out / 'results.json').read_text())
    assert set(results) == set(sim_eval.VARIANTS)
    for table in results.values():
        assert set(table) == set(CATEGORIES) | {'overall'}
        total = sum(table[c]['n'] for c in CATEGORIES)
        assert table['overall']['n'] == total > 0
        for cell in table.values():
            assert set(cell) == {'n', 'correct', 'accuracy'}
            assert 0 <= cell['correct'] <= cell['n']
            expected = cell['correct'] / cell['n'] if cell['n'] else 0.0
            assert cell['accuracy'] == pytest.approx(expected)
    # all variants grounded the same expressions
    assert len({t['overall']['n'] for t in results.values()}) == 1
    lines = (out / 'expressions.jsonl').read_text().splitlines()
    assert len(lines) == results['full']['overall']['n']
    record = json.loads(lines[0])
    assert {'seed', 'text', 'category', 'target', 'gt:full'} <= set(record)
    md = (out / 'results.md').read_text()
    assert '| overall |' in md and 'no_relations' in md
    assert '| category | full | paper | no_relations | crop_only | blur_only |' in md
    assert 'relations: paper for paper, extended otherwise' in md
    assert 'ground-truth proposals' in capsys.readouterr().out


def test_bad_arguments_exit_2(tiny_clip_dir, capsys):
    assert sim_eval.run(_args(scenes=0, model=[tiny_clip_dir])) == 2
    assert sim_eval.run(_args(scenes=1, variants='full,bogus', model=[tiny_clip_dir])) == 2
    assert sim_eval.run(_args(scenes=1, model=['/nonexistent/model/dir'])) == 2
    err = capsys.readouterr().err
    assert 'bogus' in err and 'nonexistent' in err


def test_accuracy_table_counts():
    # the one tally of reclip eval sim and the demo (reclip_ros.evaluation.tally)
    from reclip_ros.evaluation.tally import AccuracyTally
    tally = AccuracyTally(('spatial', 'between'))
    tally.add('spatial', True)
    tally.add('spatial', False)
    tally.add('attribute', True)
    table = tally.table()
    assert table['spatial'] == {'n': 2, 'correct': 1, 'accuracy': 0.5}
    assert table['between'] == {'n': 0, 'correct': 0, 'accuracy': 0.0}
    assert table['overall']['n'] == 3
    assert table['overall']['correct'] == 2
    assert list(table) == ['spatial', 'between', 'attribute', 'overall']


def test_embedded_model_loads_and_knows_colours():
    # the committed model loads through the 'sim' alias and tells this world's colours apart
    from reclip_ros.core.models import ClipModel, resolve_model_path
    from reclip_ros.core.region_scorer import RegionScorer
    from reclip_ros.sim.world import TabletopScene

    path = resolve_model_path('sim')
    size = sum(f.stat().st_size for f in Path(path).iterdir())
    assert size < 20 * 1024 * 1024
    model = ClipModel.load('sim', device='cpu')
    assert model.image_size == 64
    scorer = RegionScorer([model])
    hits = total = 0
    for seed in range(40, 46):
        with TabletopScene(seed) as scene:
            frame = scene.render()
        encoded = scorer.encode_frame(frame.rgb, frame.boxes, frame_key=seed)
        for colour in {o.colour for o in frame.objects}:
            best = int(scorer.logits(encoded, f'the {colour} object').argmax())
            total += 1
            hits += int(frame.objects[best].colour == colour)
    assert total >= 10
    assert hits / total >= 0.8
    scorer.close()


def test_detector_setting_writes_its_own_table(tmp_path, tiny_clip_dir, tiny_owlv2_dir):
    out = tmp_path / 'det'
    code = sim_eval.run(_args(scenes=1, seed=11, model=[tiny_clip_dir], out=str(out),
                              device='cpu', variants='full', detector=tiny_owlv2_dir))
    assert code == 0
    gt = json.loads((out / 'results.json').read_text())
    det = json.loads((out / 'results_detector.json').read_text())
    assert set(gt) == set(det) == {'full'}
    assert det['full']['overall']['n'] == gt['full']['overall']['n'] > 0
    record = json.loads((out / 'expressions.jsonl').read_text().splitlines()[0])
    assert 'detector:full' in record and 'gt:full' in record
