"""The ``reclip eval jsonl`` format: one referring expression per line.

Each line is a JSON object::

    {"image": "rel/path.jpg",            # required, relative to --images-dir (or absolute)
     "expression": "the red mug",        # required
     "box": [x, y, w, h],                # required, gold box in pixels
     "boxes": [[x, y, w, h], ...],       # optional, further gold boxes (any one is correct)
     "proposals": [[x, y, w, h], ...],   # optional candidate boxes
     "id": "any string",                 # optional, default "line<N>" (1-based line number)
     "category": "mug",                  # optional, for per-category accuracy
     "split": "val"}                     # optional, for per-split accuracy

Records without ``proposals`` use the detector when one is given, otherwise the gold boxes
of all records of the same image. Blank lines and lines starting with ``#`` are ignored.
A malformed line becomes a failed record (reason ``bad_record``, ``bad_box`` or
``bad_proposals``); it never stops the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional, Tuple

from reclip_ros.core.types import Box
from reclip_ros.evaluation.engine import (
    BAD_BOX, BAD_PROPOSALS, BAD_RECORD, EvalDataError, EvalRecord)


def _parse_line(obj: object, line_no: int, images_dir: Path, used_ids: set) -> EvalRecord:
    if not isinstance(obj, dict):
        return EvalRecord(id=f'line{line_no}', image_path='', image_key='', expression='',
                          gold=None, error=BAD_RECORD,
                          detail=f'line {line_no}: expected a JSON object')
    rid = str(obj['id']) if obj.get('id') not in (None, '') else f'line{line_no}'
    if rid in used_ids:  # keep every line: make duplicate ids unique
        rid = f'{rid}#line{line_no}'
    used_ids.add(rid)
    image = obj.get('image')
    image_path = ''
    if isinstance(image, str) and image:
        image_path = str(images_dir / image) if not os.path.isabs(image) else image
    expression = obj.get('expression')
    split = str(obj.get('split') or '')
    category = str(obj.get('category') or '')
    common = dict(id=rid, image_path=image_path, image_key=image_path,
                  expression=expression if isinstance(expression, str) else '',
                  split=split, category=category)
    if not image_path:
        return EvalRecord(gold=None, error=BAD_RECORD,
                          detail=f'line {line_no}: "image" (a file path) is required', **common)
    if not isinstance(expression, str) or not expression.strip():
        return EvalRecord(gold=None, error=BAD_RECORD,
                          detail=f'line {line_no}: "expression" (a string) is required',
                          **common)
    try:
        gold = Box.from_list(obj.get('box'))
        extra = tuple(Box.from_list(b) for b in obj.get('boxes') or ())
    except (ValueError, TypeError) as exc:
        return EvalRecord(gold=None, error=BAD_BOX,
                          detail=f'line {line_no}: "box"/"boxes": {exc}', **common)
    common['extra_golds'] = tuple(b for b in extra if b != gold)
    proposals: Optional[Tuple[Box, ...]] = None
    if obj.get('proposals') is not None:
        try:
            proposals = tuple(Box.from_list(p) for p in obj['proposals'])
        except (ValueError, TypeError) as exc:
            return EvalRecord(gold=gold, error=BAD_PROPOSALS,
                              detail=f'line {line_no}: "proposals": {exc}', **common)
    return EvalRecord(gold=gold, proposals=proposals, **common)


def load_jsonl(path: os.PathLike, images_dir: os.PathLike) -> List[EvalRecord]:
    """Read a jsonl evaluation file into records (malformed lines become failed records).

    Raises:
        EvalDataError: when the file cannot be read or holds no record.
    """
    path = Path(path).expanduser()
    base = Path(images_dir).expanduser()
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDataError(f'cannot read {path}: {exc}') from exc
    records: List[EvalRecord] = []
    used_ids: set = set()
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            rid = f'line{line_no}'
            used_ids.add(rid)
            records.append(EvalRecord(id=rid, image_path='', image_key='', expression='',
                                      gold=None, error=BAD_RECORD,
                                      detail=f'line {line_no}: invalid JSON ({exc})'))
            continue
        records.append(_parse_line(obj, line_no, base, used_ids))
    if not records:
        raise EvalDataError(f'{path} holds no records (one JSON object per line expected)')
    return records


def write_jsonl(lines: List[dict], path: os.PathLike) -> Path:
    """Write dicts as one JSON object per line; return the path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + '\n')
    return path
