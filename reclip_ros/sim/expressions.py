"""Referring expressions with ground truth for simulated scenes, kept only when unambiguous.

:func:`generate_expressions` looks at the ground truth of a scene (kind, colour and size
of each object, its 2D box and 3D centre) and writes expressions in seven categories:

- ``attribute``: "the red cube", "the big duck", "the small blue sphere", "the green object"
  (only for objects whose kind alone is ambiguous);
- ``spatial``: "the cube left of the blue sphere", "the duck behind the cylinder",
  "the cone in front of the red teddy";
- ``superlative``: "the leftmost cube", "the closest ball", "the biggest object";
- ``ordinal``: "the second sphere from the right";
- ``between``: "the cube between the duck and the green cone";
- ``command``: "pick up the green cylinder next to the duck", "grab the red cube";
- ``voice``: what a speech recogniser makes of the others (:func:`voice_rendering`):
  lowercase, no punctuation, numbers spelled out ("second", never "2nd"), with fillers
  (um, uh, like), politeness (please, could you, can you), a vocative (hey robot) and a
  repeated word: "um hey robot could you find the the second cube from the left please".

An expression is kept only if its description picks out exactly one object by the ground
truth, with margins so that near-ties are excluded: left/right compare box centres with a
margin of a quarter of the mean box width plus 5 px; in front of / behind / closest /
furthest compare the depth (z) of the 3D centres with a margin of 4 cm; biggest /
smallest need the true size (big vs small) and a box area ratio of at least 1.4;
every other object that matches the head description must clearly fail the relation.
Relational categories are only written when the head description alone ("the cube") is
ambiguous, so that the relation is needed to find the object.

Relations are phrased with keywords the parser (:mod:`reclip_ros.core.language.parsing`) resolves
by rule: left, right, leftmost, rightmost, behind, in front of, closest, furthest,
biggest, smallest, between, next to, and ordinals with "from the left/right".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from reclip_ros.sim.catalog import KINDS

CATEGORIES = ('attribute', 'spatial', 'superlative', 'ordinal', 'between', 'command',
              'voice')
DEPTH_MARGIN_M = 0.04
AREA_RATIO = 1.4
SYNONYM_PROBABILITY = 0.25
COMMAND_VERBS = ('pick up', 'grab', 'fetch', 'take', 'bring me')
ORDINALS = {2: 'second', 3: 'third'}
#: The spoken phenomena of the ``voice`` category (each rendering has two or three).
VOICE_PHENOMENA = ('filler', 'politeness', 'vocative', 'repetition')
VOICE_FILLERS = ('um', 'uh', 'like')
VOICE_VOCATIVES = ('hey robot', 'robot', 'ok robot', 'okay robot')
#: Polite openings; a description (not a command) gets a verb after them.
VOICE_POLITE_OPENINGS = ('could you', 'can you', 'would you', 'please', 'could you please')
VOICE_REQUEST_VERBS = ('find', 'show me', 'get', 'point at')
#: Numbers as a recogniser writes them: spelled out.
_SPELLED = {'1st': 'first', '2nd': 'second', '3rd': 'third', '4th': 'fourth', '5th': 'fifth'}


@dataclass(frozen=True)
class SimExpression:
    """One referring expression and the index of its referent in the scene's objects."""

    text: str
    category: str
    target_index: int
    template: str = ''


@dataclass(frozen=True)
class _Desc:
    """A description: the attributes it names (None = not named) and its words."""

    colour: Optional[str]
    size: Optional[str]
    name: Optional[str]  # None = 'object'

    def matches(self, obj) -> bool:
        return ((self.colour is None or obj.colour == self.colour)
                and (self.size is None or obj.size == self.size)
                and (self.name is None or obj.name == self.name))

    def words(self, noun: Optional[str] = None) -> str:
        parts = [w for w in (self.size, self.colour) if w]
        parts.append(noun or self.name or 'object')
        return 'the ' + ' '.join(parts)


def _descriptions(obj) -> List[_Desc]:
    """Descriptions of *obj* from the shortest to the longest."""
    return [_Desc(None, None, obj.name), _Desc(obj.colour, None, obj.name),
            _Desc(None, obj.size, obj.name), _Desc(obj.colour, obj.size, obj.name),
            _Desc(obj.colour, None, None), _Desc(None, obj.size, None)]


def _matching(desc: _Desc, objects: Sequence) -> List[int]:
    return [i for i, o in enumerate(objects) if desc.matches(o)]


def _unique_description(index: int, objects: Sequence, with_noun: bool = True
                        ) -> Optional[_Desc]:
    """The shortest description that matches only object *index*."""
    for desc in _descriptions(objects[index]):
        if with_noun and desc.name is None:
            continue
        if _matching(desc, objects) == [index]:
            return desc
    return None


class _Phraser:
    """Turns descriptions into words, sometimes with a synonym of the noun."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self, desc: _Desc) -> str:
        noun = desc.name
        if noun is not None:
            synonyms = KINDS[noun].synonyms if noun in KINDS else ()
            if synonyms and self.rng.random() < SYNONYM_PROBABILITY:
                noun = synonyms[int(self.rng.integers(len(synonyms)))]
        return desc.words(noun)


def _cx(obj) -> float:
    return obj.box.center[0]


def _x_margin(a, b) -> float:
    return 0.25 * (a.box.width + b.box.width) / 2.0 + 5.0


def _left_of(a, b) -> bool:
    """Return True when a is clearly left of b (box centres)."""
    return _cx(a) + _x_margin(a, b) < _cx(b)


def _behind(a, b) -> bool:
    """Return True when a is clearly further from the camera than b (3D centre depth)."""
    return a.center[2] > b.center[2] + DEPTH_MARGIN_M


# relation phrase -> (holds(target, reference), clearly fails(other, reference))
_RELATIONS: Dict[str, tuple] = {
    'left of': (_left_of, lambda o, r: _left_of(r, o)),
    'to the left of': (_left_of, lambda o, r: _left_of(r, o)),
    'right of': (lambda t, r: _left_of(r, t), _left_of),
    'to the right of': (lambda t, r: _left_of(r, t), _left_of),
    'behind': (_behind, lambda o, r: _behind(r, o)),
    'in front of': (lambda t, r: _behind(r, t), _behind),
}


def _head_descriptions(objects: Sequence, index: int) -> List[_Desc]:
    """Ambiguous head descriptions of object *index* (noun, or colour + noun)."""
    obj = objects[index]
    out = []
    for desc in (_Desc(None, None, obj.name), _Desc(obj.colour, None, obj.name)):
        if len(_matching(desc, objects)) >= 2:
            out.append(desc)
    return out


def _attribute(objects, phrase) -> List[SimExpression]:
    out = []
    for i, obj in enumerate(objects):
        if len(_matching(_Desc(None, None, obj.name), objects)) < 2:
            continue  # the noun alone would do: no attribute needed
        for desc in _descriptions(obj)[1:]:
            if _matching(desc, objects) == [i]:
                out.append(SimExpression(phrase(desc), 'attribute', i, 'attribute'))
                break
    return out


def _spatial(objects, phrase) -> List[_Candidate]:
    out = []
    for t, r in itertools.permutations(range(len(objects)), 2):
        ref_desc = _unique_description(r, objects)
        if ref_desc is None:
            continue
        for head in _head_descriptions(objects, t):
            others = [j for j in _matching(head, objects) if j not in (t, r)]
            if t == r or not head.matches(objects[t]):
                continue
            for rel, (holds, fails) in _RELATIONS.items():
                if not holds(objects[t], objects[r]):
                    continue
                if all(fails(objects[j], objects[r]) for j in others):
                    text = f'{phrase(head)} {rel} {phrase(ref_desc)}'
                    out.append(_Candidate(text, t, f'spatial:{rel}', head, ref_desc))
    return out


@dataclass(frozen=True)
class _Candidate:
    text: str
    target: int
    template: str
    head: Optional[_Desc] = None
    reference: Optional[_Desc] = None


def _extreme(objects, members: List[int], key: Callable, margin: Callable) -> Optional[int]:
    """Index of the member with the largest key, if it beats the runner-up by the margin."""
    ranked = sorted(members, key=lambda i: key(objects[i]), reverse=True)
    if len(ranked) < 2:
        return None
    best, second = ranked[0], ranked[1]
    if key(objects[best]) - key(objects[second]) > margin(objects[best], objects[second]):
        return best
    return None


def _superlative(objects, phrase) -> List[_Candidate]:
    out = []
    heads = {}
    for i in range(len(objects)):
        for head in _head_descriptions(objects, i):
            heads[head] = _matching(head, objects)
    heads[_Desc(None, None, None)] = list(range(len(objects)))
    for head, members in heads.items():
        if len(members) < 2:
            continue
        forms = {
            'leftmost': (lambda o: -_cx(o), _x_margin),
            'rightmost': (_cx, _x_margin),
            'closest': (lambda o: -o.center[2], lambda a, b: DEPTH_MARGIN_M),
            'furthest': (lambda o: o.center[2], lambda a, b: DEPTH_MARGIN_M),
        }
        for word, (key, margin) in forms.items():
            best = _extreme(objects, members, key, margin)
            if best is not None:
                out.append(_Candidate(f'the {word} {phrase(head)[4:]}', best,
                                      f'superlative:{word}', head))
        for word in ('biggest', 'smallest'):
            want = 'big' if word == 'biggest' else 'small'
            hits = [i for i in members if objects[i].size == want]
            if len(hits) != 1:
                continue
            best = hits[0]
            areas = [objects[j].box.area for j in members if j != best]
            area = objects[best].box.area
            if word == 'biggest' and area >= AREA_RATIO * max(areas) or (
                    word == 'smallest' and AREA_RATIO * area <= min(areas)):
                out.append(_Candidate(f'the {word} {phrase(head)[4:]}', best,
                                      f'superlative:{word}', head))
    return out


def _ordinal(objects, phrase) -> List[_Candidate]:
    out = []
    seen = set()
    for i in range(len(objects)):
        for head in _head_descriptions(objects, i):
            members = _matching(head, objects)
            if head in seen or len(members) < 3:
                continue
            seen.add(head)
            ranked = sorted(members, key=lambda j: _cx(objects[j]))
            gaps_ok = all(_left_of(objects[a], objects[b]) for a, b in zip(ranked, ranked[1:]))
            if not gaps_ok:
                continue
            for rank, word in ORDINALS.items():
                if rank > len(ranked):
                    continue
                out.append(_Candidate(f'the {word} {phrase(head)[4:]} from the left',
                                      ranked[rank - 1], 'ordinal:left', head))
                out.append(_Candidate(f'the {word} {phrase(head)[4:]} from the right',
                                      ranked[-rank], 'ordinal:right', head))
    return out


def _between(objects, phrase) -> List[_Candidate]:
    out = []
    n = len(objects)
    for a, b in itertools.combinations(range(n), 2):
        da, db = _unique_description(a, objects), _unique_description(b, objects)
        if da is None or db is None:
            continue
        pa = np.asarray(objects[a].box.center)
        pb = np.asarray(objects[b].box.center)
        seg = pb - pa
        length = float(np.linalg.norm(seg))
        if length < 1e-6:
            continue
        lo_x, hi_x = sorted((pa[0], pb[0]))
        for t in range(n):
            if t in (a, b):
                continue
            pt = np.asarray(objects[t].box.center)
            s = float(np.dot(pt - pa, seg) / length ** 2)
            perp = abs(float(seg[0] * (pt - pa)[1] - seg[1] * (pt - pa)[0])) / length
            margin = _x_margin(objects[a], objects[b])
            if not (0.2 <= s <= 0.8 and perp <= 0.3 * length
                    and lo_x + margin < pt[0] < hi_x - margin):
                continue
            for head in _head_descriptions(objects, t):
                others = [j for j in _matching(head, objects) if j not in (t, a, b)]
                if all(objects[j].box.center[0] < lo_x - margin
                       or objects[j].box.center[0] > hi_x + margin for j in others):
                    text = f'{phrase(head)} between {phrase(da)} and {phrase(db)}'
                    out.append(_Candidate(text, t, 'between', head))
    return out


def _next_to(objects, phrase) -> List[_Candidate]:
    """'the X next to the Y': X is by far the closest member of its head to Y (image)."""
    out = []
    for t, r in itertools.permutations(range(len(objects)), 2):
        ref_desc = _unique_description(r, objects)
        if ref_desc is None:
            continue
        pr = np.asarray(objects[r].box.center)
        scale = max(objects[r].box.width, objects[t].box.width)
        for head in _head_descriptions(objects, t):
            if head.matches(objects[r]):
                continue
            members = [j for j in _matching(head, objects) if j != r]
            dist = {j: float(np.linalg.norm(np.asarray(objects[j].box.center) - pr))
                    for j in members}
            others = [d for j, d in dist.items() if j != t]
            if dist[t] <= 2.5 * scale and all(dist[t] * 2.0 <= d for d in others):
                out.append(_Candidate(f'{phrase(head)} next to {phrase(ref_desc)}', t,
                                      'spatial:next to', head))
    return out


def generate_expressions(objects: Sequence, rng: np.random.Generator,
                         max_per_category: int = 2) -> List[SimExpression]:
    """Write unambiguous referring expressions for the objects of one scene.

    Args:
        objects: the scene's ground truth (:class:`reclip_ros.sim.world.SimObject` or
            anything with ``name``, ``colour``, ``size``, ``box`` and ``center``).
        rng: numpy random generator (which candidates are kept, synonyms, verbs).
        max_per_category: at most this many expressions per category (0 = all).

    Returns:
        A list of :class:`SimExpression`; ``target_index`` indexes *objects*.
    """
    objects = list(objects)
    if not objects:
        return []
    phrase = _Phraser(rng)
    pools: Dict[str, list] = {
        'attribute': [_Candidate(e.text, e.target_index, e.template)
                      for e in _attribute(objects, phrase)],
        'spatial': _spatial(objects, phrase),
        'superlative': _superlative(objects, phrase),
        'ordinal': _ordinal(objects, phrase),
        'between': _between(objects, phrase),
    }
    next_to = _next_to(objects, phrase)
    # commands wrap a unique description: an attribute, a superlative or a relation
    sources = pools['attribute'] + pools['superlative'] + pools['spatial'] + next_to
    command_pool = []
    for cand in sources:
        verb = COMMAND_VERBS[int(rng.integers(len(COMMAND_VERBS)))]
        command_pool.append(_Candidate(f'{verb} {cand.text}', cand.target,
                                       f'command:{cand.template}'))
    pools['command'] = command_pool
    out: List[SimExpression] = []
    for category in CATEGORIES:
        if category == 'voice':
            # Made after every written category, so that adding the spoken category left
            # the written expressions of every seed unchanged.
            pools['voice'] = _voice(pools, rng)
        pool = _dedupe(pools[category])
        if max_per_category and len(pool) > max_per_category:
            # prefer distinct targets, then random
            order = rng.permutation(len(pool))
            chosen, targets = [], set()
            for k in order:
                if pool[k].target not in targets:
                    chosen.append(pool[k])
                    targets.add(pool[k].target)
                if len(chosen) == max_per_category:
                    break
            for k in order:
                if len(chosen) == max_per_category:
                    break
                if pool[k] not in chosen:
                    chosen.append(pool[k])
            pool = chosen
        out.extend(SimExpression(c.text, category, c.target, c.template) for c in pool)
    return out


def voice_rendering(text: str, rng: np.random.Generator, is_command: bool,
                    phenomena: Sequence[str]) -> str:
    """*text* as a speech recogniser would write it, with the given spoken *phenomena*.

    Always lowercase, without punctuation, numbers spelled out. ``filler``: "um"/"uh"
    anywhere, or "like" at the start or after the verb; ``politeness``: "please" at either
    end, or "could you"/"can you"/"would you" before the command (a description gets a
    request verb: "can you find the red cube"); ``vocative``: "hey robot" first;
    ``repetition``: one word said twice in a row.
    """
    words = [_SPELLED.get(w, w) for w in text.lower().replace(',', ' ').split()]
    if 'politeness' in phenomena:
        opening = VOICE_POLITE_OPENINGS[int(rng.integers(len(VOICE_POLITE_OPENINGS)))]
        if opening == 'please' and rng.random() < 0.5:
            words = words + ['please']
        else:
            if not is_command:
                verb = VOICE_REQUEST_VERBS[int(rng.integers(len(VOICE_REQUEST_VERBS)))]
                words = verb.split() + words
                is_command = True
            words = opening.split() + words
    if 'repetition' in phenomena:
        k = int(rng.integers(len(words)))
        words = words[:k + 1] + words[k:]
    if 'filler' in phenomena:
        filler = VOICE_FILLERS[int(rng.integers(len(VOICE_FILLERS)))]
        if filler == 'like':
            # "like" is a filler before the object: at the start or right after the verb
            at = 0
            if is_command:
                at = next((i for i, w in enumerate(words) if w in ('the', 'a')), 0)
        else:
            at = int(rng.integers(len(words) + 1))
        words = words[:at] + [filler] + words[at:]
    if 'vocative' in phenomena:
        words = VOICE_VOCATIVES[int(rng.integers(len(VOICE_VOCATIVES)))].split() + words
    return ' '.join(words)


def _voice(pools: Dict[str, list], rng: np.random.Generator) -> List[_Candidate]:
    """Spoken renderings of the other categories' expressions, two or three phenomena each."""
    out = []
    for category in CATEGORIES:
        if category == 'voice':
            continue
        for cand in pools.get(category, ()):
            count = 2 + int(rng.integers(2))
            chosen = sorted(rng.choice(len(VOICE_PHENOMENA), size=count, replace=False))
            phenomena = [VOICE_PHENOMENA[int(k)] for k in chosen]
            text = voice_rendering(cand.text, rng, category == 'command', phenomena)
            out.append(_Candidate(text, cand.target,
                                  f'voice:{"+".join(phenomena)}:{cand.template}'))
    return out


def _dedupe(pool: List[_Candidate]) -> List[_Candidate]:
    seen, out = set(), []
    for cand in pool:
        if cand.text not in seen:
            seen.add(cand.text)
            out.append(cand)
    return out
