"""Entity extraction: from a spaCy parse to the entity tree.

Keyword labels on the tokens first, then the entity tree from the dependency parse (the
paper's rules and this project's additions; see :mod:`.parsing`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from reclip_ros.core.language.expression_tree import Entity, Ordinal, Relation, Superlative
from reclip_ros.core.language.misread_nouns import token_text
from reclip_ros.core.relation_kinds import (EXTENDED, EXTENDED_NULL_WORDS, ORDINAL_WORDS,
                                            PHRASE_KEYWORDS, relation_words, superlative_words)

# --- keyword tables (extended mode; every word is defined in relation_kinds) -----------------
#: Relation keywords: kind -> words (matched on the lower-cased token text, then on the lemma).
RELATION_KEYWORDS: Dict[str, Tuple[str, ...]] = relation_words(EXTENDED)
#: Superlative keywords: kind -> words.
SUPERLATIVE_KEYWORDS: Dict[str, Tuple[str, ...]] = superlative_words(EXTENDED)
_NUMERIC_ORDINAL = re.compile(r'^(\d{1,3})(st|nd|rd|th)$')

#: Chunks headed by these nouns are not entities (the paper's list plus photo/frame/scene).
NON_ENTITY_NOUNS = EXTENDED_NULL_WORDS
#: Chunks headed by these words mean the camera/robot/speaker, which is not in the image:
#: a relation to them becomes a superlative ("the cup closest to the camera" = the closest cup).
OBSERVER_WORDS = frozenset({'camera', 'viewer', 'robot', 'me', 'us', 'you', 'photographer',
                            'observer', 'i', 'we'})
#: Relation kind to the superlative it means when the other object is the observer.
_OBSERVER_SUPERLATIVE = {'near': 'closer', 'closer': 'closer', 'front': 'closer',
                         'far': 'farther', 'farther': 'farther', 'behind': 'farther',
                         'left': 'left', 'right': 'right', 'above': 'above', 'below': 'below'}
#: Words on a superlative path that make "middle" mean the middle of the image.
_IMAGE_WORDS = frozenset({'image', 'picture', 'photo', 'frame', 'scene', 'view'})

# --- keyword labelling ----------------------------------------------------------------------
@dataclass
class _Labels:
    relation: List[Optional[str]]
    superlative: List[Optional[str]]
    ordinal: List[Optional[int]]
    #: token index -> indices of the multi-word keyword it belongs to (absent: single word)
    phrase: Dict[int, Tuple[int, ...]] = field(default_factory=dict)

    def expand(self, indices) -> Set[int]:
        """The indices plus every token of the multi-word keywords they belong to."""
        out: Set[int] = set()
        for i in indices:
            out.update(self.phrase.get(i, (i,)))
        return out

    def any(self, i: int) -> bool:
        return (self.relation[i] is not None or self.superlative[i] is not None
                or self.ordinal[i] is not None)


def _lookup(table: Dict[str, Tuple[str, ...]], words: Sequence[str]) -> Optional[str]:
    """First kind of *table* holding the first of *words* that any kind holds."""
    for word in words:
        for kind, keywords in table.items():
            if word in keywords:
                return kind
    return None


def _ordinal_rank(word: str) -> Optional[int]:
    if word in ORDINAL_WORDS:
        return ORDINAL_WORDS[word]
    m = _NUMERIC_ORDINAL.match(word)
    if m and int(m.group(1)) > 0:
        return int(m.group(1))
    return None


def label_tokens(doc) -> _Labels:
    """Give every token its relation / superlative kind and ordinal rank (or None)."""
    n = len(doc)
    labels = _Labels([None] * n, [None] * n, [None] * n)
    lowers = [t.lower_ for t in doc]
    for t in doc:
        # Surface form first (so "left" the verb stays 'left', "closer" stays depth), lemma next.
        forms = [t.lower_, t.lemma_.lower()]
        labels.relation[t.i] = _lookup(RELATION_KEYWORDS, forms)
        labels.superlative[t.i] = _lookup(SUPERLATIVE_KEYWORDS, forms)
        labels.ordinal[t.i] = _ordinal_rank(t.lower_)
    taken = [False] * n
    for phrase in sorted(PHRASE_KEYWORDS, key=len, reverse=True):
        rel, sup = PHRASE_KEYWORDS[phrase]
        k = len(phrase)
        for start in range(0, n - k + 1):
            if tuple(lowers[start:start + k]) == phrase and not any(taken[start:start + k]):
                members = tuple(range(start, start + k))
                for i in members:
                    labels.phrase[i] = members
                    taken[i] = True
                    labels.relation[i] = rel
                    labels.superlative[i] = sup
    return labels


# --- entity extraction ----------------------------------------------------------------------
def join_tokens(doc, indices: Sequence[int]) -> str:
    """The text of the tokens at *indices* of *doc*, in order, with their own spacing.

    Words parsed with a stand-in (:mod:`.misread_nouns`) read as the original text had them.
    """
    out = []
    prev = None
    for i in sorted(set(indices)):
        if prev is not None and i != prev + 1 and out and not out[-1].endswith(' '):
            out.append(' ')
        out.append(token_text(doc[i]))
        prev = i
    return ''.join(out).strip()


def _path_words(doc, path: Sequence[int]) -> str:
    """The words of a dependency path, as the contiguous text they span."""
    if not path:
        return ''
    return join_tokens(doc, range(min(path), max(path) + 1))


@dataclass
class _Builder:
    """Mutable state while one entity is extracted."""

    tokens: Set[int]
    chunk: str
    chunk_tokens: frozenset = frozenset()
    relations: List[Relation] = field(default_factory=list)
    superlatives: List[Superlative] = field(default_factory=list)
    ordinals: List[Tuple[int, str, int]] = field(default_factory=list)
    conjuncts: List[_Extracted] = field(default_factory=list)
    outer: List[Superlative] = field(default_factory=list)


@dataclass
class _Extracted:
    entity: Entity
    conjuncts: List[_Extracted]
    tokens: Set[int]
    #: Superlatives whose words lie outside the noun chunk ("on the left"), which a
    #: keyword-less parent hoists (prepositional attachment is ambiguous).
    outer_superlatives: Tuple[Superlative, ...] = ()


class TreeExtractor:
    """Walks one parsed doc and builds the entity tree."""

    def __init__(self, doc, labels: _Labels, hidden: frozenset = frozenset()):
        self.doc = doc
        self.labels = labels
        #: token indices added for the parse only (a determiner before a noun-first
        #: expression), never part of a scored text
        self.hidden = hidden
        self.chunk_of: Dict[int, object] = {}
        self.entity_chunks = []
        for chunk in doc.noun_chunks:
            if self._is_entity_chunk(chunk):
                self.entity_chunks.append(chunk)
                for t in chunk:
                    self.chunk_of[t.i] = chunk
        self.visited: Set[int] = set()
        self.claimed: Set[int] = set()
        self.used_keywords: Set[int] = set()

    def _is_entity_chunk(self, chunk) -> bool:
        root = chunk.root
        if self.labels.any(root.i):
            return False
        words = {root.lower_, root.lemma_.lower()}
        return not (words & NON_ENTITY_NOUNS)

    def _join(self, indices) -> str:
        return join_tokens(self.doc, [i for i in indices if i not in self.hidden])

    def _path(self, path: Sequence[int]) -> str:
        return self._join(range(min(path), max(path) + 1)) if path else ''

    def head_chunk(self):
        """The head entity's chunk per the paper's rule, or None when there is no entity."""
        if not self.entity_chunks:
            return None
        root = next((t for t in self.doc if t.dep_ == 'ROOT'), self.doc[0])
        if root.i in self.chunk_of:
            return self.chunk_of[root.i]
        for child in root.children:
            if child.i in self.chunk_of:
                return self.chunk_of[child.i]
        first = self.entity_chunks[0]
        parent = first.root.head
        return self.chunk_of.get(parent.i, first)

    def extract_root(self) -> Entity:
        """Extract the whole tree; without any entity chunk the whole text is the entity."""
        chunk = self.head_chunk()
        if chunk is None:
            root = next((t for t in self.doc if t.dep_ == 'ROOT'), self.doc[0])
            text = self._join(range(len(self.doc)))
            builder = _Builder(tokens=set(range(len(self.doc))), chunk=text)
            rank = self.labels.ordinal[root.i]
            if rank is not None:  # "second from the right": the ordinal is the root itself
                self.used_keywords.add(root.i)
                builder.ordinals.append((rank, root.text, root.i))
            return self._extract_from(root, builder).entity
        return self.extract(chunk).entity

    def extract(self, chunk) -> _Extracted:
        """Extract the entity headed by *chunk* and everything reachable from it."""
        self.claimed.add(chunk.start)
        builder = _Builder(tokens=set(range(chunk.start, chunk.end)),
                           chunk=self._join(range(chunk.start, chunk.end)),
                           chunk_tokens=frozenset(range(chunk.start, chunk.end)))
        return self._extract_from(chunk.root, builder, chunk)

    def _extract_from(self, start, builder: _Builder, chunk=None) -> _Extracted:
        self.visited.add(start.i)
        ends: List[Tuple[List[int], Optional[object]]] = []
        for n in self._neighbours(start):
            self._walk(n, [], ends, chunk, start)
        # Relations first: their keywords are consumed and cannot also be superlatives.
        for path, other in ends:
            if other is not None:
                self._add_relation(builder, path, other)
        self._complete_between(builder)
        for path, other in ends:
            if other is None:
                self._add_leaf(builder, path)
        return self._finish(builder)

    @staticmethod
    def _complete_between(builder: _Builder) -> None:
        """Give a one-child "between" the entity's own conjunct as its second child.

        spaCy often attaches "and the Y" of "the cup between the X and the Y" to "cup".
        """
        for k, rel in enumerate(builder.relations):
            if rel.kind == 'between' and len(rel.children) == 1 and builder.conjuncts:
                second = builder.conjuncts.pop(0)
                builder.relations[k] = Relation(rel.kind, rel.words,
                                                rel.children + (second.entity,))

    def _neighbours(self, tok) -> List:
        out = list(tok.children)
        if tok.head.i != tok.i:
            out.append(tok.head)
        return [t for t in out if t.i not in self.visited]

    def _walk(self, tok, path: List[int], ends, own_chunk, origin) -> None:
        if tok.i in self.visited:
            return
        other = self.chunk_of.get(tok.i)
        if other is not None and other is not own_chunk:
            if other.start in self.claimed:
                return
            self.claimed.add(other.start)
            # Reached another entity: the path (possibly empty) labels the relation.
            is_conjunct = not path and tok.dep_ == 'conj' and tok.head.i == origin.i
            ends.append((list(path), ('conj', other) if is_conjunct else other))
            return
        self.visited.add(tok.i)
        new_path = path + [tok.i]
        nexts = self._neighbours(tok)
        if not nexts:
            ends.append((new_path, None))
            return
        for n in nexts:
            self._walk(n, new_path, ends, own_chunk, origin)

    def _relation_kind(self, path: Sequence[int]) -> Optional[str]:
        kinds = {self.labels.relation[i] for i in path} - {None}
        for kind in RELATION_KEYWORDS:
            if kind in kinds:
                return kind
        return None

    def _add_relation(self, builder: _Builder, path: List[int], other) -> None:
        if isinstance(other, tuple):          # ('conj', chunk): a conjunct of this entity
            extracted = self.extract(other[1])
            builder.conjuncts.append(extracted)
            return
        kind = self._relation_kind(path)
        root_word = other.root.lower_
        if kind is not None and root_word in OBSERVER_WORDS:
            self.visited.update(range(other.start, other.end))
            sup = _OBSERVER_SUPERLATIVE.get(kind)
            if sup is not None:
                self.used_keywords.update(self.labels.expand(path))
                builder.superlatives.append(Superlative(
                    sup, self._join(path + list(range(other.start, other.end)))))
            return
        extracted = self.extract(other)
        if kind is None:
            # Keyword-less relation: score "head + path + other" as one predicate; the other
            # entity's relations are kept (prepositional attachment is ambiguous).
            span = set(path) | extracted.tokens
            builder.tokens.update(range(min(span), max(span) + 1))
            builder.relations.extend(extracted.entity.relations)
            builder.superlatives.extend(extracted.outer_superlatives)
            return
        keyword_tokens = self.labels.expand(path)
        self.used_keywords.update(keyword_tokens)
        children = [extracted] + extracted.conjuncts
        words = self._path(sorted(set(path) | keyword_tokens))
        if kind == 'between':
            builder.relations.append(
                Relation(kind, words, tuple(c.entity for c in children[:2])))
        else:
            for child in children:
                builder.relations.append(Relation(kind, words, (child.entity,)))

    def _add_leaf(self, builder: _Builder, path: List[int]) -> None:
        fresh = [i for i in path if i not in self.used_keywords]
        for i in fresh:
            rank = self.labels.ordinal[i]
            if rank is not None:
                self.used_keywords.add(i)
                builder.ordinals.append((rank, self.doc[i].text, i))
        sup_tokens = [i for i in fresh if self.labels.superlative[i] is not None
                      and self.labels.ordinal[i] is None]
        if not sup_tokens:
            return
        kinds = {self.labels.superlative[i] for i in sup_tokens}
        kind = next(k for k in SUPERLATIVE_KEYWORDS if k in kinds)
        used = [i for i in sup_tokens if self.labels.superlative[i] == kind]
        self.used_keywords.update(self.labels.expand(used))
        words = self._join([i for i in path if i not in builder.tokens
                                        and (i in used or i not in self.used_keywords)] or used)
        reference = 'candidates'
        if kind == 'middle' and any(t.lower_ in _IMAGE_WORDS
                                    for i in used for t in self.doc[i].subtree):
            reference = 'image'
        sup = Superlative(kind, words, reference)
        builder.superlatives.append(sup)
        if not set(path) <= builder.chunk_tokens:
            builder.outer.append(sup)

    def _finish(self, builder: _Builder) -> _Extracted:
        superlatives = list(builder.superlatives)
        ordinal = None
        if builder.ordinals:
            rank, word, _ = builder.ordinals[0]
            if superlatives:
                direction = superlatives.pop(0)
                kind, words = direction.kind, f'{word} ... {direction.words}'
                if rank == -1:
                    rank = 1
            else:
                kind, words = 'left', word
                if rank == -1:
                    rank, kind = 1, 'right'
            ordinal = Ordinal(rank, kind, words)
        # The ordinal word is a rule, not something CLIP can see: "the second cup" is scored
        # as "the cup".
        ordinal_tokens = {i for _, _, i in builder.ordinals}
        text = self._join(sorted(builder.tokens - ordinal_tokens)
                            or sorted(builder.tokens))
        entity = Entity(text=text, chunk=builder.chunk, relations=tuple(builder.relations),
                        superlatives=tuple(superlatives), ordinal=ordinal)
        outer = tuple(s for s in builder.outer if s in superlatives)
        return _Extracted(entity=entity, conjuncts=builder.conjuncts,
                          tokens=set(builder.tokens), outer_superlatives=outer)
