"""Evaluation engine: variants, accuracy, failures, resume, progress and reports.

The grounder here is a small deterministic component injected through the engine's
``grounder_factory`` interface (it picks the largest proposal), so every expected count
is a hand count. End-to-end runs with the real Grounder are in test_eval_refcoco.py and
test_eval_jsonl.py.
"""

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from reclip_ros.core.types import Box, GroundingResult, Status
from reclip_ros.evaluation.engine import (
    BAD_BOX, EMPTY_PROPOSALS_WARNING, EXCEPTION, MISSING_IMAGE, UNREADABLE_IMAGE,
    EvalRecord, EvalSettings, ProgressBar, ResultStore, build_report, config_hash,
    evaluate, grounding_options, make_variants, read_image_rgb, result_key)


class LargestBoxGrounder:
    """Deterministic stand-in for the model part: answers the largest proposal."""

    def __init__(self, fail_on=()):
        self.calls = []
        self.fail_on = set(fail_on)

    def ground(self, image, expression, boxes=None, frame_key=None, options=None):
        self.calls.append({'expression': expression, 'frame_key': frame_key,
                           'options': options, 'n': len(boxes), 'shape': image.shape})
        if expression in self.fail_on:
            raise RuntimeError('boom')
        if expression == 'nothing':
            return GroundingResult.failure(expression, Status.INVALID_COMMAND, 'no object')
        best = max(boxes, key=lambda b: b.area)
        return GroundingResult(expression=expression, status=Status.OK, box=best,
                               confidence=1.0)


def _write_image(path: Path, size=(120, 160)) -> str:
    image = np.full((size[0], size[1], 3), 200, np.uint8)
    cv2.rectangle(image, (10, 10), (60, 60), (0, 0, 255), -1)
    cv2.circle(image, (110, 80), 20, (255, 0, 0), -1)
    assert cv2.imwrite(str(path), image)
    return str(path)


BIG = Box(10, 10, 80, 80)
MID = Box(100, 20, 40, 40)
SMALL = Box(100, 80, 10, 10)
ELSEWHERE = Box(0, 100, 30, 15)


@pytest.fixture()
def records(tmp_path):
    img1 = _write_image(tmp_path / 'one.png')
    img2 = _write_image(tmp_path / 'two.png')
    bad = tmp_path / 'garbage.jpg'
    bad.write_bytes(b'this is not an image')
    props = (BIG, MID, SMALL)
    return [
        # image one: given proposals; the largest box wins
        EvalRecord('r1', img1, 'one', 'the big one', BIG, props, split='val', category='a'),
        EvalRecord('r2', img1, 'one', 'the small one', SMALL, props, split='val',
                   category='b'),
        EvalRecord('r3', img1, 'one', 'not among proposals', ELSEWHERE, props, split='testA',
                   category='a'),
        EvalRecord('r4', img1, 'one', 'nothing', BIG, props, split='val', category='a'),
        # image two: no proposals given -> gold boxes of the image's records (MID, SMALL)
        EvalRecord('r5', img2, 'two', 'mid', MID, None, split='val', category='b'),
        EvalRecord('r6', img2, 'two', 'small', SMALL, None, split='val', category='b'),
        # image two again with an empty list: whole-image fallback (IoU with MID < 0.5)
        EvalRecord('r7', img2, 'two', 'empty list', MID, (), split='val', category='b'),
        # failures
        EvalRecord('r8', str(tmp_path / 'missing.png'), 'missing', 'x', BIG, props,
                   split='val'),
        EvalRecord('r9', str(bad), 'garbage', 'x', BIG, props, split='val'),
        EvalRecord('r10', img1, 'one', 'x', None, props, split='val', error=BAD_BOX,
                   detail='width 0'),
        EvalRecord('r11', img1, 'one', 'far away', Box(500, 500, 10, 10), props,
                   split='val'),
    ]


def _settings(tmp_path, names=('full', 'no_relations'), **kw):
    return EvalSettings(out_dir=str(tmp_path / 'out'), config={'models': ['fake']},
                        variants=make_variants(names), stream=io.StringIO(), **kw)


def _lines(tmp_path):
    path = tmp_path / 'out' / 'results.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_make_variants_and_options():
    variants = make_variants(size_prior=0.1)
    assert [v.name for v in variants] == ['full', 'paper', 'no_relations', 'crop_only',
                                          'blur_only', 'full_size_prior']
    by_name = {v.name: v for v in variants}
    assert by_name['paper'].use_relations and by_name['paper'].methods == ('crop', 'blur')
    assert by_name['paper'].relation_mode('extended') == 'paper'
    assert by_name['full'].relation_mode('extended') == 'extended'
    assert by_name['full'].relation_mode('paper') == 'paper'
    # the paper's isolation ablation: one isolation, relations off
    assert not by_name['crop_only'].use_relations and not by_name['blur_only'].use_relations
    assert by_name['full_size_prior'].size_prior == pytest.approx(0.1)
    assert by_name['full'].size_prior == 0.0 and by_name['full'].use_relations
    assert by_name['crop_only'].methods == ('crop',)
    assert by_name['blur_only'].methods == ('blur',)
    assert not by_name['no_relations'].use_relations
    with pytest.raises(ValueError, match='unknown variant'):
        make_variants(['fast'])
    with pytest.raises(ValueError, match='size prior'):
        make_variants(['full'], size_prior=1.5)
    opts = grounding_options(by_name['crop_only'])
    assert tuple(opts.methods) == ('crop',) and opts.use_relations is False
    assert opts.size_prior == 0.0


def test_config_hash_depends_on_config_and_variant():
    full, crop = make_variants(['full', 'crop_only'])
    assert config_hash({'a': 1}, full) == config_hash({'a': 1}, full)
    assert config_hash({'a': 1}, full) != config_hash({'a': 2}, full)
    assert config_hash({'a': 1}, full) != config_hash({'a': 1}, crop)


def test_accuracy_failures_and_report_match_hand_count(tmp_path, records):
    grounder = LargestBoxGrounder()
    made = []

    def factory():
        made.append(1)
        return grounder

    report = evaluate(records, _settings(tmp_path), factory, options_for=lambda v: v)
    assert len(made) == 1
    # correct: r1 (BIG is largest), r5 (MID larger than SMALL) -> 2 of 11 records
    for name in ('full', 'no_relations'):
        v = report['variants'][name]
        assert v['total'] == 11 and v['pending'] == 0
        assert v['correct'] == 2
        assert v['accuracy'] == pytest.approx(round(100 * 2 / 11, 2))
        # r4 INVALID_COMMAND, r8 missing, r9 unreadable, r10 + r11 bad box
        assert v['failures'] == {BAD_BOX: 2, 'grounding_invalid_command': 1,
                                 MISSING_IMAGE: 1, UNREADABLE_IMAGE: 1}
        assert v['failed'] == 5 and v['evaluated'] == 6
        assert v['accuracy_evaluated'] == pytest.approx(round(100 * 2 / 6, 2))
        assert v['per_split']['testA']['total'] == 1
        assert v['per_split']['testA']['correct'] == 0
        assert v['per_split']['val']['correct'] == 2
        assert v['per_category']['b']['correct'] == 1
    assert report['warnings'] == {EMPTY_PROPOSALS_WARNING: 2}
    # grounded: r1-r7 (r4 returns a failure status) for 2 variants
    assert len(grounder.calls) == 14 and report['groundings_this_run'] == 14
    # proposals of image two without their own: the gold boxes of its records
    r5_calls = [c for c in grounder.calls if c['expression'] == 'mid']
    assert all(c['n'] == 2 and c['frame_key'] == 'two' for c in r5_calls)
    assert {c['options'].name for c in r5_calls} == {'full', 'no_relations'}
    # one frame key per image, shared by every expression and variant
    assert {c['frame_key'] for c in grounder.calls} == {'one', 'two'}
    lines = _lines(tmp_path)
    assert len(lines) == 22
    assert {ln['variant'] for ln in lines} == {'full', 'no_relations'}
    r3 = [ln for ln in lines if ln['id'] == 'r3'][0]
    assert r3['correct'] is False and r3['iou'] == 0.0 and r3['failure'] is None
    md = (tmp_path / 'out' / 'report.md').read_text()
    assert '| full |' in md and 'missing_image' in md
    saved = json.loads((tmp_path / 'out' / 'report.json').read_text())
    assert saved['variants']['full']['correct'] == 2


def test_resume_does_no_new_grounding(tmp_path, records):
    first = evaluate(records, _settings(tmp_path), LargestBoxGrounder,
                     options_for=lambda v: v)
    n_lines = len(_lines(tmp_path))

    def must_not_load():
        raise AssertionError('nothing is left to ground; the grounder must not be loaded')

    second = evaluate(records, _settings(tmp_path), must_not_load, options_for=lambda v: v)
    assert second['groundings_this_run'] == 0
    assert second['skipped_this_run'] == 22
    assert len(_lines(tmp_path)) == n_lines
    for name in ('full', 'no_relations'):
        assert second['variants'][name] == first['variants'][name]


def test_resume_after_crash_and_new_variant(tmp_path, records):
    evaluate(records, _settings(tmp_path), LargestBoxGrounder, options_for=lambda v: v)
    path = tmp_path / 'out' / 'results.jsonl'
    lines = path.read_text().splitlines()
    # keep 15 lines and half of the 16th (a crash while writing)
    path.write_text('\n'.join(lines[:15]) + '\n' + lines[15][:20])
    grounder = LargestBoxGrounder()
    report = evaluate(records, _settings(tmp_path, ('full', 'no_relations', 'crop_only')),
                      lambda: grounder, options_for=lambda v: v)
    assert report['corrupt_result_lines'] == 1
    assert report['skipped_this_run'] == 15
    # 7 lost lines + 11 crop_only lines are new
    assert report['groundings_this_run'] == len(grounder.calls)
    assert report['variants']['crop_only']['correct'] == 2
    assert report['variants']['full']['correct'] == 2
    assert report['variants']['full']['pending'] == 0
    assert len(ResultStore(tmp_path / 'out').results) == 33


def test_retry_failures_and_exceptions_do_not_abort(tmp_path, records):
    grounder = LargestBoxGrounder(fail_on={'the small one'})
    report = evaluate(records, _settings(tmp_path, ('full',)), lambda: grounder,
                      options_for=lambda v: v)
    assert report['variants']['full']['failures'][EXCEPTION] == 1
    assert report['variants']['full']['correct'] == 2  # the rest still ran
    again = LargestBoxGrounder()
    report = evaluate(records, _settings(tmp_path, ('full',), retry_failures=True),
                      lambda: again, options_for=lambda v: v)
    assert EXCEPTION not in report['variants']['full']['failures']
    # only the failed records were redone: r2 (exception), r4 (status), and the five
    # record-level failures (which fail again without grounding)
    assert sorted(c['expression'] for c in again.calls) == ['nothing', 'the small one']


def test_progress_bar_reports_throughput_and_eta():
    stream = io.StringIO()
    bar = ProgressBar(4, stream=stream, log_interval=0.0)
    for _ in range(2):
        bar.update(1, note='full')
    text = stream.getvalue()
    assert '2/4' in text and 'expr/s' in text and 'ETA' in text and 'full' in text
    bar.update(2)
    bar.close()
    assert '4/4' in stream.getvalue() and '100.0%' in stream.getvalue()
    silent = io.StringIO()
    quiet = ProgressBar(3, stream=silent, enabled=False)
    quiet.update(3)
    quiet.close()
    assert silent.getvalue() == ''


def test_read_image_reasons(tmp_path):
    image, reason, _ = read_image_rgb(str(tmp_path / 'nope.png'))
    assert image is None and reason == MISSING_IMAGE
    (tmp_path / 'bad.png').write_bytes(b'\x89PNG broken')
    image, reason, _ = read_image_rgb(str(tmp_path / 'bad.png'))
    assert image is None and reason == UNREADABLE_IMAGE
    path = tmp_path / 'ok.png'
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR
    cv2.imwrite(str(path), bgr)
    image, reason, _ = read_image_rgb(str(path))
    assert reason == '' and image.shape == (4, 5, 3) and image[0, 0, 0] == 255


def test_build_report_counts_pending():
    full = make_variants(['full'])[0]
    recs = [EvalRecord('a', 'x', 'x', 'e', BIG), EvalRecord('b', 'x', 'x', 'e', BIG)]
    hashes = {'full': 'h'}
    key = result_key(recs[0], 'full', 'h')
    results = {key: {'key': key, 'correct': True, 'failure': None,
                     'split': 'val', 'category': ''}}
    report = build_report(recs, results, [full], hashes, {})
    v = report['variants']['full']
    assert v['pending'] == 1 and v['total'] == 1 and v['accuracy'] == 100.0


def test_interrupt_keeps_results_and_resume_finishes(tmp_path, records):
    class Interrupting(LargestBoxGrounder):
        def ground(self, image, expression, **kw):
            if len(self.calls) == 3:
                raise KeyboardInterrupt
            return super().ground(image, expression, **kw)

    settings = _settings(tmp_path, ('full',))
    report = evaluate(records, settings, Interrupting, options_for=lambda v: v)
    assert report['interrupted'] is True
    assert report['variants']['full']['pending'] == 11 - 3
    assert 'interrupted' in settings.stream.getvalue()
    assert len(_lines(tmp_path)) == 3
    finisher = LargestBoxGrounder()
    report = evaluate(records, _settings(tmp_path, ('full',)), lambda: finisher,
                      options_for=lambda v: v)
    assert report['interrupted'] is False and report['skipped_this_run'] == 3
    assert report['variants']['full']['pending'] == 0
    assert report['variants']['full']['correct'] == 2


# --- issue 9: any gold box, content-keyed resume, relation mode in reports --------------------

def test_correct_means_iou_above_half_with_any_gold_box(tmp_path):
    from reclip_ros.evaluation.variants import best_iou, is_correct
    half = Box(0, 0, 10, 10)
    # IoU exactly 0.5 (a box of half the area, inside): not correct, as in the reference code
    assert best_iou(Box(0, 0, 10, 5), [half]) == pytest.approx(0.5)
    assert not is_correct(Box(0, 0, 10, 5), [half])
    assert is_correct(Box(0, 0, 10, 6), [half])
    assert is_correct(BIG, [SMALL, BIG]) and not is_correct(BIG, [SMALL, MID])
    assert not is_correct(None, [BIG])
    img = _write_image(tmp_path / 'one.png')
    # the largest proposal (BIG) is the second gold box of r1 only
    recs = [EvalRecord('r1', img, 'one', 'a', SMALL, (BIG, MID, SMALL), extra_golds=(BIG,)),
            EvalRecord('r2', img, 'one', 'b', SMALL, (BIG, MID, SMALL))]
    report = evaluate(recs, _settings(tmp_path, ('full',)), LargestBoxGrounder,
                      options_for=lambda v: v)
    assert report['variants']['full']['correct'] == 1
    assert [e['correct'] for e in _lines(tmp_path)] == [True, False]


def _jsonl_dataset(tmp_path, lines):
    path = tmp_path / 'data.jsonl'
    path.write_text(''.join(json.dumps(line) + '\n' for line in lines), encoding='utf-8')
    return path


def test_resume_after_the_dataset_changed_counts_the_new_dataset(tmp_path):
    from reclip_ros.evaluation.jsonl import load_jsonl
    img = _write_image(tmp_path / 'one.png')
    props = [b.to_list() for b in (BIG, MID, SMALL)]
    right = {'image': img, 'expression': 'the big one', 'box': BIG.to_list(),
             'proposals': props}
    wrong = {'image': img, 'expression': 'the small one', 'box': SMALL.to_list(),
             'proposals': props}
    # ids default to line numbers: inserting a line at the top shifts every id
    first = _jsonl_dataset(tmp_path, [right, wrong, wrong])
    report = evaluate(load_jsonl(first, tmp_path), _settings(tmp_path, ('full',)),
                      LargestBoxGrounder, options_for=lambda v: v)
    assert report['variants']['full']['correct'] == 1
    changed = _jsonl_dataset(tmp_path, [wrong, right, wrong, wrong])
    grounder = LargestBoxGrounder()
    report = evaluate(load_jsonl(changed, tmp_path), _settings(tmp_path, ('full',)),
                      lambda: grounder, options_for=lambda v: v)
    full = report['variants']['full']
    assert (full['total'], full['correct'], full['pending']) == (4, 1, 0)
    # line 3 is the same record as before (same id, same content): reused; lines 1 and 2
    # changed content under the same ids and line 4 is new: grounded
    assert report['skipped_this_run'] == 1
    assert [c['expression'] for c in grounder.calls] == ['the small one', 'the big one',
                                                         'the small one']


def test_resume_key_changes_with_content_and_code():
    from reclip_ros.evaluation.engine import code_version, record_hash
    a = EvalRecord('r1', 'x.png', 'x', 'the cup', BIG, (BIG, MID))
    assert record_hash(a) == record_hash(EvalRecord('r1', 'x.png', 'x', 'the cup', BIG,
                                                    (BIG, MID)))
    for other in (EvalRecord('r1', 'y.png', 'y', 'the cup', BIG, (BIG, MID)),
                  EvalRecord('r1', 'x.png', 'x', 'the mug', BIG, (BIG, MID)),
                  EvalRecord('r1', 'x.png', 'x', 'the cup', MID, (BIG, MID)),
                  EvalRecord('r1', 'x.png', 'x', 'the cup', BIG, (BIG,)),
                  EvalRecord('r1', 'x.png', 'x', 'the cup', BIG, (BIG, MID),
                             extra_golds=(MID,))):
        assert record_hash(other) != record_hash(a)
    assert len(code_version()) == 12
    full = make_variants(['full'])[0]
    assert code_version() in json.dumps({'code': code_version()})
    assert config_hash({'relations': 'paper'}, full) != config_hash({'relations': 'extended'},
                                                                    full)


def test_reports_state_the_relation_mode_of_every_variant(tmp_path, records):
    settings = _settings(tmp_path, ('full', 'paper', 'crop_only'))
    report = evaluate(records[:3], settings, LargestBoxGrounder)
    modes = {name: v['relations'] for name, v in report['variants'].items()}
    assert modes == {'full': 'extended', 'paper': 'paper', 'crop_only': 'extended'}
    md = (tmp_path / 'out' / 'report.md').read_text()
    assert '| paper | paper |' in md and '| full | extended |' in md
    # the grounder received the mode of each variant
    settings = EvalSettings(out_dir=str(tmp_path / 'out2'),
                            config={'models': ['fake'], 'relations': 'paper'},
                            variants=make_variants(['full', 'paper']), stream=io.StringIO())
    grounder = LargestBoxGrounder()
    evaluate(records[:1], settings, lambda: grounder)
    assert [c['options'].relations for c in grounder.calls] == ['paper', 'paper']
