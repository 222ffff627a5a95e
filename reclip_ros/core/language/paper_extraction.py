"""Entity extraction of the ``paper`` relation mode: the authors' public code's decisions.

The rules, as docs/language.md section 5 states them (the authors' code's decisions, checked
against that code's own output: ``test/data/reclip_reference.json``, rebuilt by
``scripts/make_reclip_reference.py``), written here from that description:

- the expression is lower-cased and parsed by spaCy; keywords match a token's **text**
  exactly (never its lemma), from the paper's table (:mod:`reclip_ros.core.relation_kinds`);
- the head is the token that is its own dependency head; if it is in no noun chunk, its
  first child is used when that child is in one, else there is no entity; with no entity
  and some noun chunk, the same is tried from the syntactic head of the first chunk's root;
- the walk goes **down** the dependency tree from the head token, carrying a path:
  reaching a token of another chunk that is not a relation or null keyword makes a
  relation (to the entity extracted from that token); a leaf ends the walk, and the path
  plus the leaf makes a superlative when it holds a superlative keyword; children in the
  same chunk are skipped unless they are superlative keywords, and when such a token has
  exactly one child the path plus the token is checked for a superlative ("the goat on the
  left"); a token joins the path when it is outside every chunk or is a keyword;
- a relation whose path meets no binary row of the table (the first row that meets it
  wins) is possessive: the entity's text becomes its chunk expanded along the dependency
  path to the other chunk (ancestors up to the root and the other chunk's subtrees), in
  sentence order, joined by single spaces; the last such relation wins and the other
  entity is not executed;
- the entity's text is otherwise its noun chunk's text.

The result is the same :class:`~reclip_ros.core.language.expression_tree.Entity` tree the extended
parser builds, with relation and superlative kinds named by registry rows, so the one
resolver executes both modes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from reclip_ros.core.language.expression_tree import (Entity, ParsedExpression, Relation,
                                                      Superlative)
from reclip_ros.core.relation_kinds import (PAPER, PAPER_NULL_WORDS, first_kind,
                                            relation_words, superlative_words)

_RELATIONS = relation_words(PAPER)
_SUPERLATIVES = superlative_words(PAPER)
_RELATION_WORDS = frozenset(w for words in _RELATIONS.values() for w in words)
_SUPERLATIVE_WORDS = frozenset(w for words in _SUPERLATIVES.values() for w in words)


@dataclass
class _Raw:
    """An entity as the walk finds it: its chunk, relations (path, entity) and superlatives."""

    chunk: object
    relations: List[Tuple[List[int], _Raw]] = field(default_factory=list)
    superlatives: List[List[int]] = field(default_factory=list)


class _Walker:
    def __init__(self, doc):
        self.doc = doc
        self.chunk_of: Dict[int, object] = {}
        for chunk in doc.noun_chunks:
            for i in range(chunk.start, chunk.end):
                self.chunk_of[i] = chunk

    def _same_chunk(self, a: int, b: int) -> bool:
        ca, cb = self.chunk_of.get(a), self.chunk_of.get(b)
        return ca is not None and cb is not None and ca.start == cb.start

    @staticmethod
    def _superlative(tokens) -> List[List[int]]:
        if any(t.text in _SUPERLATIVE_WORDS for t in tokens):
            return [sorted(t.i for t in tokens)]
        return []

    def extract(self, head) -> Optional[_Raw]:
        if head.i not in self.chunk_of:
            children = list(head.children)
            if not children or children[0].i not in self.chunk_of:
                return None
            head = children[0]
        entity = _Raw(self.chunk_of[head.i])
        rels, sups = self._walk(head, head, [])
        entity.relations, entity.superlatives = rels, sups
        return entity

    def _walk(self, token, head, path) -> Tuple[list, list]:
        keyword = token.text in _RELATION_WORDS or token.text in PAPER_NULL_WORDS
        if token.i in self.chunk_of and not self._same_chunk(token.i, head.i) and not keyword:
            return [(sorted(t.i for t in path), self.extract(token))], []
        children = list(token.children)
        if not children:
            return [], self._superlative(path + [token])
        keyword = keyword or token.text in _SUPERLATIVE_WORDS
        relations: list = []
        superlatives: list = []
        for child in children:
            if self._same_chunk(token.i, child.i) and child.text not in _SUPERLATIVE_WORDS:
                if len(children) == 1:
                    superlatives.extend(self._superlative(path + [token]))
                continue
            joins = token.i not in self.chunk_of or keyword
            rels, sups = self._walk(child, head, path + [token] if joins else path)
            relations.extend(rels)
            superlatives.extend(sups)
        return relations, superlatives


def _expand(doc, chunk, other) -> str:
    """The chunk's text expanded along the dependency path to the *other* chunk."""
    tokens: Set[int] = set(range(chunk.start, chunk.end))
    own = [doc[i] for i in range(chunk.start, chunk.end)]
    for target in other:
        if not any(target.i == t.i or t.is_ancestor(target) for t in own):
            continue
        ancestor = target
        while ancestor.head.i != ancestor.i:
            ancestor = ancestor.head
            tokens.add(ancestor.i)
        tokens.update(t.i for t in target.subtree)
    return ' '.join(doc[i].text for i in sorted(tokens))


def _to_entity(doc, raw: _Raw) -> Entity:
    chunk_text = raw.chunk.text
    text = chunk_text
    relations = []
    for path, child in raw.relations:
        words = [doc[i].text for i in path]
        kind = first_kind(_RELATIONS, words)
        if kind is None:
            text = _expand(doc, raw.chunk, child.chunk)  # possessive: the last one wins
            continue
        relations.append(Relation(kind, ' '.join(words), (_to_entity(doc, child),)))
    superlatives = []
    for tokens in raw.superlatives:
        words = [doc[i].text for i in tokens]
        kind = first_kind(_SUPERLATIVES, words)
        if kind is not None:
            superlatives.append(Superlative(kind, ' '.join(words)))
    return Entity(text=text, chunk=chunk_text, relations=tuple(relations),
                  superlatives=tuple(superlatives))


def parse_paper(nlp, expression: str) -> ParsedExpression:
    """Parse *expression* (whitespace normalised) as the public ReCLIP code does."""
    text = expression.lower()
    doc = nlp(text)
    walker = _Walker(doc)
    head = next((t for t in doc if t.head.i == t.i), None)
    raw = walker.extract(head) if head is not None else None
    chunks = list(doc.noun_chunks)
    if raw is None and chunks:
        raw = walker.extract(chunks[0].root.head)
    keywords = tuple(t.text for t in doc
                     if t.text in _RELATION_WORDS or t.text in _SUPERLATIVE_WORDS)
    if raw is None:
        root = Entity(text=text, chunk=text)
    else:
        root = _to_entity(doc, raw)
    return ParsedExpression(expression=expression, text=text, command='',
                            has_keywords=raw is not None and bool(keywords), root=root,
                            keywords=keywords, mode=PAPER)
