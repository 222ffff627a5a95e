"""Spoken input and wording: what is dropped or rewritten before the parse.

Vocatives, fillers ("um", "uh", "please", "like" as a filler), repeated words, and relation
wordings normalised to one form ("left of" -> "to the left of").
"""

from __future__ import annotations

import re

from reclip_ros.core.language.commands import COMMAND_VERBS

#: A leading vocative ("robot, ...", "hey robot: ...") is dropped before parsing.
VOCATIVE = re.compile(r'^(?:(?:hey|hi|ok|okay)\s*,?\s+)?robot\s*[,:!]?\s+', re.IGNORECASE)
#: Spoken fillers and "please", dropped anywhere ("um the red one please").
FILLERS = re.compile(r'\b(?:um+|uh+|uhm+|erm*|hmm+|ah+|please)\b\s*,?\s*', re.IGNORECASE)
#: "like" is a filler before these words ("grab like the red cup") ...
_LIKE_BEFORE = frozenset({'the', 'a', 'an', 'this', 'that', 'these', 'those', 'my', 'your',
                          'one', 'some'})
#: ... when it follows one of these (or starts the utterance, or follows a command verb);
#: after "would", "i", "looks", "something" or a noun it keeps its meaning.
_LIKE_AFTER = frozenset({'robot', 'up', 'down', 'me', 'us', 'and', 'so', 'just', 'well', 'okay',
                         'ok', 'yeah', 'oh', 'at', 'to', 'for', 'towards', 'toward', 'on',
                         'of', 'from', 'between', 'near', 'behind', 'then', 'you'})
#: A word said twice in a row ("pick up the the red cup").
REPEATED_WORD = re.compile(r'\b(\w+)(?:\s+\1\b)+', re.IGNORECASE)
_BARE_SIDE_OF = re.compile(r'(?<!\bthe )(?<!\bto )\b(left|right)\s+of\b', re.IGNORECASE)


def drop_like_fillers(text: str) -> str:
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


def canonical_relation_wording(text: str) -> str:
    """Rewrite "X left of Y" as "X to the left of Y" for the dependency parse.

    The small spaCy model often parses a bare "right of" as a noun that swallows the head
    noun ("the green block right" as one chunk), losing the head entity, and a command
    ("pick up the cup right of the duck") then loses the relation; the longer wording
    parses reliably and means the same.
    """
    return _BARE_SIDE_OF.sub(lambda m: f'to the {m.group(1)} of', text)
