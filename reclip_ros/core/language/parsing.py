"""Parse a referring expression into an entity tree (ReCLIP section 2, plus additions).

The parse follows the paper: spaCy noun chunks are the predicates; the head entity is the chunk
holding the dependency root (else the root's first child that is in a chunk, else the chunk of
the syntactic parent of the first chunk's head); walking the dependency tree from the head,
reaching another (non-keyword) noun chunk makes a *relation* to a child entity, labelled by the
keywords on the path; a path that reaches no entity but holds a superlative keyword makes a
*superlative* ("the goat on the left" = the leftmost goat). Paths without a relation keyword
("the man with the red hat") expand the entity's text instead.

Beyond the paper: keywords are matched on the token text and then on its lemma, multi-word
keywords ("next to", "in front of", "on top of", "far from"), more relations (near, far, between,
depth-aware closer/farther/front/behind), ordinals ("the second cup from the left"), references
to the observer ("the cup closest to the camera") and robot commands ("pick up the red mug left
of the laptop" -> "the red mug left of the laptop").

The tree is plain data (frozen dataclasses); :mod:`reclip_ros.core.resolver` executes it.
"""

from __future__ import annotations

import threading

from reclip_ros.core.config import DEFAULT_SPACY_MODEL
from reclip_ros.core.language.expression_tree import (  # noqa: F401 - re-exported
    Entity, Ordinal, ParsedExpression, Relation, Superlative)
from reclip_ros.core.relation_kinds import (DEFAULT_RELATION_MODE, EXTENDED,  # noqa: F401
                                            EXTENDED_NULL_WORDS, ORDINAL_WORDS, PAPER,
                                            PHRASE_KEYWORDS, check_mode, relation_words,
                                            superlative_words)
from reclip_ros.core.language.commands import OBJECT_DEPS, reduce_command
from reclip_ros.core.language.extraction import (RELATION_KEYWORDS,  # noqa: F401 - re-exported
                                                 SUPERLATIVE_KEYWORDS, TreeExtractor,
                                                 label_tokens)
from reclip_ros.core.language.misread_nouns import doc_text, parse_reading_nouns
from reclip_ros.core.language.spacy_pipeline import load_spacy_pipeline  # noqa: F401
from reclip_ros.core.language.spoken import (FILLERS, REPEATED_WORD, VOCATIVE,
                                             canonical_relation_wording, drop_like_fillers)

# One parse at a time per process: each parse runs in a spaCy memory zone, and zones must
# not nest (two threads parsing at once would nest them).
_PARSE_LOCK = threading.Lock()


class ExpressionParser:
    """Parse referring expressions (and robot commands) into entity trees.

    Args:
        spacy_model: the spaCy pipeline to use; loaded once per process and shared.

    Raises:
        ModelLoadError: when the spaCy model is not installed.
    """

    def __init__(self, spacy_model: str = DEFAULT_SPACY_MODEL):
        self.spacy_model = spacy_model
        self.nlp = load_spacy_pipeline(spacy_model)

    def parse(self, expression: str, relations: str = DEFAULT_RELATION_MODE) -> ParsedExpression:
        """Parse *expression* into a :class:`ParsedExpression` in the relation mode *relations*.

        ``paper`` follows the public ReCLIP code
        (:mod:`reclip_ros.core.language.paper_extraction`);
        ``extended`` adds this project's semantics (see the module docstring).

        Raises:
            ValueError: when *expression* is not a string or holds no words, or for an
                unknown relation mode.
        """
        check_mode(relations)
        if not isinstance(expression, str):
            raise ValueError(f'expression must be a string, got {type(expression).__name__}')
        cleaned = ' '.join(expression.split())
        if not any(ch.isalnum() for ch in cleaned):
            raise ValueError('expression is empty (no words)')
        # Every word spaCy has not seen adds a string and a lexeme to its vocabulary, which
        # a long-running node would keep forever (about 0.4 MB per 1000 unique words).
        # The memory zone frees them when the parse ends; the parse result holds only
        # Python strings, never a Doc or a Token.
        with _PARSE_LOCK, self.nlp.memory_zone():
            return self._parse(cleaned, relations)

    def _parse(self, cleaned: str, relations: str) -> ParsedExpression:
        if relations == PAPER:
            from reclip_ros.core.language.paper_extraction import parse_paper
            return parse_paper(self.nlp, cleaned)
        spoken = ' '.join(REPEATED_WORD.sub(r'\1', FILLERS.sub(' ', cleaned)).split())
        spoken = drop_like_fillers(spoken)
        spoken = spoken.strip(' ,') or cleaned
        without_vocative = VOCATIVE.sub('', spoken) or spoken
        first = parse_reading_nouns(self.nlp, without_vocative)
        text, command = reduce_command(first)
        reduced = bool(command) or without_vocative != cleaned
        canonical = canonical_relation_wording(text)
        doc = first if canonical == doc_text(first) else parse_reading_nouns(self.nlp, canonical)
        hidden: frozenset = frozenset()
        if not command and _first_word_misread(doc):
            # A noun-first expression whose first word is also a verb or an adjective
            # ("hand on the left", "light above the table", "present under the tree"):
            # parsed with a determiner before it, which makes the first word the head noun;
            # the determiner is never part of a scored text.
            noun_first = parse_reading_nouns(self.nlp, 'the ' + canonical)
            if _first_word_is_head_noun(noun_first):
                doc, hidden = noun_first, frozenset({0})
        labels = label_tokens(doc)
        keywords = tuple(t.text for t in doc if labels.any(t.i))
        root = TreeExtractor(doc, labels, hidden).extract_root()
        scored = text if reduced else cleaned
        return ParsedExpression(expression=cleaned, text=scored.lower(), command=command,
                                has_keywords=bool(keywords), root=root, keywords=keywords,
                                mode=EXTENDED,
                                names_an_object=_names_an_object(doc, labels, command))


#: Parts of speech of words that can name or describe an object.
_CONTENT_POS = frozenset({'NOUN', 'PROPN', 'NUM', 'ADJ', 'X'})


def _names_an_object(doc, labels, command: str) -> bool:
    """True when some word of the scored text can name or place an object.

    A noun, proper noun, number, adjective or unknown word, or a relation / superlative /
    ordinal word ("lower left", "the second one"); "please", "pick up", "could you", "the"
    have none. The command verb of a reduced command does not count.
    """
    verb = command.split()[0].lower() if command else ''
    for tok in doc:
        if tok.lower_ == verb and tok.pos_ in ('VERB', 'AUX'):
            continue
        if tok.pos_ in _CONTENT_POS or labels.any(tok.i) or tok.lower_ == 'one':
            return True
    return False


def _first_word_misread(doc) -> bool:
    """True when the first word may be a noun that spaCy read as something else.

    It is parsed as a verb with no object, a modal ("can"), an adjective, or a noun outside
    its phrase (an adverbial noun: "light above the table"); it lies outside every noun
    chunk; and it is no relation or superlative word ("left of the box" keeps "left" as its
    relation). An object after a preposition that follows the word ("lock on the door" read
    as "lock ... the door") is the misreading itself, not an object.
    """
    first = doc[0]
    if first.pos_ not in ('VERB', 'AUX', 'ADJ') and not (
            first.pos_ == 'NOUN' and first.dep_ == 'npadvmod'):
        return False
    after_preposition = len(doc) > 1 and doc[1].pos_ == 'ADP' and doc[1].head.i == 0
    if not after_preposition and any(
            c.dep_ in OBJECT_DEPS + ('dative', 'ccomp', 'xcomp') for c in first.children):
        return False
    labels = label_tokens(doc[0:1].as_doc()) if len(doc) else None
    if labels is not None and labels.any(0):
        return False
    return not any(c.start <= 0 < c.end for c in doc.noun_chunks)


def _first_word_is_head_noun(doc) -> bool:
    """True when, after the added determiner, the first word heads the first noun chunk."""
    chunks = list(doc.noun_chunks)
    return bool(chunks) and chunks[0].start == 0 and chunks[0].root.i == 1
