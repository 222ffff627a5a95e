"""Robot commands: the referring expression inside a command.

"pick up the red mug left of the laptop" -> "the red mug left of the laptop"; a spoken
request ("i want the red apple") the same way.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Tuple

from reclip_ros.core.language.extraction import join_tokens
from reclip_ros.core.language.misread_nouns import doc_text

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
OBJECT_DEPS = ('dobj', 'obj', 'oprd')
_KEEP_AFTER_OBJECT = frozenset({'advmod', 'prep', 'acl', 'advcl', 'amod', 'npadvmod', 'relcl',
                                'appos', 'nmod', 'prt'})
_PRONOUN_OBJECTS = frozenset({'me', 'us', 'you', 'him', 'her', 'them', 'it'})


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
            if child.dep_ in OBJECT_DEPS and child.lower_ not in _PRONOUN_OBJECTS:
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


def reduce_command(doc) -> Tuple[str, str]:
    """Return (referring expression, command verb) for a command, else (text, '')."""
    found = _find_command(doc)
    if found is None:
        return doc_text(doc), ''
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
                and doc[child.i - 1].lower_ not in OBSERVER_RELATION_WORDS):
            continue
        pobj = next((g for g in child.children if g.dep_ == 'pobj'), None)
        after_keyword = child.i > 0 and doc[child.i - 1].lower_ in OBSERVER_RELATION_WORDS
        if pobj is not None and pobj.lower_ in _PRONOUN_OBJECTS and not after_keyword:
            continue
        keep.update(t.i for t in child.subtree)
    if not placement and how == 'dobj' and any(doc[i].lower_ in SIDE_WORDS
                                                for i in range(obj.i + 1, len(doc))):
        # "pick up the cup right of the duck": spaCy often hangs the relation on the verb;
        # for a non-placement verb everything after the object still describes it.
        keep.update(range(min(keep), len(doc)))
    keep = {i for i in keep if not doc[i].is_punct or 0 < i < max(keep)}
    keep = {i for i in keep if doc[i].lower_ not in ('please',)}
    text = join_tokens(doc, sorted(keep)).strip(' ,.!?;:')
    if not text:
        return doc_text(doc), ''
    particles = [c.text for c in verb.children if c.dep_ == 'prt']
    return text, ' '.join([verb.text] + particles)


SIDE_WORDS = frozenset({'left', 'right'})
#: Words after which "to you" / "from me" is a relation to the observer, not a destination.
OBSERVER_RELATION_WORDS = frozenset({'closest', 'nearest', 'closer', 'nearer', 'close', 'next',
                                      'furthest', 'farthest', 'further', 'farther'})
