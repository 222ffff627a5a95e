"""The evaluation engine: ground every expression of a dataset, score it, write results.

Datasets are turned into :class:`EvalRecord` lists by :mod:`reclip_ros.evaluation.refcoco`
and :mod:`reclip_ros.evaluation.jsonl`; :func:`evaluate` then

- groups the records by image, loads each image once and computes its proposals once, and
  grounds every expression of that image with every variant under one ``frame_key``, so
  the region scorer encodes the isolated proposals of an image only once;
- appends one JSON line per (record, variant) to ``<out>/results.jsonl`` (flushed at once),
  and skips on a rerun whatever is already there for the same configuration;
- counts failures per reason (missing image, bad box, ...) instead of dropping records;
- writes ``<out>/report.json`` and ``<out>/report.md`` with the configuration, counts,
  failures and accuracies (overall, per split, per category).

Accuracy is the reference code's: a prediction is correct when its IoU with any of the
record's gold boxes is above 0.5 (:mod:`reclip_ros.evaluation.variants`). Records that
failed count as wrong (``accuracy``); ``accuracy_evaluated``
divides by the records that were actually grounded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from reclip_ros.core.relation_kinds import DEFAULT_RELATION_MODE
from reclip_ros.core.types import Box, ReclipError
from reclip_ros.evaluation.variants import (  # noqa: F401 - re-exported
    DEFAULT_SIZE_PRIOR, IOU_THRESHOLD, VARIANT_NAMES, Variant, best_iou, is_correct,
    make_variants)

RESULTS_FILE = 'results.jsonl'
REPORT_JSON = 'report.json'
REPORT_MD = 'report.md'

# Failure reasons (a record that is not grounded, or whose grounding did not succeed).
MISSING_IMAGE = 'missing_image'
UNREADABLE_IMAGE = 'unreadable_image'
BAD_BOX = 'bad_box'
BAD_PROPOSALS = 'bad_proposals'
BAD_RECORD = 'bad_record'
MISSING_ANNOTATION = 'missing_annotation'
DETECTOR_ERROR = 'detector_error'
EXCEPTION = 'exception'
GROUNDING_PREFIX = 'grounding_'  # + the lower-case Status name, e.g. grounding_no_proposals

# Warnings (the record is still evaluated).
EMPTY_PROPOSALS_WARNING = 'empty_proposals_whole_image'


class EvalDataError(ReclipError):
    """A dataset or detections file cannot be read at all (the run cannot start)."""


@dataclass(frozen=True)
class EvalRecord:
    """One referring expression to evaluate.

    ``gold`` is the referent's box; ``extra_golds`` are further acceptable boxes (a
    prediction is correct when it matches any of :attr:`golds`). ``image_key`` identifies the
    image (records with the same key share one frame and its
    proposal embeddings); ``proposals`` None means "use the detector" (or, without one,
    the gold boxes of all records of the image); ``error`` is a failure reason found while
    loading the record (the record is then reported as that failure, not grounded).
    """

    id: str
    image_path: str
    image_key: str
    expression: str
    gold: Optional[Box]
    proposals: Optional[Tuple[Box, ...]] = None
    split: str = ''
    category: str = ''
    error: str = ''
    detail: str = ''
    extra_golds: Tuple[Box, ...] = ()

    @property
    def golds(self) -> Tuple[Box, ...]:
        """Every acceptable gold box (empty when the record has none)."""
        return ((self.gold,) if self.gold is not None else ()) + tuple(self.extra_golds)


def grounding_options(variant: Variant, run_mode: str = DEFAULT_RELATION_MODE) -> Any:
    """Return the ``GroundingOptions`` of the core grounder for *variant*."""
    return variant.grounding_options(run_mode)


def config_hash(config: dict, variant: Variant) -> str:
    """Return a short stable hash of the run configuration plus the variant's options."""
    run_mode = config.get('relations', DEFAULT_RELATION_MODE)
    payload = json.dumps({'config': config, 'variant': variant.options_dict(run_mode),
                          'code': code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode('utf-8')).hexdigest()[:12]


_CODE_VERSION: Optional[str] = None


def code_version() -> str:
    """A digest of the core and evaluation sources: results of other code are not reused."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        package = Path(__file__).resolve().parent.parent
        digest = hashlib.sha256()
        for folder in ('core', 'evaluation'):
            for path in sorted((package / folder).glob('**/*.py')):
                digest.update(path.relative_to(package).as_posix().encode('utf-8'))
                digest.update(path.read_bytes())
        _CODE_VERSION = digest.hexdigest()[:12]
    return _CODE_VERSION


def record_hash(record: EvalRecord) -> str:
    """A short hash of what a record asks: image, expression, gold boxes and proposals."""
    payload = json.dumps({
        'image': record.image_key or record.image_path, 'expression': record.expression,
        'golds': [b.to_list() for b in record.golds],
        'proposals': None if record.proposals is None else [b.to_list()
                                                            for b in record.proposals],
        'error': record.error}, sort_keys=True)
    return hashlib.sha256(payload.encode('utf-8')).hexdigest()[:12]


def result_key(record: EvalRecord, variant: str, cfg_hash: str) -> str:
    """Return the resume key of one (record, its content, variant, configuration and code)."""
    return f'{record.id}|{record_hash(record)}|{variant}|{cfg_hash}'


# ------------------------------------------------------------------------------ progress

def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return '--:--'
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f'{h:d}:{m:02d}:{s:02d}' if h else f'{m:02d}:{s:02d}'


class ProgressBar:
    """A small text progress bar with throughput and ETA, written to a stream (stderr).

    On a terminal it redraws one line (at most every ``min_interval`` seconds); otherwise it
    prints a line every ``log_interval`` seconds, so logs stay readable.
    """

    def __init__(self, total: int, unit: str = 'expr', stream: Optional[TextIO] = None,
                 enabled: bool = True, min_interval: float = 0.2,
                 log_interval: float = 10.0, width: int = 24):
        self.total = max(int(total), 0)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.count = 0
        self.width = width
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._interval = min_interval if self._is_tty() else log_interval
        self._note = ''
        self._drawn_count = -1

    def _is_tty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    @property
    def rate(self) -> float:
        """Items per second since the start."""
        elapsed = time.monotonic() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float:
        """Estimated seconds left (inf before the first item)."""
        rate = self.rate
        return (self.total - self.count) / rate if rate > 0 else math.inf

    def line(self) -> str:
        """Return the current progress line."""
        frac = self.count / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = '#' * filled + '-' * (self.width - filled)
        elapsed = time.monotonic() - self.start
        text = (f'[{bar}] {self.count}/{self.total} {100.0 * frac:5.1f}% '
                f'{self.rate:.2f} {self.unit}/s elapsed {_format_duration(elapsed)} '
                f'ETA {_format_duration(self.eta)}')
        return f'{text} {self._note}'.rstrip()

    def update(self, n: int = 1, note: str = '') -> None:
        """Advance by *n* items; *note* is shown at the end of the line."""
        self.count += n
        if note:
            self._note = note
        now = time.monotonic()
        if self.enabled and (now - self._last_draw >= self._interval or self.count >= self.total):
            self._draw()
            self._last_draw = now
            self._drawn_count = self.count

    def _draw(self) -> None:
        if self._is_tty():
            self.stream.write('\r' + self.line() + '\x1b[K')
        else:
            self.stream.write(self.line() + '\n')
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if not self.enabled:
            return
        if self._drawn_count != self.count:
            self._draw()
        if self._is_tty():
            self.stream.write('\n')
        self.stream.flush()


# ------------------------------------------------------------------------------ results

class ResultStore:
    """The append-only ``results.jsonl`` of an output directory, indexed by resume key."""

    def __init__(self, out_dir: os.PathLike):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS_FILE
        self.results: Dict[str, dict] = {}
        self.corrupt_lines = 0
        self._file: Optional[TextIO] = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding='utf-8') as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    entry = json.loads(line)
                    key = entry['key']
                except (ValueError, KeyError, TypeError):
                    self.corrupt_lines += 1  # e.g. a line cut short by a crash
                    continue
                self.results[key] = entry  # the latest line of a key wins

    def is_done(self, key: str, retry_failures: bool = False) -> bool:
        """True when *key* has a result (and, with *retry_failures*, it is not a failure)."""
        entry = self.results.get(key)
        if entry is None:
            return False
        return not (retry_failures and entry.get('failure'))

    def append(self, entry: dict) -> None:
        """Append one result line and flush it to disk."""
        if self._file is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            needs_newline = False
            if self.path.exists() and self.path.stat().st_size > 0:
                with open(self.path, 'rb') as f:
                    f.seek(-1, os.SEEK_END)
                    needs_newline = f.read(1) != b'\n'
            self._file = open(self.path, 'a', encoding='utf-8')
            if needs_newline:  # a line cut short by a crash: never glue a new line to it
                self._file.write('\n')
        self._file.write(json.dumps(entry, sort_keys=True) + '\n')
        self._file.flush()
        self.results[entry['key']] = entry

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


# ------------------------------------------------------------------------------ engine

def read_image_rgb(path: str) -> Tuple[Optional[np.ndarray], str, str]:
    """Read an image as RGB uint8; return ``(image, failure_reason, detail)``."""
    import cv2
    if not path or not os.path.isfile(path):
        return None, MISSING_IMAGE, f'no such file: {path}'
    try:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # pragma: no cover - OpenCV rarely raises here
        return None, UNREADABLE_IMAGE, f'{path}: {exc}'
    if image is None or image.size == 0:
        return None, UNREADABLE_IMAGE, f'cannot decode image {path}'
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), '', ''


def _box_list(box: Optional[Box]) -> Optional[List[float]]:
    return [round(v, 2) for v in box.to_list()] if box is not None else None


@dataclass
class EvalSettings:
    """What :func:`evaluate` needs besides the records.

    ``config`` is the JSON-ready run configuration (models, precision, proposals source,
    dataset...); it goes into the report and, hashed with each variant, into the resume key.
    """

    out_dir: str
    config: dict
    variants: List[Variant]
    retry_failures: bool = False
    progress: bool = True
    stream: Optional[TextIO] = None
    extra_report: dict = field(default_factory=dict)


class Evaluator:
    """Runs the records of a dataset through a grounder (see :func:`evaluate`).

    ``grounder_factory()`` is called once, only when some record still needs grounding;
    ``detector(image_rgb) -> list[Box]`` gives proposals for records without them (None:
    use the gold boxes of all records of the image); ``options_for(variant)`` builds the
    grounder's options (default: the core ``GroundingOptions``).
    """

    def __init__(self, settings: EvalSettings, grounder_factory: Callable[[], Any],
                 detector: Optional[Callable[[np.ndarray], Sequence[Box]]] = None,
                 options_for: Optional[Callable[[Variant], Any]] = None):
        self.settings = settings
        self.grounder_factory = grounder_factory
        self.detector = detector
        run_mode = settings.config.get('relations', DEFAULT_RELATION_MODE)
        self.options_for = options_for or (lambda v: grounding_options(v, run_mode))
        self.grounder: Any = None
        self.hashes = {v.name: config_hash(settings.config, v) for v in settings.variants}
        self.options = {}
        self.warnings: Counter = Counter()
        self.groundings = 0

    def key(self, record: EvalRecord, variant: Variant) -> str:
        """Return the resume key of *record* under *variant*."""
        return result_key(record, variant.name, self.hashes[variant.name])

    def _get_grounder(self) -> Any:
        if self.grounder is None:
            self.grounder = self.grounder_factory()
        return self.grounder

    def _entry(self, record: EvalRecord, variant: Variant, **values: Any) -> dict:
        entry = {
            'key': self.key(record, variant), 'id': record.id, 'variant': variant.name,
            'config': self.hashes[variant.name], 'split': record.split,
            'category': record.category, 'image': record.image_path,
            'expression': record.expression, 'gold_box': _box_list(record.gold),
            'gold_boxes': [_box_list(g) for g in record.golds],
            'correct': False, 'iou': None, 'failure': None, 'detail': '', 'status': None,
            'pred_box': None, 'n_proposals': 0, 'ms': 0.0,
        }
        entry.update(values)
        return entry

    def run(self, records: Sequence[EvalRecord]) -> dict:
        """Evaluate *records*; return the report (also written to the output directory)."""
        s = self.settings
        store = ResultStore(s.out_dir)
        groups: OrderedDict[str, List[EvalRecord]] = OrderedDict()
        for record in records:
            groups.setdefault(record.image_key, []).append(record)
        todo_total = sum(1 for r in records for v in s.variants
                         if not store.is_done(self.key(r, v), s.retry_failures))
        skipped = len(records) * len(s.variants) - todo_total
        stream = s.stream if s.stream is not None else sys.stderr
        if skipped and s.progress:
            stream.write(f'resuming: {skipped} results already in {store.path}, '
                         f'{todo_total} to do\n')
        if todo_total:
            self._get_grounder()  # load models before the clock of the progress bar starts
        bar = ProgressBar(todo_total, stream=stream, enabled=s.progress and todo_total > 0)
        interrupted = False
        try:
            for image_key, group in groups.items():
                todo = [(r, v) for r in group for v in s.variants
                        if not store.is_done(self.key(r, v), s.retry_failures)]
                if todo:
                    self._run_image(image_key, group, todo, store, bar)
        except KeyboardInterrupt:
            interrupted = True
            stream.write('\ninterrupted: results so far are kept; rerun to continue\n')
        finally:
            bar.close()
            store.close()
        report = build_report(records, store.results, s.variants, self.hashes, s.config,
                              warnings=dict(self.warnings),
                              corrupt_lines=store.corrupt_lines,
                              extra=dict(s.extra_report, interrupted=interrupted,
                                         groundings_this_run=self.groundings,
                                         skipped_this_run=skipped,
                                         throughput_expr_per_s=round(bar.rate, 3)))
        write_report(report, s.out_dir)
        return report

    def _proposals_for(self, image_key: str, group: Sequence[EvalRecord], image: np.ndarray,
                       cache: dict) -> Tuple[Optional[Tuple[Box, ...]], str, str]:
        """Proposals for records without their own: detector once per image, or gold boxes."""
        if 'boxes' in cache:
            return cache['boxes'], cache['reason'], cache['detail']
        boxes, reason, detail = None, '', ''
        if self.detector is not None:
            try:
                boxes = tuple(self.detector(image))
            except (KeyboardInterrupt, ReclipError):
                raise  # e.g. the detector model is missing: every image would fail alike
            except Exception as exc:  # noqa: BLE001 - a record failure, never an abort
                reason, detail = DETECTOR_ERROR, f'{type(exc).__name__}: {exc}'
        else:
            seen = []
            for r in group:
                if r.gold is not None and not r.error and r.gold not in seen:
                    seen.append(r.gold)
            boxes = tuple(seen)
        cache.update(boxes=boxes, reason=reason, detail=detail)
        return boxes, reason, detail

    def _run_image(self, image_key: str, group: Sequence[EvalRecord],
                   todo: Sequence[Tuple[EvalRecord, Variant]], store: ResultStore,
                   bar: ProgressBar) -> None:
        image: Optional[np.ndarray] = None
        image_reason, image_detail = '', ''
        needs_image = any(not r.error for r, _ in todo)
        if needs_image:
            image, image_reason, image_detail = read_image_rgb(group[0].image_path)
        cache: dict = {}
        for record, variant in todo:
            t0 = time.perf_counter()
            if record.error:
                entry = self._entry(record, variant, failure=record.error, detail=record.detail)
            elif image is None:
                entry = self._entry(record, variant, failure=image_reason, detail=image_detail)
            else:
                entry = self._ground(record, variant, image, image_key, group, cache)
            entry['ms'] = round(1000.0 * (time.perf_counter() - t0), 3)
            store.append(entry)
            bar.update(1, note=f'{variant.name}')

    def _ground(self, record: EvalRecord, variant: Variant, image: np.ndarray, image_key: str,
                group: Sequence[EvalRecord], cache: dict) -> dict:
        h, w = image.shape[:2]
        gold = record.gold
        if gold is None or gold.clipped(w, h).area <= 0:
            return self._entry(record, variant, failure=BAD_BOX,
                               detail=f'gold box {_box_list(gold)} is outside the '
                                      f'{w}x{h} image')
        proposals = record.proposals
        if proposals is None:
            proposals, reason, detail = self._proposals_for(image_key, group, image, cache)
            if reason:
                return self._entry(record, variant, failure=reason, detail=detail)
        proposals = tuple(b for b in proposals  # the grounder drops sub-pixel boxes too
                          if b.clipped(w, h).width >= 1 and b.clipped(w, h).height >= 1)
        if not proposals:  # as the paper's code: fall back to the whole image
            proposals = (Box(0.0, 0.0, float(w), float(h)),)
            self.warnings[EMPTY_PROPOSALS_WARNING] += 1
        if variant.name not in self.options:
            self.options[variant.name] = self.options_for(variant)
        try:
            grounder = self._get_grounder()
            result = grounder.ground(image, record.expression, boxes=list(proposals),
                                     frame_key=image_key, options=self.options[variant.name])
        except (KeyboardInterrupt, ReclipError):
            raise  # interrupts and model/device errors stop the run, with a clear message
        except Exception as exc:  # noqa: BLE001 - one bad record must not abort the run
            return self._entry(record, variant, failure=EXCEPTION,
                               detail=f'{type(exc).__name__}: {exc}',
                               n_proposals=len(proposals))
        self.groundings += 1
        status = getattr(result.status, 'name', str(result.status))
        if not result.ok or result.box is None:
            return self._entry(record, variant, failure=GROUNDING_PREFIX + status.lower(),
                               detail=result.message, status=status,
                               n_proposals=len(proposals))
        iou = best_iou(result.box, record.golds)
        return self._entry(record, variant, correct=is_correct(result.box, record.golds),
                           iou=round(iou, 4), status=status, pred_box=_box_list(result.box),
                           n_proposals=len(proposals))

    def close(self) -> None:
        """Release the grounder, if one was loaded."""
        if self.grounder is not None and hasattr(self.grounder, 'close'):
            self.grounder.close()
        self.grounder = None


def evaluate(records: Sequence[EvalRecord], settings: EvalSettings,
             grounder_factory: Callable[[], Any],
             detector: Optional[Callable[[np.ndarray], Sequence[Box]]] = None,
             options_for: Optional[Callable[[Variant], Any]] = None) -> dict:
    """Evaluate *records* with every variant of *settings*; return the report.

    Results go to ``<out_dir>/results.jsonl`` (resumable), the report to ``report.json``
    and ``report.md``. The grounder is created only if something is left to ground.
    """
    evaluator = Evaluator(settings, grounder_factory, detector, options_for)
    try:
        return evaluator.run(records)
    finally:
        evaluator.close()


# ------------------------------------------------------------------------------ report

def _accuracy(correct: int, total: int) -> Optional[float]:
    return round(100.0 * correct / total, 2) if total else None


def _tally(entries: Iterable[dict]) -> dict:
    entries = list(entries)
    total = len(entries)
    correct = sum(1 for e in entries if e.get('correct'))
    failed = sum(1 for e in entries if e.get('failure'))
    evaluated = total - failed
    return {'total': total, 'evaluated': evaluated, 'failed': failed, 'correct': correct,
            'accuracy': _accuracy(correct, total),
            'accuracy_evaluated': _accuracy(correct, evaluated)}


def build_report(records: Sequence[EvalRecord], results: Dict[str, dict],
                 variants: Sequence[Variant], hashes: Dict[str, str], config: dict,
                 warnings: Optional[dict] = None, corrupt_lines: int = 0,
                 extra: Optional[dict] = None) -> dict:
    """Summarise the results of *records* (all variants) into a JSON-ready report.

    Accuracies are percentages (two decimals): ``accuracy`` counts failures as wrong,
    ``accuracy_evaluated`` leaves them out. Records with no result yet are ``pending``.
    """
    report: dict = {
        'config': config,
        'iou_threshold': IOU_THRESHOLD,
        'records': len(records),
        'images': len({r.image_key for r in records}),
        'variants': {},
        'warnings': dict(warnings or {}),
        'corrupt_result_lines': corrupt_lines,
    }
    report.update(extra or {})
    for variant in variants:
        entries, pending = [], 0
        for r in records:
            entry = results.get(result_key(r, variant.name, hashes[variant.name]))
            if entry is None:
                pending += 1
            else:
                entries.append(entry)
        summary = _tally(entries)
        summary['pending'] = pending
        summary['description'] = variant.description
        summary['options'] = variant.options_dict(config.get('relations',
                                                             DEFAULT_RELATION_MODE))
        summary['relations'] = summary['options']['relations']
        summary['config_hash'] = hashes[variant.name]
        summary['failures'] = dict(sorted(Counter(
            e['failure'] for e in entries if e.get('failure')).items()))
        summary['per_split'] = {
            split: _tally(e for e in entries if (e.get('split') or '') == split)
            for split in sorted({(e.get('split') or '') for e in entries})}
        summary['per_category'] = {
            cat: _tally(e for e in entries if (e.get('category') or '') == cat)
            for cat in sorted({(e.get('category') or '') for e in entries})}
        report['variants'][variant.name] = summary
    return report


def _fmt(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.2f}'


def report_markdown(report: dict) -> str:
    """Render a report as markdown."""
    lines = ['# ReCLIP evaluation report', '']
    cfg = report.get('config', {})
    lines += ['## Configuration', '']
    for key in sorted(cfg):
        lines.append(f'- **{key}**: `{json.dumps(cfg[key], default=str)}`')
    lines += ['', f'Records (expressions): {report["records"]}, images: {report["images"]}. '
              f'Correct means IoU > {report["iou_threshold"]} with a gold box; '
              '"accuracy" counts failed records as wrong, "acc. (evaluated)" leaves them out.',
              '']
    lines += ['## Accuracy', '',
              '| variant | relations | options | accuracy | acc. (evaluated) | correct '
              '| evaluated | failed | pending |',
              '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for name, v in report['variants'].items():
        lines.append(f'| {name} | {v["relations"]} | {v["description"]} | '
                     f'{_fmt(v["accuracy"])} | '
                     f'{_fmt(v["accuracy_evaluated"])} | {v["correct"]} | {v["evaluated"]} | '
                     f'{v["failed"]} | {v["pending"]} |')
    variants = report['variants']
    for section, key in (('Per split', 'per_split'), ('Per category', 'per_category')):
        groups = sorted({g for v in variants.values() for g in v[key]})
        if not groups or groups == ['']:
            continue
        lines += ['', f'## {section} (accuracy %, n)', '',
                  '| ' + key.split('_')[1] + ' | ' + ' | '.join(variants) + ' |',
                  '| --- |' + ' --- |' * len(variants)]
        for g in groups:
            cells = []
            for v in variants.values():
                t = v[key].get(g)
                cells.append(f'{_fmt(t["accuracy"])} ({t["total"]})' if t else '-')
            lines.append(f'| {g or "(none)"} | ' + ' | '.join(cells) + ' |')
    lines += ['', '## Failures', '']
    reasons = sorted({r for v in variants.values() for r in v['failures']})
    if reasons:
        lines += ['| reason | ' + ' | '.join(variants) + ' |',
                  '| --- |' + ' --- |' * len(variants)]
        for reason in reasons:
            lines.append(f'| {reason} | ' + ' | '.join(
                str(v['failures'].get(reason, 0)) for v in variants.values()) + ' |')
    else:
        lines.append('None.')
    if report.get('warnings'):
        lines += ['', '## Warnings', '']
        lines += [f'- {k}: {n}' for k, n in sorted(report['warnings'].items())]
    lines += ['', '## Run', '']
    for key in ('groundings_this_run', 'skipped_this_run', 'throughput_expr_per_s',
                'interrupted', 'corrupt_result_lines'):
        if key in report:
            lines.append(f'- {key}: {report[key]}')
    return '\n'.join(lines) + '\n'


def write_report(report: dict, out_dir: os.PathLike) -> Tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into *out_dir*; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / REPORT_JSON, out / REPORT_MD
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + '\n',
                         encoding='utf-8')
    md_path.write_text(report_markdown(report), encoding='utf-8')
    return json_path, md_path
