"""Nouns that spaCy reads as function words, and how the parse gets them back.

The noun "can" ("the green can", "the third can from the left", "pick up the red can") is
tagged as a modal verb by the small English pipeline whenever an adjective precedes it, and
the parse then loses the noun: "the green can" becomes the entity "the green", "the small
can next to the duck" becomes "the duck". Such a word is read as a noun when a determiner
opens its phrase (with only adjectives, nouns and numbers between) and no verb, pronoun or
negation follows it ("can you see", "the robot can pick"). The text is then parsed again
with a plain noun in its place (:data:`STAND_IN`, one token, so every token keeps its
index), and the original word is kept in ``doc.user_data`` for every text the parse builds
(:func:`token_text`): the scored text still says "can".
"""

from __future__ import annotations

from typing import Dict

#: Words spaCy may read as function words where they are nouns.
MISREAD_NOUNS = frozenset({'can'})
#: The noun parsed in their place (one token; never in a scored text).
STAND_IN = 'cup'
#: ``doc.user_data`` key: token index -> the word the text had there.
ORIGINAL_WORDS = 'reclip_original_words'

_DETERMINER_TAGS = frozenset({'DT', 'PDT', 'PRP$', 'WP$'})
_NOUN_PHRASE_TAGS = frozenset({'JJ', 'JJR', 'JJS', 'NN', 'NNS', 'NNP', 'NNPS', 'CD', 'HYPH',
                               'RB', 'RBS', 'RBR', ','})
_NOT_A_VERB_AFTER = frozenset({'please'})


def misread_noun_indices(doc) -> Dict[int, str]:
    """Token index -> word, for each word of :data:`MISREAD_NOUNS` used as a noun in *doc*."""
    found: Dict[int, str] = {}
    for tok in doc:
        if tok.lower_ not in MISREAD_NOUNS or tok.tag_ != 'MD':
            continue
        after = doc[tok.i + 1] if tok.i + 1 < len(doc) else None
        if after is not None and after.lower_ not in _NOT_A_VERB_AFTER and (
                after.tag_.startswith('VB') or after.tag_ == 'PRP'
                or after.lower_ in ('not', "n't")):
            continue
        j = tok.i - 1
        while j >= 0 and doc[j].tag_ in _NOUN_PHRASE_TAGS:
            j -= 1
        if j >= 0 and doc[j].tag_ in _DETERMINER_TAGS:
            found[tok.i] = tok.text
    return found


def parse_reading_nouns(nlp, text: str):
    """``nlp(text)``, parsed again with :data:`STAND_IN` for each misread noun.

    The returned doc's :func:`token_text` gives the original words. When the text has no
    misread noun (or the stand-in would change the tokens) it is the plain parse.
    """
    doc = nlp(text)
    found = misread_noun_indices(doc)
    if not found:
        return doc
    pieces = []
    last = 0
    for i in sorted(found):
        tok = doc[i]
        pieces.append(text[last:tok.idx])
        pieces.append(STAND_IN)
        last = tok.idx + len(tok.text)
    pieces.append(text[last:])
    reparsed = nlp(''.join(pieces))
    if len(reparsed) != len(doc) or any(reparsed[i].text != STAND_IN for i in found):
        return doc
    reparsed.user_data[ORIGINAL_WORDS] = dict(found)
    return reparsed


def token_text(tok) -> str:
    """The token's text with its trailing space, as the original text had it."""
    original = tok.doc.user_data.get(ORIGINAL_WORDS)
    if original and tok.i in original:
        return original[tok.i] + tok.whitespace_
    return tok.text_with_ws


def doc_text(doc) -> str:
    """The whole text of *doc* as the original text had it."""
    return ''.join(token_text(t) for t in doc).strip()
