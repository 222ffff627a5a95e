"""RefCOCO, RefCOCO+, RefCOCOg (and RefGTA) in the REFER annotation layout.

Layout (as released with the REFER toolkit)::

    <refs-dir>/<dataset>/refs(<splitBy>).p   pickle: list of refs
    <refs-dir>/<dataset>/instances.json      COCO: images, annotations, categories

A ref is ``{ref_id, ann_id, image_id, category_id, split, sent_ids, sentences: [{sent_id,
sent, raw, tokens}], ...}``; the gold box is the ``bbox`` ``[x, y, w, h]`` of annotation
``ann_id``. Images are ``instances.images[].file_name`` under the images directory. RefGTA
is published in the same layout (``refgta/refs(utokyo).p``).

One :class:`~reclip_ros.evaluation.engine.EvalRecord` is made per sentence. Proposals are
the boxes of all annotated objects of the image (ground-truth proposals), or boxes from a
detections file, or None (the engine then runs the detector).
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from reclip_ros.core.types import Box
from reclip_ros.evaluation.engine import (
    BAD_BOX, BAD_PROPOSALS, BAD_RECORD, MISSING_ANNOTATION, EvalDataError, EvalRecord)

DATASETS = ('refcoco', 'refcoco+', 'refcocog', 'refgta')
SPLIT_BYS = ('unc', 'umd', 'google', 'utokyo')
SPLITS = ('val', 'test', 'testA', 'testB', 'testC', 'train')
SENTENCE_FIELDS = ('raw', 'sent')


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global: refs files hold only dicts, lists and strings."""

    def find_class(self, module: str, name: str):  # noqa: D102 - see class docstring
        raise pickle.UnpicklingError(
            f'refs file references {module}.{name}; a REFER refs file holds only plain '
            'lists, dicts, strings and numbers (refusing to run code from a pickle)')


def load_refs_pickle(path: os.PathLike) -> list:
    """Load a REFER ``refs(<splitBy>).p`` file (Python 2 or 3 pickle, plain data only).

    Python 2 byte strings are read as UTF-8 (the REFER sentences are UTF-8 text); only a
    file that is not valid UTF-8 falls back to Latin-1.
    """
    data = Path(path).read_bytes()
    refs = None
    for encoding in ('utf-8', 'latin1'):
        try:
            refs = _PlainUnpickler(io.BytesIO(data), encoding=encoding).load()
            break
        except UnicodeDecodeError:  # not UTF-8: try Latin-1, which decodes any byte
            continue
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise EvalDataError(f'cannot read refs file {path}: {exc}') from exc
    if not isinstance(refs, list):
        raise EvalDataError(f'{path}: expected a list of refs, got {type(refs).__name__}')
    return refs


def find_dataset_dir(refs_dir: os.PathLike, dataset: str, split_by: str) -> Path:
    """Return the folder holding ``refs(<splitBy>).p``: ``refs_dir/dataset`` or ``refs_dir``.

    Raises:
        EvalDataError: naming the paths that were tried.
    """
    base = Path(refs_dir).expanduser()
    name = f'refs({split_by}).p'
    tried = [base / dataset, base]
    for folder in tried:
        if (folder / name).is_file():
            return folder
    available = sorted(p.name for p in base.glob('*/refs(*).p')) if base.is_dir() else []
    hint = f' (found: {", ".join(available)})' if available else ''
    raise EvalDataError(
        f'{name} not found in ' + ' or '.join(str(t) for t in tried) + hint +
        '; pass --refs-dir pointing at the folder that holds the dataset folders '
        f'(e.g. .../refer/data containing {dataset}/{name}) or at the dataset folder itself')


@dataclass
class ReferData:
    """A loaded REFER dataset: refs plus its COCO instances, indexed by id."""

    dataset: str
    split_by: str
    folder: Path
    refs: list
    images: Dict[int, dict]
    annotations: Dict[int, dict]
    image_annotations: Dict[int, List[dict]]
    categories: Dict[int, str]

    def splits(self) -> List[str]:
        """Return the split names present in the refs."""
        return sorted({str(r.get('split', '')) for r in self.refs if isinstance(r, dict)})


def load_refer(refs_dir: os.PathLike, dataset: str, split_by: str) -> ReferData:
    """Load ``refs(<splitBy>).p`` and ``instances.json`` of *dataset*.

    Raises:
        EvalDataError: when a file is missing or malformed.
    """
    folder = find_dataset_dir(refs_dir, dataset, split_by)
    refs = load_refs_pickle(folder / f'refs({split_by}).p')
    inst_path = folder / 'instances.json'
    if not inst_path.is_file():
        raise EvalDataError(f'instances.json not found in {folder}')
    try:
        instances = json.loads(inst_path.read_text(encoding='utf-8'))
        images = {img['id']: img for img in instances['images']}
        annotations = {ann['id']: ann for ann in instances['annotations']}
        categories = {c['id']: c.get('name', str(c['id']))
                      for c in instances.get('categories', [])}
    except (ValueError, KeyError, TypeError) as exc:
        raise EvalDataError(f'{inst_path}: not a COCO instances file ({exc!r}); expected '
                            'images[{id, file_name}], annotations[{id, image_id, bbox}], '
                            'categories[{id, name}]') from exc
    image_annotations: Dict[int, List[dict]] = defaultdict(list)
    for ann in annotations.values():
        image_annotations[ann.get('image_id')].append(ann)
    return ReferData(dataset, split_by, folder, refs, images, annotations,
                     dict(image_annotations), categories)


def in_split(ref_split: str, split: str) -> bool:
    """REFER split semantics: 'test' matches testA/testB/...; 'testA' matches testAB too."""
    ref_split = str(ref_split)
    if split == 'test':
        return 'test' in ref_split
    if split in ('testA', 'testB', 'testC'):
        return ref_split.startswith('test') and split[-1] in ref_split[4:]
    return ref_split == split


def load_detections(path: os.PathLike) -> Dict[int, List[list]]:
    """Load a detections file: image id -> list of ``[x, y, w, h]``.

    Accepts ``{"<image_id>": [[x, y, w, h], ...]}`` (values may also be
    ``{"box": [x, y, w, h], ...}``), a list of ``{"image_id", "box"|"bbox"}`` (MAttNet's
    released detections), or ``{"dets": [...]}`` wrapping such a list.

    Raises:
        EvalDataError: when the file cannot be read or has another shape.
    """
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, ValueError) as exc:
        raise EvalDataError(f'cannot read detections file {path}: {exc}') from exc
    if isinstance(data, dict) and isinstance(data.get('dets'), list):
        data = data['dets']
    out: Dict[int, List[list]] = defaultdict(list)

    def as_box(item):
        if isinstance(item, dict):
            item = item.get('box', item.get('bbox'))
        if isinstance(item, dict):  # {"x", "y", "w", "h"}
            item = [item.get('x'), item.get('y'), item.get('w'), item.get('h')]
        return item

    try:
        if isinstance(data, dict):
            for image_id, dets in data.items():
                out[int(image_id)].extend(as_box(d) for d in dets)
        elif isinstance(data, list):
            for det in data:
                out[int(det['image_id'])].append(as_box(det))
        else:
            raise TypeError(type(data).__name__)
    except (KeyError, TypeError, ValueError) as exc:
        raise EvalDataError(
            f'{path}: unexpected detections format ({exc!r}); expected a JSON object mapping '
            'image id to a list of [x, y, w, h], or a list of {"image_id", "box"}') from exc
    return dict(out)


def _boxes(values: Sequence) -> Tuple[Optional[Tuple[Box, ...]], str]:
    boxes = []
    for v in values:
        try:
            boxes.append(Box.from_list(v))
        except (ValueError, TypeError) as exc:
            return None, str(exc)
    return tuple(boxes), ''


def resolve_image_path(images_dir: os.PathLike, file_name: str) -> str:
    """``images_dir/file_name``; COCO ``train2014/`` below *images_dir* is tried too."""
    base = Path(images_dir).expanduser()
    candidates = [base / file_name, base / 'train2014' / file_name]
    for c in candidates:
        if c.is_file():
            return str(c)
    return str(candidates[0])


def refer_records(data: ReferData, images_dir: os.PathLike, split: str,
                  proposals: str = 'gt', detections: Optional[Dict[int, List[list]]] = None,
                  sentence_field: str = 'raw') -> List[EvalRecord]:
    """Turn the refs of *split* into records (one per sentence), in file order.

    *proposals* is ``'gt'`` (boxes of all annotations of the image), ``'detections'``
    (from *detections*; an image without detections gets an empty list, which the engine
    replaces by the whole image, as the paper's code does) or ``'detector'`` (None).
    *sentence_field* ``'raw'`` (as the paper's code, lower-cased) falls back to ``'sent'``.

    Raises:
        EvalDataError: when no ref is in *split* (naming the splits present).
    """
    if proposals not in ('gt', 'detections', 'detector'):
        raise ValueError(f'unknown proposals source {proposals!r}')
    if proposals == 'detections' and detections is None:
        raise ValueError('proposals="detections" needs the detections mapping')
    records: List[EvalRecord] = []
    found = False
    image_props: Dict[int, Tuple[Optional[Tuple[Box, ...]], str]] = {}
    for index, ref in enumerate(data.refs):
        if not isinstance(ref, dict):
            records.append(EvalRecord(id=f'ref_index{index}', image_path='', image_key='',
                                      expression='', gold=None, split=split,
                                      error=BAD_RECORD, detail='ref is not a dict'))
            continue
        if not in_split(ref.get('split', ''), split):
            continue
        found = True
        ref_id = ref.get('ref_id', f'index{index}')
        image_id = ref.get('image_id')
        image = data.images.get(image_id)
        ann = data.annotations.get(ref.get('ann_id'))
        category = data.categories.get(ref.get('category_id'),
                                       str(ref.get('category_id', '')))
        image_path = resolve_image_path(images_dir, image['file_name']) if image else ''
        error, detail, gold = '', '', None
        if image is None:
            error, detail = MISSING_ANNOTATION, f'image {image_id} not in instances.json'
        elif ann is None:
            error, detail = MISSING_ANNOTATION, f'annotation {ref.get("ann_id")} not found'
        else:
            try:
                gold = Box.from_list(ann.get('bbox', ()))
            except (ValueError, TypeError) as exc:
                error, detail = BAD_BOX, f'annotation {ann.get("id")}: {exc}'
        props: Optional[Tuple[Box, ...]] = None
        if not error and proposals != 'detector':
            if image_id not in image_props:
                if proposals == 'gt':
                    raw = [a.get('bbox', ()) for a in data.image_annotations.get(image_id, [])]
                    raw = [b for b in raw if _boxes([b])[0] is not None]  # skip degenerate
                else:
                    raw = detections.get(int(image_id), [])
                image_props[image_id] = _boxes(raw)
            props, why = image_props[image_id]
            if props is None:
                error, detail = BAD_PROPOSALS, f'detections of image {image_id}: {why}'
        sentences = ref.get('sentences') or []
        if not sentences:
            records.append(EvalRecord(id=f'{ref_id}', image_path=image_path,
                                      image_key=f'{data.dataset}:{image_id}', expression='',
                                      gold=gold, split=str(ref.get('split', split)),
                                      category=category, error=BAD_RECORD,
                                      detail='ref has no sentences'))
            continue
        for s_index, sent in enumerate(sentences):
            sent_id = sent.get('sent_id', s_index) if isinstance(sent, dict) else s_index
            text = ''
            if isinstance(sent, dict):
                text = sent.get(sentence_field) or sent.get('sent') or sent.get('raw') or ''
            text = str(text).strip().lower()
            rec_error, rec_detail = error, detail
            if not rec_error and not text:
                rec_error, rec_detail = BAD_RECORD, 'empty sentence'
            records.append(EvalRecord(
                id=f'{ref_id}:{sent_id}', image_path=image_path,
                image_key=f'{data.dataset}:{image_id}', expression=text, gold=gold,
                proposals=props, split=str(ref.get('split', split)), category=category,
                error=rec_error, detail=rec_detail))
    if not found:
        raise EvalDataError(f'no refs in split {split!r} of {data.dataset} ({data.split_by}); '
                            f'splits present: {", ".join(data.splits()) or "none"}')
    return records


def records_to_jsonl_lines(records: Sequence[EvalRecord], images_dir: os.PathLike) -> List[dict]:
    """Convert records into the ``reclip eval jsonl`` line format (image paths relative).

    Records with a loading error are left out (the converter reports how many).
    """
    base = Path(images_dir).expanduser()
    lines = []
    for r in records:
        if r.error or r.gold is None:
            continue
        try:
            image = str(Path(r.image_path).relative_to(base))
        except ValueError:
            image = r.image_path
        line = {'id': r.id, 'image': image, 'expression': r.expression,
                'box': r.gold.to_list(), 'split': r.split, 'category': r.category}
        if r.proposals is not None:
            line['proposals'] = [b.to_list() for b in r.proposals]
        lines.append(line)
    return lines


def reclip_datum_to_jsonl_lines(datum: dict) -> List[dict]:
    """Convert one line of the ReCLIP authors' preprocessed jsonl into our line format.

    Their lines hold ``file_name``, ``image_id``, ``anns`` (``[{id, bbox}]``), ``ann_id``
    (one id or a list) and ``sentences`` (``[{raw, ...}]``); for COCO file names the
    trailing ``_<ann>`` part is dropped (as their code does). Proposals are all ``anns``.

    Raises:
        KeyError / TypeError / ValueError: on a malformed datum.
    """
    file_name = str(datum['file_name'])
    if 'coco' in file_name.lower():
        file_name = '_'.join(file_name.split('_')[:-1]) + '.jpg'
    gold_ids = datum['ann_id'] if isinstance(datum['ann_id'], list) else [datum['ann_id']]
    anns = datum['anns']
    gold = [a['bbox'] for a in anns if a['id'] in gold_ids]
    if not gold:
        raise ValueError(f'ann_id {gold_ids} not among anns')
    out = []
    for i, sent in enumerate(datum['sentences']):
        line = {'id': f'{datum.get("image_id", "")}:{gold_ids[0]}:{sent.get("sent_id", i)}',
                'image': file_name, 'expression': str(sent['raw']).lower(),
                'box': list(gold[0]), 'proposals': [list(a['bbox']) for a in anns]}
        if len(gold) > 1:  # the authors' code counts a match with any gold box as correct
            line['boxes'] = [list(b) for b in gold[1:]]
        out.append(line)
    return out
