"""The entity tree of a parsed referring expression (plain, frozen data).

:class:`reclip_ros.core.language.parsing.ExpressionParser` builds it, in either relation mode;
:mod:`reclip_ros.core.resolver` executes it over boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from reclip_ros.core.relation_kinds import DEFAULT_RELATION_MODE

@dataclass(frozen=True)
class Superlative:
    """A superlative on an entity, e.g. ``left`` for "the goat on the left".

    ``reference`` matters only for ``middle``: 'candidates' (the middle of the entity's
    candidates) or 'image' (the middle of the image, when the path names the image).
    """

    kind: str
    words: str
    reference: str = 'candidates'

    def to_dict(self) -> dict:
        """Return the superlative as plain data."""
        return {'kind': self.kind, 'words': self.words, 'reference': self.reference}


@dataclass(frozen=True)
class Ordinal:
    """An ordinal: the ``rank``-th (1-based) candidate in the order ``kind`` (e.g. 'left').

    "the second cup from the left" -> rank 2, kind 'left'; without a direction the order is
    left to right. "last" means the first from the other end: "the last cup" is rank 1 in
    the order 'right'; "the last cup on the left" is rank 1 in the order 'left'.
    """

    rank: int
    kind: str
    words: str

    def to_dict(self) -> dict:
        """Return the ordinal as plain data."""
        return {'rank': self.rank, 'kind': self.kind, 'words': self.words}


@dataclass(frozen=True)
class Relation:
    """A relation from the owning entity to child entities, e.g. ``left`` to "the laptop".

    ``children`` has one entity, or for ``between`` one or two ("between the plates" uses the
    one child's distribution twice).
    """

    kind: str
    words: str
    children: Tuple[Entity, ...]

    def to_dict(self) -> dict:
        """Return the relation as plain data (children recursively)."""
        return {'kind': self.kind, 'words': self.words,
                'children': [c.to_dict() for c in self.children]}


@dataclass(frozen=True)
class Entity:
    """One predicate of the expression with its relations, superlatives and ordinal.

    ``text`` is what is scored (the noun chunk, expanded by keyword-less relations);
    ``chunk`` is the noun chunk alone.
    """

    text: str
    chunk: str
    relations: Tuple[Relation, ...] = ()
    superlatives: Tuple[Superlative, ...] = ()
    ordinal: Optional[Ordinal] = None

    def to_dict(self) -> dict:
        """Return the entity as plain data (relations recursively)."""
        return {'text': self.text, 'chunk': self.chunk,
                'relations': [r.to_dict() for r in self.relations],
                'superlatives': [s.to_dict() for s in self.superlatives],
                'ordinal': self.ordinal.to_dict() if self.ordinal else None}

    def describe_lines(self, indent: int = 0) -> List[str]:
        """Return a readable, indented description of the entity subtree."""
        pad = '  ' * indent
        head = f'{pad}entity "{self.text}"'
        if self.chunk != self.text:
            head += f' (noun chunk "{self.chunk}")'
        lines = [head]
        for rel in self.relations:
            lines.append(f'{pad}  relation {rel.kind} [{rel.words}] to:')
            for child in rel.children:
                lines.extend(child.describe_lines(indent + 2))
        if self.ordinal is not None:
            o = self.ordinal
            lines.append(f'{pad}  ordinal {o.rank} in order {o.kind} [{o.words}]')
        for sup in self.superlatives:
            ref = f' of the {sup.reference}' if sup.kind == 'middle' else ''
            lines.append(f'{pad}  superlative {sup.kind}{ref} [{sup.words}]')
        return lines


@dataclass(frozen=True)
class ParsedExpression:
    """The result of :meth:`ExpressionParser.parse`.

    Attributes:
        expression: the input, whitespace normalised.
        text: what the resolver scores as a whole (the full-expression term): the
            expression as received, lower-cased, or, for a reduced robot command, its
            referring part (without the verb, particles, "me", "please", a vocative...).
        command: the command verb that was removed ('' when the input was not reduced).
        has_keywords: True when the parse is used (some token is a relation, superlative
            or ordinal keyword and, in paper mode, an entity was found); otherwise the
            resolver uses plain region scoring of ``text``.
        root: the head entity and its tree.
        keywords: the keyword tokens found.
        mode: the relation mode the expression was parsed in ('paper' or 'extended').
        names_an_object: False when no word of ``text`` can name or place an object (no
            noun, pronoun "one", number, adjective, relation or superlative word: "please",
            "pick up", "could you"); the grounder answers INVALID_COMMAND. Always True in
            paper mode, whose code scores any text.
    """

    expression: str
    text: str
    command: str
    has_keywords: bool
    root: Entity
    keywords: Tuple[str, ...] = field(default_factory=tuple)
    mode: str = DEFAULT_RELATION_MODE
    names_an_object: bool = True

    def describe(self) -> str:
        """Return a multi-line, human-readable description of the parse."""
        lines = [f'expression: "{self.expression}" (relations: {self.mode})']
        if self.command:
            lines.append(f'command: {self.command} -> referring expression: "{self.text}"')
        if not self.has_keywords:
            why = ('no relation/superlative keywords' if not self.keywords
                   else 'no head entity')
            lines.append(f'{why}: plain region scoring of the text')
            return '\n'.join(lines)
        lines.append('keywords: ' + ', '.join(self.keywords))
        lines.extend(self.root.describe_lines())
        return '\n'.join(lines)

    def to_dict(self) -> dict:
        """Return the parse as plain (JSON-ready) data."""
        return {'expression': self.expression, 'text': self.text, 'command': self.command,
                'has_keywords': self.has_keywords, 'keywords': list(self.keywords),
                'root': self.root.to_dict(), 'mode': self.mode}
