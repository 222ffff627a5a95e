"""The relation vocabulary: one registry row per relation kind, for both relation modes.

ReCLIP resolves spatial words by rules over boxes. Two modes exist side by side:

- ``paper``: the authors' public code exactly (the keyword table of the paper, exact token
  text matching, behind/back = above, front = below, closer = bigger, further = smaller,
  no "between", no ordinals, no "near" or "middle");
- ``extended`` (the default): this project's semantics (depth-aware closer/farther/front/
  behind, near/far, between, middle, ordinals, lemmatised and multi-word keywords).

Each :class:`RelationKind` row holds, per mode, the words that name it as a binary relation
("left of"), the words that name it as a superlative ("leftmost"), and the box relation it
means (a kind of :func:`reclip_ros.core.relations.relation_matrix`, or ``between`` /
``middle``). A row without words for a mode does not exist in that mode. The row order is
the matching order: when a path holds keywords of several kinds, the first row wins, as in
the paper's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Tuple

from reclip_ros.core.config import (DEFAULT_RELATION_MODE, EXTENDED, PAPER,  # noqa: F401
                                    RELATION_MODES, check_mode)


@dataclass(frozen=True)
class ModeWords:
    """What a relation kind is in one mode: its words and the box relation it means."""

    relation: Tuple[str, ...] = ()
    superlative: Tuple[str, ...] = ()
    box: str = ''


@dataclass(frozen=True)
class RelationKind:
    """One relation kind with its words and box relation in each mode (None: absent)."""

    name: str
    paper: Optional[ModeWords]
    extended: Optional[ModeWords]

    def in_mode(self, mode: str) -> Optional[ModeWords]:
        """The kind's words in *mode*, or None when the kind does not exist there."""
        return self.paper if check_mode(mode) == PAPER else self.extended

    @property
    def modes(self) -> Tuple[str, ...]:
        """The modes this kind belongs to."""
        return tuple(m for m in RELATION_MODES if self.in_mode(m) is not None)


def _w(relation=(), superlative=(), box='') -> ModeWords:
    return ModeWords(tuple(relation), tuple(superlative), box)


#: The registry. Paper words are the paper's table (section 2 of the method note); the
#: extended words add synonyms, and move behind/back, front, closer and further to
#: depth-aware kinds of their own (with the paper's proxies when there is no depth).
REGISTRY: Tuple[RelationKind, ...] = (
    RelationKind(
        'left',
        paper=_w(('left', 'west'), ('left', 'west', 'leftmost', 'western'), 'left'),
        extended=_w(('left', 'west'), ('left', 'west', 'leftmost', 'western'), 'left')),
    RelationKind(
        'right',
        paper=_w(('right', 'east'), ('right', 'rightmost', 'east', 'eastern'), 'right'),
        extended=_w(('right', 'east'), ('right', 'rightmost', 'east', 'eastern'), 'right')),
    RelationKind(
        'above',
        paper=_w(('above', 'north', 'top', 'back', 'behind'), ('above', 'north', 'top'),
                 'above'),
        extended=_w(('above', 'north', 'top', 'over', 'atop', 'upper', 'higher'),
                    ('above', 'north', 'top', 'topmost', 'uppermost', 'upper', 'highest',
                     'higher'), 'above')),
    RelationKind(
        'below',
        paper=_w(('below', 'south', 'under', 'front'),
                 ('below', 'south', 'underneath', 'front'), 'below'),
        extended=_w(('below', 'south', 'under', 'beneath', 'underneath', 'bottom', 'lower'),
                    ('below', 'south', 'underneath', 'bottom', 'bottommost', 'lowest',
                     'lower'), 'below')),
    RelationKind(
        'bigger',
        paper=_w(('bigger', 'larger', 'closer'),
                 ('bigger', 'biggest', 'larger', 'largest', 'closer', 'closest'), 'bigger'),
        extended=_w(('bigger', 'larger'),
                    ('bigger', 'biggest', 'larger', 'largest', 'big', 'large', 'huge',
                     'giant', 'enormous'), 'bigger_3d')),
    RelationKind(
        'smaller',
        paper=_w(('smaller', 'tinier', 'further'),
                 ('smaller', 'smallest', 'tinier', 'tiniest', 'further', 'furthest'),
                 'smaller'),
        extended=_w(('smaller', 'tinier'),
                    ('smaller', 'smallest', 'tinier', 'tiniest', 'small', 'little', 'tiny',
                     'mini'), 'smaller_3d')),
    # The paper's inside is area(i & j) / area(i) with 1 on the diagonal ('within'); the
    # extended one never relates a box to itself ('inside', 0 on the diagonal).
    RelationKind(
        'inside',
        paper=_w(('inside', 'within', 'contained'), (), 'within'),
        extended=_w(('inside', 'within', 'contained'), (), 'inside')),
    RelationKind(
        'closer', paper=None,
        extended=_w(('closer', 'nearer'), ('closer', 'closest', 'nearer', 'nearest'),
                    'closer')),
    RelationKind(
        'farther', paper=None,
        extended=_w(('further', 'farther'), ('further', 'furthest', 'farther', 'farthest'),
                    'farther')),
    RelationKind(
        'front', paper=None, extended=_w(('front',), ('front', 'foreground'), 'front')),
    RelationKind(
        'behind', paper=None,
        extended=_w(('behind', 'back', 'rear'), ('behind', 'back', 'rear', 'background'),
                    'behind')),
    # The paper's code has "between" but its default leaves it off (never applied).
    RelationKind(
        'between', paper=None, extended=_w(('between', 'amid', 'amidst'), (), 'between')),
    RelationKind(
        'near', paper=None,
        extended=_w(('near', 'nearby', 'beside', 'besides', 'next', 'adjacent', 'alongside'),
                    (), 'near')),
    RelationKind('far', paper=None, extended=_w(('far', 'away'), (), 'far')),
    RelationKind(
        'middle', paper=None,
        extended=_w((), ('middle', 'center', 'centre', 'central', 'centered', 'centred',
                         'midst'), 'middle')),
)

#: Multi-word keywords (extended mode only), matched on lower-cased token text:
#: words -> (relation kind, superlative kind). Every token of a match gets these kinds
#: (None = no superlative; "nearer to X" is a relation to X, never "the nearest").
PHRASE_KEYWORDS: Dict[Tuple[str, ...], Tuple[Optional[str], Optional[str]]] = {
    ('to', 'the', 'left', 'of'): ('left', 'left'),
    ('to', 'the', 'right', 'of'): ('right', 'right'),
    ('in', 'front', 'of'): ('front', 'front'),
    ('in', 'front'): ('front', 'front'),
    ('on', 'top', 'of'): ('above', 'above'),
    ('on', 'top'): ('above', 'above'),
    ('in', 'back', 'of'): ('behind', 'behind'),
    ('far', 'away', 'from'): ('far', None),
    ('far', 'from'): ('far', None),
    ('away', 'from'): ('far', None),
    ('further', 'from'): ('far', None),
    ('farther', 'from'): ('far', None),
    ('furthest', 'from'): ('far', None),
    ('farthest', 'from'): ('far', None),
    ('next', 'to'): ('near', None),
    ('close', 'to'): ('near', None),
    ('closer', 'to'): ('near', None),
    ('closest', 'to'): ('near', None),
    ('near', 'to'): ('near', None),
    ('nearer', 'to'): ('near', None),
    ('nearest', 'to'): ('near', None),
    ('in', 'between'): ('between', None),
}

#: Ordinal words (extended mode only) -> rank (1 = first); "last" is -1.
ORDINAL_WORDS: Dict[str, int] = {
    'first': 1, 'second': 2, 'third': 3, 'fourth': 4, 'fifth': 5, 'sixth': 6,
    'seventh': 7, 'eighth': 8, 'ninth': 9, 'tenth': 10, 'last': -1,
}

#: Head nouns of chunks that are not entities ("the left side"): the paper's list, and in
#: extended mode also photo/frame/scene.
PAPER_NULL_WORDS: FrozenSet[str] = frozenset(
    {'part', 'image', 'side', 'picture', 'half', 'region', 'section'})
EXTENDED_NULL_WORDS: FrozenSet[str] = PAPER_NULL_WORDS | {'photo', 'frame', 'scene'}


def _words(mode: str, which: str) -> Dict[str, Tuple[str, ...]]:
    out = {}
    for kind in REGISTRY:
        words = kind.in_mode(mode)
        if words is not None and getattr(words, which):
            out[kind.name] = getattr(words, which)
    return out


def relation_words(mode: str) -> Dict[str, Tuple[str, ...]]:
    """Kind -> binary-relation words in *mode*, in matching order (kinds with words only)."""
    return _words(mode, 'relation')


def superlative_words(mode: str) -> Dict[str, Tuple[str, ...]]:
    """Kind -> superlative words in *mode*, in matching order (kinds with words only)."""
    return _words(mode, 'superlative')


def box_relation(kind: str, mode: str) -> str:
    """The box relation that relation kind *kind* means in *mode*.

    Raises:
        ValueError: when *kind* does not exist in *mode*.
    """
    for row in REGISTRY:
        if row.name == kind:
            words = row.in_mode(mode)
            if words is not None:
                return words.box
    raise ValueError(f'relation kind {kind!r} does not exist in the {mode!r} mode')


def first_kind(table: Dict[str, Tuple[str, ...]], words) -> Optional[str]:
    """The first kind of *table* (in its order) whose words meet *words*, or None."""
    present = set(words)
    for kind, keywords in table.items():
        if present.intersection(keywords):
            return kind
    return None
