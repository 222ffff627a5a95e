"""Simulation expressions: every expression is checked by an independent interpreter."""

import re

import numpy as np
import pytest


from reclip_ros.sim.catalog import CATALOG, COLOURS, SIZES
from reclip_ros.sim.expressions import (CATEGORIES, COMMAND_VERBS,
                                        VOICE_PHENOMENA, generate_expressions,
                                        voice_rendering)
from reclip_ros.sim.world import TabletopScene

NOUNS = {k.name: k.name for k in CATALOG}
NOUNS.update({s: k.name for k in CATALOG for s in k.synonyms})


def _desc(words):
    """'[size] [colour] noun' -> predicate over objects."""
    words = words.split()
    assert words[0] == 'the', words
    words = words[1:]
    size = words.pop(0) if words and words[0] in SIZES else None
    colour = words.pop(0) if words and words[0] in COLOURS else None
    noun = ' '.join(words)
    kind = None if noun == 'object' else NOUNS[noun]
    return lambda o: ((size is None or o.size == size) and (colour is None or o.colour == colour)
                      and (kind is None or o.name == kind))


def _select(objects, pred):
    return [i for i, o in enumerate(objects) if pred(o)]


def _cx(o):
    return o.box.center[0]


def unvoice(text):
    """The written expression inside a spoken rendering (this test's own reading)."""
    words = [w for w in text.split() if w not in ('um', 'uh', 'like', 'please')]
    words = [w for i, w in enumerate(words) if i == 0 or w != words[i - 1]]  # "the the"
    text = ' '.join(words)
    text = re.sub(r'^(?:(?:hey|ok|okay) )?robot ', '', text)
    text = re.sub(r'^(?:could|can|would) you ', '', text)
    text = re.sub(r'^(?:find|show me|get|point at) (?=the )', '', text)
    return text


def interpret(text, objects):
    """Return the set of object indices the text can refer to (strict, no margins)."""
    text = unvoice(text)
    for verb in COMMAND_VERBS:
        if text.startswith(verb + ' '):
            text = text[len(verb) + 1:]
    m = re.fullmatch(r'the (leftmost|rightmost|closest|furthest|biggest|smallest) (.+)', text)
    if m:
        word, members = m.group(1), _select(objects, _desc('the ' + m.group(2)))
        key = {'leftmost': lambda o: -_cx(o), 'rightmost': _cx,
               'closest': lambda o: -o.center[2], 'furthest': lambda o: o.center[2],
               'biggest': lambda o: (o.size == 'big', o.box.area),
               'smallest': lambda o: (o.size == 'small', -o.box.area)}[word]
        best = max(key(objects[i]) for i in members)
        return {i for i in members if key(objects[i]) == best}
    m = re.fullmatch(r'the (second|third) (.+) from the (left|right)', text)
    if m:
        rank = {'second': 2, 'third': 3}[m.group(1)]
        members = sorted(_select(objects, _desc('the ' + m.group(2))),
                         key=lambda i: _cx(objects[i]), reverse=m.group(3) == 'right')
        return {members[rank - 1]}
    m = re.fullmatch(r'(the .+?) between (the .+?) and (the .+)', text)
    if m:
        (a,), (b,) = _select(objects, _desc(m.group(2))), _select(objects, _desc(m.group(3)))
        lo, hi = sorted((_cx(objects[a]), _cx(objects[b])))
        return {i for i in _select(objects, _desc(m.group(1)))
                if i not in (a, b) and lo < _cx(objects[i]) < hi}
    m = re.fullmatch(r'(the .+?) (to the left of|left of|to the right of|right of|behind|'
                     r'in front of|next to) (the .+)', text)
    if m:
        refs = _select(objects, _desc(m.group(3)))
        assert len(refs) == 1, f'reference of {text!r} is ambiguous'
        r = objects[refs[0]]
        members = [i for i in _select(objects, _desc(m.group(1))) if i != refs[0]]
        rel = m.group(2)
        if rel == 'next to':
            dist = {i: np.hypot(*np.subtract(objects[i].box.center, r.box.center))
                    for i in members}
            return {min(dist, key=dist.get)}
        test = {'to the left of': lambda o: _cx(o) < _cx(r), 'left of': lambda o: _cx(o) < _cx(r),
                'to the right of': lambda o: _cx(o) > _cx(r),
                'right of': lambda o: _cx(o) > _cx(r),
                'behind': lambda o: o.center[2] > r.center[2],
                'in front of': lambda o: o.center[2] < r.center[2]}[rel]
        return {i for i in members if test(objects[i])}
    return set(_select(objects, _desc(text)))


@pytest.fixture(scope='module')
def scenes():
    out = []
    for seed in range(12):
        with TabletopScene(seed) as scene:
            out.append((seed, scene.render().objects))
    return out


def test_every_expression_is_unambiguous(scenes):
    checked = 0
    for seed, objects in scenes:
        for expr in generate_expressions(objects, np.random.default_rng(seed),
                                         max_per_category=0):
            assert expr.category in CATEGORIES
            assert interpret(expr.text, objects) == {expr.target_index}, (seed, expr)
            checked += 1
    assert checked > 100


def test_all_categories_occur(scenes):
    seen = set()
    for seed, objects in scenes:
        seen.update(e.category for e in generate_expressions(objects,
                                                             np.random.default_rng(seed)))
    assert seen == set(CATEGORIES)


def test_generation_is_reproducible_and_capped(scenes):
    seed, objects = scenes[2]
    a = generate_expressions(objects, np.random.default_rng(5), max_per_category=1)
    b = generate_expressions(objects, np.random.default_rng(5), max_per_category=1)
    assert a == b
    for category in CATEGORIES:
        assert sum(e.category == category for e in a) <= 1


def test_relational_heads_are_ambiguous_alone(scenes):
    # relations are only written when the head description alone names several objects
    for seed, objects in scenes:
        for expr in generate_expressions(objects, np.random.default_rng(seed),
                                         max_per_category=0):
            if expr.category in ('spatial', 'between'):
                head = re.split(r' (?:to the |left|right|behind|in front|between)', expr.text)[0]
                assert len(interpret(head, objects)) >= 2, expr


def test_no_objects_no_expressions():
    assert generate_expressions([], np.random.default_rng(0)) == []


def test_voice_renderings_are_spoken_forms_of_written_expressions(scenes):
    seen = set()
    for seed, objects in scenes:
        for expr in generate_expressions(objects, np.random.default_rng(seed),
                                         max_per_category=0):
            if expr.category != 'voice':
                continue
            # what a recogniser writes: lowercase words, no punctuation, no digits
            assert re.fullmatch(r'[a-z]+( [a-z]+)*', expr.text), expr.text
            phenomena = expr.template.split(':')[1].split('+')
            assert 2 <= len(phenomena) <= 3 and set(phenomena) <= set(VOICE_PHENOMENA)
            seen.update(phenomena)
            assert expr.template.split(':')[2] in CATEGORIES
    assert seen == set(VOICE_PHENOMENA)


@pytest.mark.parametrize('phenomenon, pattern', [
    ('filler', r'\b(um|uh|like)\b'),
    ('politeness', r'^(could you|can you|would you|please)\b|\bplease$'),
    ('vocative', r'^(hey |ok |okay )?robot\b'),
    ('repetition', r'\b(\w+) \1\b'),
])
def test_each_voice_phenomenon_is_rendered(phenomenon, pattern):
    for k in range(20):
        rng = np.random.default_rng(k)
        text = voice_rendering('pick up the cube left of the duck', rng, True, [phenomenon])
        assert re.search(pattern, text), text
        assert unvoice(text) == 'pick up the cube left of the duck', text


def test_voice_spells_numbers_out():
    text = voice_rendering('the 2nd cube from the left', np.random.default_rng(0), False,
                           ['repetition'])
    assert '2nd' not in text and 'second' in text
