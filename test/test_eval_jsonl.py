"""``reclip eval jsonl`` and the converters (REFER layout such as RefGTA, ReCLIP's jsonl).

The jsonl file and its images are made here. Expected accuracies are hand counts: a record
whose only proposal is the gold box is right, one whose gold box is not among its proposals
is wrong, and the one ambiguous record is counted by running the Grounder directly.
"""

import json
import pickle

import cv2
import numpy as np
import pytest

from reclip_ros import cli
from reclip_ros.core.types import Box
from reclip_ros.evaluation.engine import (
    BAD_BOX, BAD_PROPOSALS, BAD_RECORD, MISSING_IMAGE, UNREADABLE_IMAGE, EvalDataError)
from reclip_ros.evaluation.jsonl import load_jsonl
from reclip_ros.evaluation.refcoco import reclip_datum_to_jsonl_lines

RED = [20, 30, 40, 40]
BLUE = [100, 40, 50, 50]
GREEN = [30, 100, 120, 25]


def draw_scene():
    """Red square, blue circle and green bar on a light background (RGB)."""
    image = np.full((150, 180, 3), 230, np.uint8)
    cv2.rectangle(image, (20, 30), (59, 69), (255, 0, 0), -1)
    cv2.circle(image, (125, 65), 25, (0, 0, 255), -1)
    cv2.rectangle(image, (30, 100), (149, 124), (0, 180, 0), -1)
    return image


@pytest.fixture()
def dataset(tmp_path):
    images = tmp_path / 'images'
    (images / 'scenes').mkdir(parents=True)
    cv2.imwrite(str(images / 'scenes' / 'a.png'), draw_scene()[:, :, ::-1])
    cv2.imwrite(str(images / 'scenes' / 'b.png'), draw_scene()[:, :, ::-1])
    (images / 'broken.jpg').write_bytes(b'not a jpeg at all')
    lines = [
        # 1: the only proposal is the gold box -> right
        {'id': 'single', 'image': 'scenes/a.png', 'expression': 'the red square', 'box': RED,
         'proposals': [RED], 'category': 'block', 'split': 'val'},
        # 2: gold box not among the proposals -> wrong
        {'id': 'absent', 'image': 'scenes/a.png', 'expression': 'the green bar',
         'box': GREEN, 'proposals': [RED, BLUE], 'category': 'bar', 'split': 'val'},
        # 3: three proposals -> counted with the Grounder directly
        {'id': 'ambiguous', 'image': 'scenes/a.png', 'expression': 'the blue ball',
         'box': BLUE, 'proposals': [RED, BLUE, GREEN], 'category': 'ball', 'split': 'test'},
        # 4: no proposals, alone on its image -> its gold box is the only proposal -> right
        {'image': 'scenes/b.png', 'expression': 'the bar at the bottom', 'box': GREEN},
        # failures
        {'id': 'missing', 'image': 'scenes/nope.png', 'expression': 'x', 'box': RED},
        {'id': 'unreadable', 'image': 'broken.jpg', 'expression': 'x', 'box': RED},
        {'id': 'badbox', 'image': 'scenes/a.png', 'expression': 'x', 'box': [1, 2, -3, 4]},
        {'id': 'badprops', 'image': 'scenes/a.png', 'expression': 'x', 'box': RED,
         'proposals': [[1, 2, 3]]},
    ]
    text = '# a comment\n' + '\n'.join(json.dumps(x) for x in lines) + '\n{not json\n\n'
    path = tmp_path / 'data.jsonl'
    path.write_text(text)
    return {'file': path, 'images': images, 'out': tmp_path / 'out', 'tmp': tmp_path}


def test_load_jsonl_records_and_failures(dataset):
    records = load_jsonl(dataset['file'], dataset['images'])
    assert len(records) == 9
    by_id = {r.id: r for r in records}
    assert by_id['single'].proposals == (Box.from_list(RED),)
    assert by_id['single'].category == 'block' and by_id['single'].split == 'val'
    assert by_id['single'].image_key == by_id['absent'].image_key
    assert by_id['line5'].proposals is None  # 5th line of the file (after the comment)
    assert by_id['line5'].expression == 'the bar at the bottom'
    assert by_id['badbox'].error == BAD_BOX
    assert by_id['badprops'].error == BAD_PROPOSALS
    assert by_id['line10'].error == BAD_RECORD and 'invalid JSON' in by_id['line10'].detail
    assert not any(r.error for r in records if r.id in ('single', 'absent', 'ambiguous'))


def test_load_jsonl_edge_cases(tmp_path):
    path = tmp_path / 'x.jsonl'
    path.write_text('{"id": "a", "image": "/abs/i.png", "expression": "e", "box": [0,0,1,1]}\n'
                    '{"id": "a", "image": "i.png", "expression": "e", "box": [0,0,1,1]}\n'
                    '{"image": "i.png", "box": [0,0,1,1]}\n'
                    '[1, 2]\n')
    records = load_jsonl(path, tmp_path)
    assert records[0].image_path == '/abs/i.png'
    assert records[1].id == 'a#line2' and records[1].image_path == str(tmp_path / 'i.png')
    assert records[2].error == BAD_RECORD and 'expression' in records[2].detail
    assert records[3].error == BAD_RECORD
    empty = tmp_path / 'empty.jsonl'
    empty.write_text('\n# nothing\n')
    with pytest.raises(EvalDataError, match='no records'):
        load_jsonl(empty, tmp_path)
    with pytest.raises(EvalDataError, match='cannot read'):
        load_jsonl(tmp_path / 'absent.jsonl', tmp_path)


class LargestBoxGrounder:
    """Deterministic stand-in injected through the CLI's grounder factory."""

    def __init__(self):
        self.calls = 0

    def ground(self, image, expression, boxes=None, frame_key=None, options=None):
        from reclip_ros.core.types import GroundingResult, Status
        self.calls += 1
        return GroundingResult(expression=expression, status=Status.OK,
                               box=max(boxes, key=lambda b: b.area))


def _argv(dataset, *extra):
    return ['eval', 'jsonl', str(dataset['file']), '--images-dir', str(dataset['images']),
            '--out', str(dataset['out']), '--device', 'cpu', '--no-progress', *extra]


def test_cli_jsonl_with_injected_grounder(dataset, monkeypatch):
    from reclip_ros.cli import eval as cli_eval
    grounder = LargestBoxGrounder()
    monkeypatch.setattr(cli_eval, '_grounder_factory', lambda args, models: lambda: grounder)
    assert cli.main(_argv(dataset, '--variants', 'full', 'blur_only')) == 0
    report = json.loads((dataset['out'] / 'report.json').read_text())
    for name in ('full', 'blur_only'):
        v = report['variants'][name]
        # single and line5 right; absent wrong; ambiguous -> largest is GREEN -> wrong
        assert (v['total'], v['correct'], v['failed']) == (9, 2, 5)
        assert v['failures'] == {BAD_BOX: 1, BAD_PROPOSALS: 1, BAD_RECORD: 1,
                                 MISSING_IMAGE: 1, UNREADABLE_IMAGE: 1}
        assert v['per_split']['test'] == {'total': 1, 'evaluated': 1, 'failed': 0,
                                          'correct': 0, 'accuracy': 0.0,
                                          'accuracy_evaluated': 0.0}
    assert grounder.calls == 8
    md = (dataset['out'] / 'report.md').read_text()
    assert 'unreadable_image' in md and 'blur_only' in md
    # --limit 2 in another directory: only the first two records
    out2 = dataset['tmp'] / 'out2'
    argv = _argv(dataset, '--variants', 'full', '--limit', '2')
    argv[argv.index('--out') + 1] = str(out2)
    assert cli.main(argv) == 0
    report = json.loads((out2 / 'report.json').read_text())
    assert report['records'] == 2 and report['variants']['full']['correct'] == 1


def test_end_to_end_with_real_grounder(dataset, tiny_clip_dir):
    from reclip_ros.core.grounder import Grounder, GrounderConfig
    from reclip_ros.evaluation.engine import grounding_options, make_variants
    assert cli.main(_argv(dataset, '--model', tiny_clip_dir, '--variants', 'full',
                          'no_relations', 'full_size_prior', '--size-prior', '0.1')) == 0
    report = json.loads((dataset['out'] / 'report.json').read_text())
    grounder = Grounder.from_config(GrounderConfig(models=(tiny_clip_dir,), device='cpu'))
    try:
        for variant in make_variants(['full', 'no_relations', 'full_size_prior'], 0.1):
            result = grounder.ground(draw_scene(), 'the blue ball',
                                     boxes=[Box.from_list(b) for b in (RED, BLUE, GREEN)],
                                     options=grounding_options(variant))
            assert result.ok, result.message
            expected = 2 + int(result.box.iou(Box.from_list(BLUE)) >= 0.5)
            v = report['variants'][variant.name]
            assert v['correct'] == expected, variant.name
            assert v['failed'] == 5 and v['total'] == 9
    finally:
        grounder.close()
    # resume: nothing new is grounded
    assert cli.main(_argv(dataset, '--model', tiny_clip_dir, '--variants', 'full',
                          'no_relations', 'full_size_prior', '--size-prior', '0.1')) == 0
    again = json.loads((dataset['out'] / 'report.json').read_text())
    assert again['groundings_this_run'] == 0 and again['variants'] == report['variants']


# ------------------------------------------------------------------------------ converters

def test_convert_refer_layout_refgta_style(tmp_path):
    folder = tmp_path / 'ann' / 'refgta'
    folder.mkdir(parents=True)
    refs = [{'ref_id': 1, 'ann_id': 10, 'image_id': 5, 'category_id': 1, 'split': 'val',
             'sent_ids': [7], 'sentences': [{'sent_id': 7, 'sent': 'man in a black shirt',
                                             'tokens': ['man']}]},
            {'ref_id': 2, 'ann_id': 11, 'image_id': 5, 'category_id': 1, 'split': 'test',
             'sent_ids': [8], 'sentences': [{'sent_id': 8, 'sent': 'woman',
                                             'tokens': ['woman']}]}]
    with open(folder / 'refs(utokyo).p', 'wb') as f:
        pickle.dump(refs, f, protocol=2)
    (folder / 'instances.json').write_text(json.dumps({
        'images': [{'id': 5, 'file_name': 'black_wearing/00005.png'}],
        'annotations': [{'id': 10, 'image_id': 5, 'category_id': 1, 'bbox': [1, 2, 30, 60]},
                        {'id': 11, 'image_id': 5, 'category_id': 1,
                         'bbox': [50, 2, 30, 60]}],
        'categories': [{'id': 1, 'name': 'person'}]}))
    out = tmp_path / 'refgta_val.jsonl'
    rc = cli.main(['eval', 'convert-refer', '--refs-dir', str(tmp_path / 'ann'),
                   '--images-dir', str(tmp_path / 'gta'), '--dataset', 'refgta',
                   '--split-by', 'utokyo', '--split', 'val', '--output', str(out)])
    assert rc == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [{'id': '1:7', 'image': 'black_wearing/00005.png',
                      'expression': 'man in a black shirt', 'box': [1.0, 2.0, 30.0, 60.0],
                      'split': 'val', 'category': 'person',
                      'proposals': [[1.0, 2.0, 30.0, 60.0], [50.0, 2.0, 30.0, 60.0]]}]
    records = load_jsonl(out, tmp_path / 'gta')
    assert records[0].image_path == str(tmp_path / 'gta' / 'black_wearing' / '00005.png')
    assert len(records[0].proposals) == 2


def test_convert_reclip_authors_jsonl(tmp_path):
    datum = {'image_id': 9, 'file_name': 'COCO_train2014_000000000009_77.jpg',
             'ann_id': 77, 'anns': [{'id': 77, 'bbox': [1, 1, 5, 5]},
                                    {'id': 78, 'bbox': [10, 1, 5, 5]}],
             'sentences': [{'raw': 'Left Cup', 'sent_id': 3}, {'raw': 'the cup'}]}
    lines = reclip_datum_to_jsonl_lines(datum)
    assert [x['expression'] for x in lines] == ['left cup', 'the cup']
    assert lines[0]['image'] == 'COCO_train2014_000000000009.jpg'
    assert lines[0]['box'] == [1, 1, 5, 5] and len(lines[0]['proposals']) == 2
    assert lines[0]['id'] != lines[1]['id']
    src = tmp_path / 'reclip.jsonl'
    src.write_text(json.dumps(datum) + '\n{"file_name": "x"}\n')
    out = tmp_path / 'ours.jsonl'
    assert cli.main(['eval', 'convert-reclip', str(src), '--output', str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_missing_model_stops_with_a_clear_error(dataset, capsys):
    missing = str(dataset['tmp'] / 'no_such_model')
    assert cli.main(_argv(dataset, '--model', missing, '--variants', 'full')) == 2
    err = capsys.readouterr().err
    assert 'error:' in err and 'no_such_model' in err
    assert not (dataset['out'] / 'results.jsonl').exists()
