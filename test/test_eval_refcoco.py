"""``reclip eval refcoco``: the REFER layout reader and end-to-end runs on a tiny dataset.

The dataset is built here: images drawn with OpenCV, a ``refs(unc).p`` pickle and an
``instances.json`` in the REFER layout. Expected accuracies are hand counts: records with a
single proposal are always right, records whose gold box is not among the proposals are
always wrong, and the rest are counted by running the Grounder directly.
"""

import argparse
import json
import pickle
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from reclip_ros import cli
from reclip_ros.cli import eval as cli_eval
from reclip_ros.core.types import Box, GroundingResult, Status
from reclip_ros.evaluation.engine import BAD_BOX, MISSING_ANNOTATION, MISSING_IMAGE, EvalDataError
from reclip_ros.evaluation.refcoco import (
    find_dataset_dir, in_split, load_detections, load_refer, load_refs_pickle, refer_records)

ANNS = {
    # image 1: three shapes
    11: (1, 1, [10, 20, 50, 50]),     # red square
    12: (1, 2, [100, 30, 40, 40]),    # blue circle
    13: (1, 3, [60, 110, 90, 30]),    # green bar
    # image 2: one object
    21: (2, 1, [40, 40, 60, 60]),     # yellow square
    # image 3: its file is missing
    31: (3, 1, [10, 10, 20, 20]),
    # image 4: a degenerate annotation box and a good one
    41: (4, 1, [5, 5, 0, 10]),
    42: (4, 2, [30, 30, 40, 40]),
}


def _ref(ref_id, ann_id, image_id, split, sentences):
    cat = ANNS[ann_id][1] if ann_id in ANNS else 1
    return {'ref_id': ref_id, 'ann_id': ann_id, 'image_id': image_id, 'category_id': cat,
            'split': split, 'file_name': f'COCO_train2014_{image_id:012d}_{ann_id}.jpg',
            'sent_ids': [ref_id * 10 + i for i in range(len(sentences))],
            'sentences': [{'sent_id': ref_id * 10 + i, 'raw': s, 'sent': s.lower(),
                           'tokens': s.lower().split()} for i, s in enumerate(sentences)]}


REFS = [
    _ref(100, 11, 1, 'val', ['The red square', 'red block on the left']),
    _ref(101, 12, 1, 'val', ['the blue circle']),
    _ref(500, 13, 1, 'testA', ['the green bar at the bottom']),
    _ref(501, 12, 1, 'testB', ['blue round thing']),
    _ref(200, 21, 2, 'val', ['the yellow square']),
    _ref(600, 21, 2, 'train', ['yellow']),
    _ref(300, 31, 3, 'val', ['anything']),
    _ref(400, 41, 4, 'val', ['the thin thing']),
    _ref(700, 999, 2, 'val', ['a ref whose annotation is missing']),
]
VAL_IDS = ['100:1000', '100:1001', '101:1010', '200:2000', '300:3000', '400:4000',
           '700:7000']


def _file(image_id):
    return f'COCO_train2014_{image_id:012d}.jpg'


def draw_image(image_id):
    """Coloured shapes on a grey background at the annotated boxes."""
    image = np.full((160, 200, 3), 128, np.uint8)
    colours = {11: (0, 0, 255), 12: (255, 0, 0), 13: (0, 200, 0), 21: (0, 255, 255),
               42: (200, 0, 200)}
    for ann_id, (img, _, (x, y, w, h)) in ANNS.items():
        if img != image_id or ann_id not in colours:
            continue
        if ann_id == 12:
            cv2.circle(image, (x + w // 2, y + h // 2), w // 2, colours[ann_id], -1)
        else:
            cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), colours[ann_id], -1)
    return image


@pytest.fixture()
def refer(tmp_path):
    """Build <root>/refer/refcoco/{refs(unc).p, instances.json} and <root>/coco images."""
    folder = tmp_path / 'refer' / 'refcoco'
    folder.mkdir(parents=True)
    with open(folder / 'refs(unc).p', 'wb') as f:
        pickle.dump(REFS, f, protocol=2)
    instances = {
        'images': [{'id': i, 'file_name': _file(i), 'width': 200, 'height': 160}
                   for i in (1, 2, 3, 4)],
        'annotations': [{'id': a, 'image_id': img, 'category_id': cat, 'bbox': box,
                         'area': box[2] * box[3], 'iscrowd': 0}
                        for a, (img, cat, box) in ANNS.items()],
        'categories': [{'id': 1, 'name': 'block'}, {'id': 2, 'name': 'ball'},
                       {'id': 3, 'name': 'bar'}],
    }
    (folder / 'instances.json').write_text(json.dumps(instances))
    images = tmp_path / 'coco' / 'train2014'
    images.mkdir(parents=True)
    for image_id in (1, 2, 4):  # image 3 is missing on purpose
        cv2.imwrite(str(images / _file(image_id)), draw_image(image_id)[:, :, ::-1])
    return {'refs_dir': tmp_path / 'refer', 'dataset_dir': folder,
            'images_dir': tmp_path / 'coco', 'out': tmp_path / 'out'}


# ------------------------------------------------------------------------------ reader

def test_find_dataset_dir_parent_or_dataset_folder(refer):
    assert find_dataset_dir(refer['refs_dir'], 'refcoco', 'unc') == refer['dataset_dir']
    assert find_dataset_dir(refer['dataset_dir'], 'refcoco', 'unc') == refer['dataset_dir']
    with pytest.raises(EvalDataError, match=r'refs\(umd\)\.p not found'):
        find_dataset_dir(refer['refs_dir'], 'refcoco', 'umd')


def test_split_semantics():
    assert in_split('testA', 'testA') and not in_split('testB', 'testA')
    assert in_split('testA', 'test') and in_split('testB', 'test')
    assert in_split('testAB', 'testB') and not in_split('val', 'testA')
    assert in_split('val', 'val') and not in_split('train', 'val')


def test_records_with_ground_truth_proposals(refer):
    data = load_refer(refer['refs_dir'], 'refcoco', 'unc')
    assert data.splits() == ['testA', 'testB', 'train', 'val']
    records = refer_records(data, refer['images_dir'], 'val')
    assert [r.id for r in records] == VAL_IDS
    by_id = {r.id: r for r in records}
    first = by_id['100:1000']
    assert first.expression == 'the red square'  # 'raw', lower-cased
    assert first.gold == Box(10, 20, 50, 50) and first.category == 'block'
    assert first.proposals == (Box(10, 20, 50, 50), Box(100, 30, 40, 40),
                               Box(60, 110, 90, 30))
    assert first.image_key == by_id['101:1010'].image_key != by_id['200:2000'].image_key
    assert Path(first.image_path).is_file()  # found below images_dir/train2014
    assert by_id['200:2000'].proposals == (Box(40, 40, 60, 60),)
    assert by_id['400:4000'].error == BAD_BOX
    assert by_id['700:7000'].error == MISSING_ANNOTATION
    assert not Path(by_id['300:3000'].image_path).exists()
    test = refer_records(data, refer['images_dir'], 'test')
    assert sorted(r.id for r in test) == ['500:5000', '501:5010']
    with pytest.raises(EvalDataError, match='splits present'):
        refer_records(data, refer['images_dir'], 'testC')
    detector = refer_records(data, refer['images_dir'], 'val', proposals='detector')
    assert all(r.proposals is None for r in detector)


def test_detections_file_formats(tmp_path):
    as_dict = tmp_path / 'a.json'
    as_dict.write_text(json.dumps({'1': [[1, 2, 3, 4]], '2': [{'box': [5, 6, 7, 8]}]}))
    as_list = tmp_path / 'b.json'
    as_list.write_text(json.dumps([{'image_id': 1, 'box': [1, 2, 3, 4], 'score': 0.9},
                                   {'image_id': 2, 'bbox': [5, 6, 7, 8]}]))
    wrapped = tmp_path / 'c.json'
    wrapped.write_text(json.dumps({'dets': [{'image_id': 1, 'box': [1, 2, 3, 4]},
                                            {'image_id': 2, 'box': {'x': 5, 'y': 6,
                                                                    'w': 7, 'h': 8}}]}))
    for path in (as_dict, as_list, wrapped):
        assert load_detections(path) == {1: [[1, 2, 3, 4]], 2: [[5, 6, 7, 8]]}
    broken = tmp_path / 'd.json'
    broken.write_text('[1, 2]')
    with pytest.raises(EvalDataError, match='unexpected detections format'):
        load_detections(broken)


def test_refs_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / 'refs(unc).p'
    path.write_bytes(pickle.dumps([{'ref_id': 1, 'x': Path('/tmp')}]))
    with pytest.raises(EvalDataError, match='refusing to run code'):
        load_refs_pickle(path)


def test_python2_refs_pickle_is_read_as_utf8(tmp_path):
    # A Python 2 pickle (protocol 2) whose str values are byte strings (opcode 'U'), as the
    # REFER refs files are: [{'raw': 'caf\xc3\xa9 table', 'ref_id': 7}] in UTF-8 bytes.
    raw = 'café table'.encode()
    data = (b'\x80\x02]q\x00}q\x01(U\x03rawq\x02U' + bytes([len(raw)]) + raw
            + b'q\x03U\x06ref_idq\x04K\x07ua.')
    path = tmp_path / 'refs(umd).p'
    path.write_bytes(data)
    assert load_refs_pickle(path) == [{'raw': 'café table', 'ref_id': 7}]
    # not UTF-8 at all: still read, byte for byte (Latin-1)
    path.write_bytes(data.replace(raw, 'café table'.encode('latin1'))
                     .replace(bytes([len(raw)]), bytes([len('café table')]), 1))
    assert load_refs_pickle(path) == [{'raw': 'café table', 'ref_id': 7}]


# ------------------------------------------------------------------------------ CLI

def _parse(argv):
    parser = argparse.ArgumentParser()
    cli_eval.register(parser)
    return parser.parse_args(argv)


def _refcoco_argv(refer, *extra, refs_dir=None):
    return ['refcoco', '--refs-dir', str(refs_dir or refer['refs_dir']),
            '--images-dir', str(refer['images_dir']), '--dataset', 'refcoco',
            '--split-by', 'unc', '--split', 'val', '--out', str(refer['out']),
            '--device', 'cpu', '--no-progress', *extra]


class LargestBoxGrounder:
    """Deterministic stand-in injected through the CLI's grounder factory."""

    def __init__(self):
        self.calls = 0

    def ground(self, image, expression, boxes=None, frame_key=None, options=None):
        self.calls += 1
        best = max(boxes, key=lambda b: b.area)
        return GroundingResult(expression=expression, status=Status.OK, box=best)


def test_cli_wiring_with_injected_grounder(refer, monkeypatch, capsys):
    grounder = LargestBoxGrounder()
    monkeypatch.setattr(cli_eval, '_grounder_factory', lambda args, models: lambda: grounder)
    rc = cli_eval.run(_parse(_refcoco_argv(refer, '--variants', 'full',
                                           refs_dir=refer['dataset_dir'])))
    assert rc == 0
    report = json.loads((refer['out'] / 'report.json').read_text())
    full = report['variants']['full']
    # image 1: the largest GT box is the green bar (ann 13): none of 100/101 is right;
    # 200 has one proposal -> right; 300 missing image; 400 bad box; 700 no annotation
    assert full['total'] == 7 and full['correct'] == 1
    assert full['failures'] == {BAD_BOX: 1, MISSING_ANNOTATION: 1, MISSING_IMAGE: 1}
    assert report['config']['source']['proposals'] == 'ground_truth'
    assert grounder.calls == 4
    assert 'full' in capsys.readouterr().out
    # --limit: only the first two expressions, in a fresh directory
    limited = refer['out'].parent / 'limited'
    argv = _refcoco_argv(refer, '--variants', 'full', '--limit', '2')
    argv[argv.index('--out') + 1] = str(limited)
    assert cli_eval.run(_parse(argv)) == 0
    report = json.loads((limited / 'report.json').read_text())
    assert report['records'] == 2 and report['records_in_source'] == 7


def test_cli_errors_are_clear(refer, capsys):
    rc = cli_eval.run(_parse(['refcoco', '--refs-dir', str(refer['images_dir']),
                              '--images-dir', '.', '--dataset', 'refcoco', '--split-by',
                              'unc', '--split', 'val']))
    assert rc == 2 and 'refs(unc).p not found' in capsys.readouterr().err
    rc = cli_eval.run(_parse(_refcoco_argv(refer, '--detections', 'x.json',
                                           '--detector', 'y')))
    assert rc == 2 and 'not both' in capsys.readouterr().err
    assert cli_eval.run(_parse([])) == 2
    assert 'choose what to evaluate' in capsys.readouterr().err


def test_sim_subcommand_delegates_or_explains(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_eval, 'SIM_EVAL_MODULE', 'reclip_ros.sim.no_such_module_xyz')
    assert cli.main(['eval', 'sim', '--scenes', '3']) == 2
    assert 'simulation benchmark is not available' in capsys.readouterr().err
    (tmp_path / 'fake_sim_eval_mod.py').write_text(
        'def register(parser):\n'
        '    parser.add_argument("--scenes", type=int, default=1)\n'
        'def run(args):\n'
        '    print("scenes", args.scenes)\n'
        '    return 0\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli_eval, 'SIM_EVAL_MODULE', 'fake_sim_eval_mod')
    assert cli.main(['eval', 'sim', '--scenes', '3']) == 0
    assert 'scenes 3' in capsys.readouterr().out
    sys.modules.pop('fake_sim_eval_mod', None)


# ------------------------------------------------------------------------------ end to end

def _direct_correct(tiny_clip_dir, image_rgb, expression, boxes, gold, variant):
    """Ground one expression with the Grounder directly (the hand count for random models)."""
    from reclip_ros.core.grounder import Grounder, GrounderConfig
    from reclip_ros.evaluation.engine import grounding_options, make_variants
    key = tiny_clip_dir
    if key not in _GROUNDERS:
        _GROUNDERS[key] = Grounder.from_config(GrounderConfig(models=(tiny_clip_dir,),
                                                              device='cpu'))
    options = grounding_options(make_variants([variant])[0])
    result = _GROUNDERS[key].ground(image_rgb, expression, boxes=list(boxes), options=options)
    assert result.ok, result.message
    return result.box.iou(gold) >= 0.5


_GROUNDERS: dict = {}


def test_end_to_end_ground_truth_and_detections(refer, tiny_clip_dir):
    argv = _refcoco_argv(refer, '--model', tiny_clip_dir, '--variants', 'full', 'crop_only')
    assert cli_eval.run(_parse(argv)) == 0
    report = json.loads((refer['out'] / 'report.json').read_text())
    image1 = draw_image(1)
    gt_boxes = [Box.from_list(ANNS[a][2]) for a in (11, 12, 13)]
    for variant in ('full', 'crop_only'):
        expected = 1  # ref 200: a single proposal
        for text, ann in (('the red square', 11), ('red block on the left', 11),
                          ('the blue circle', 12)):
            expected += _direct_correct(tiny_clip_dir, image1, text, gt_boxes,
                                        Box.from_list(ANNS[ann][2]), variant)
        v = report['variants'][variant]
        assert v['correct'] == expected, variant
        assert v['total'] == 7 and v['failed'] == 3
        assert v['failures'] == {BAD_BOX: 1, MISSING_ANNOTATION: 1, MISSING_IMAGE: 1}
    assert report['groundings_this_run'] == 8

    # a rerun grounds nothing and reports the same
    assert cli_eval.run(_parse(argv)) == 0
    again = json.loads((refer['out'] / 'report.json').read_text())
    assert again['groundings_this_run'] == 0
    assert again['variants'] == report['variants']

    # detections: image 1 gets only the red square's box (refs 100 right, 101 wrong),
    # image 2 none (whole-image fallback, wrong)
    dets = refer['out'].parent / 'dets.json'
    dets.write_text(json.dumps({'1': [ANNS[11][2]], '2': []}))
    argv = _refcoco_argv(refer, '--model', tiny_clip_dir, '--variants', 'full',
                         '--detections', str(dets))
    argv[argv.index('--out') + 1] = str(refer['out'].parent / 'dets_out')
    assert cli_eval.run(_parse(argv)) == 0
    report = json.loads((refer['out'].parent / 'dets_out' / 'report.json').read_text())
    assert report['variants']['full']['correct'] == 2
    assert report['warnings'] == {'empty_proposals_whole_image': 1}


def test_end_to_end_with_detector(refer, tiny_clip_dir, tiny_owlv2_dir):
    argv = _refcoco_argv(refer, '--model', tiny_clip_dir, '--variants', 'full',
                         '--detector', tiny_owlv2_dir, '--detector-threshold', '0.0')
    assert cli_eval.run(_parse(argv)) == 0
    report = json.loads((refer['out'] / 'report.json').read_text())
    assert report['config']['source']['proposals'] == f'detector:{tiny_owlv2_dir}'
    full = report['variants']['full']
    assert full['total'] == 7 and full['evaluated'] == 4
    assert full['failures'] == {BAD_BOX: 1, MISSING_ANNOTATION: 1, MISSING_IMAGE: 1}
    lines = [json.loads(x) for x in (refer['out'] / 'results.jsonl').read_text().splitlines()]
    image1 = [x for x in lines if x['id'].startswith(('100:', '101:'))]
    # the detector ran once for image 1: every expression there saw the same proposals
    assert len({x['n_proposals'] for x in image1}) == 1 and image1[0]['n_proposals'] >= 1
