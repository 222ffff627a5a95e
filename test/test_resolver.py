"""SpatialResolver on hand-made boxes with a deterministic word-overlap score_fn.

The score_fn is the injected region scorer: a box's score is the number of its label's words
that occur in the text (plural 's' stripped), a small epsilon otherwise, normalised over boxes.
Expressions are parsed by the real spaCy model.
"""

import numpy as np
import pytest

from reclip_ros.core.language.parsing import Entity, ExpressionParser, ParsedExpression, Relation
from reclip_ros.core.language.parsing import Ordinal, Superlative
from reclip_ros.core.relation_kinds import EXTENDED, PAPER, box_relation, relation_words
from reclip_ros.core.relations import between_tensor, relation_matrix
from reclip_ros.core.resolver import SpatialResolver, normalise
from reclip_ros.core.types import Box


class OverlapScore:
    """score_fn(text): normalised word overlap between the text and each box's label."""

    def __init__(self, labels, eps=0.01):
        self.labels = [label.split() for label in labels]
        self.eps = eps
        self.calls = []

    def __call__(self, text):
        self.calls.append(text)
        words = {w.strip('.,!?').lower() for w in text.split()}
        words |= {w[:-1] for w in words if w.endswith('s')}
        raw = np.array([sum(w in words for w in label) for label in self.labels], dtype=float)
        scores = np.where(raw > 0, raw, self.eps)
        return scores / scores.sum()


@pytest.fixture(scope='module')
def parser():
    return ExpressionParser()


@pytest.fixture()
def resolver():
    return SpatialResolver()


def ground(parser, resolver, text, boxes, labels, **kwargs):
    return resolver.resolve(parser.parse(text), boxes, OverlapScore(labels), **kwargs)


def check_distribution(p, n):
    assert p.shape == (n,)
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    assert p.sum() == pytest.approx(1.0)


# --- plain region scoring --------------------------------------------------------------------
@pytest.mark.parametrize('text', ['a red apple', 'the cup', 'the man with the red hat'])
def test_expression_without_keywords_returns_score_fn_exactly(parser, resolver, text):
    labels = ['red apple', 'cup', 'man hat', 'table']
    boxes = [Box(i * 50, 0, 40, 40) for i in range(4)]
    score = OverlapScore(labels)
    out = resolver.resolve(parser.parse(text), boxes, score)
    np.testing.assert_array_equal(out, score(text))
    assert score.calls == [text, text]       # one call by the resolver, one above


# --- the paper's semantics: superlative versus relation ---------------------------------------
CATS = ['cat', 'cat', 'cat', 'dog']
CAT_BOXES = [Box(100, 50, 30, 30), Box(300, 50, 30, 30), Box(700, 50, 30, 30),
             Box(500, 50, 30, 30)]


def test_on_the_left_is_a_superlative(parser, resolver):
    p = ground(parser, resolver, 'the cat on the left', CAT_BOXES, CATS)
    assert int(np.argmax(p)) == 0
    assert p[0] > p[1] > p[2]
    leftmost = ground(parser, resolver, 'the leftmost cat', CAT_BOXES, CATS)
    assert int(np.argmax(leftmost)) == 0


def test_left_of_the_dog_is_a_relation_not_a_superlative(parser, resolver):
    p = ground(parser, resolver, 'the cat left of the dog', CAT_BOXES, CATS)
    # Both cats left of the dog qualify equally; the cat right of it does not.
    assert p[0] == pytest.approx(p[1], rel=0.05)
    assert p[0] + p[1] > 0.98
    right = ground(parser, resolver, 'the cat right of the dog', CAT_BOXES, CATS)
    assert int(np.argmax(right)) == 2
    assert right[2] > 0.95


def test_goat_on_the_left_ignores_other_objects(parser, resolver):
    labels = ['dog', 'goat', 'goat']
    boxes = [Box(0, 0, 20, 20), Box(100, 0, 20, 20), Box(300, 0, 20, 20)]
    p = ground(parser, resolver, 'the goat on the left', boxes, labels)
    assert int(np.argmax(p)) == 1


# --- every binary relation -------------------------------------------------------------------
# A plate in the centre with one cup on each side of it.
CROSS_LABELS = ['plate', 'cup', 'cup', 'cup', 'cup']
CROSS = [Box(100, 100, 40, 40),      # plate, centre (120, 120)
         Box(40, 110, 20, 20),       # cup left of it
         Box(200, 110, 20, 20),      # cup right of it
         Box(110, 30, 20, 20),       # cup above it
         Box(110, 200, 20, 20)]      # cup below it


@pytest.mark.parametrize('text, expected', [
    ('the cup left of the plate', 1), ('the cup to the left of the plate', 1),
    ('the cup west of the plate', 1),
    ('the cup right of the plate', 2), ('the cup to the right of the plate', 2),
    ('the cup east of the plate', 2),
    ('the cup above the plate', 3), ('the cup over the plate', 3),
    ('the cup on top of the plate', 3), ('the cup north of the plate', 3),
    ('the cup below the plate', 4), ('the cup under the plate', 4),
    ('the cup beneath the plate', 4), ('the cup underneath the plate', 4),
    ('the cup south of the plate', 4),
])
def test_directional_relations(parser, resolver, text, expected):
    p = ground(parser, resolver, text, CROSS, CROSS_LABELS)
    check_distribution(p, 5)
    assert int(np.argmax(p)) == expected
    assert p[expected] > 0.9


SIZES_LABELS = ['dog', 'dog', 'cat']
SIZES = [Box(0, 0, 10, 10), Box(100, 0, 100, 100), Box(300, 0, 50, 50)]


@pytest.mark.parametrize('text, expected', [
    ('the dog bigger than the cat', 1), ('the dog larger than the cat', 1),
    ('the dog smaller than the cat', 0), ('the dog tinier than the cat', 0),
])
def test_size_relations(parser, resolver, text, expected):
    assert int(np.argmax(ground(parser, resolver, text, SIZES, SIZES_LABELS))) == expected


@pytest.mark.parametrize('text', ['the cup inside the box', 'the cup within the box',
                                  'the cup contained in the box'])
def test_inside(parser, resolver, text):
    labels = ['box', 'cup', 'cup']
    boxes = [Box(0, 0, 200, 200), Box(300, 50, 20, 20), Box(50, 50, 20, 20)]
    p = ground(parser, resolver, text, boxes, labels)
    assert int(np.argmax(p)) == 2
    assert p[2] > 0.95


NEAR_LABELS = ['plate', 'cup', 'cup']
NEAR = [Box(100, 100, 40, 40), Box(400, 400, 30, 30), Box(145, 105, 30, 30)]


@pytest.mark.parametrize('text', ['the cup next to the plate', 'the cup near the plate',
                                  'the cup beside the plate', 'the cup close to the plate',
                                  'the cup closest to the plate', 'the cup nearer to the plate',
                                  'the cup adjacent to the plate'])
def test_near(parser, resolver, text):
    p = ground(parser, resolver, text, NEAR, NEAR_LABELS)
    assert int(np.argmax(p)) == 2
    assert p[2] > 0.9


@pytest.mark.parametrize('text', ['the cup far from the plate', 'the cup away from the plate',
                                  'the cup far away from the plate'])
def test_far(parser, resolver, text):
    assert int(np.argmax(ground(parser, resolver, text, NEAR, NEAR_LABELS))) == 1


def test_near_scale_is_configurable(parser):
    parsed = parser.parse('the cup near the plate')
    labels = ['plate', 'cup', 'cup']
    boxes = [Box(0, 0, 10, 10), Box(60, 0, 10, 10), Box(120, 0, 10, 10)]
    tight = SpatialResolver().resolve(parsed, boxes, OverlapScore(labels))
    loose = SpatialResolver(near_scale=20.0).resolve(parsed, boxes, OverlapScore(labels))
    assert tight[1] / tight[2] > loose[1] / loose[2] > 1.0


# --- depth-aware relations versus the paper's proxies -----------------------------------------
# The small cup is low in the image but far away; the big cup is high but close.
DEPTH_LABELS = ['plate', 'cup', 'cup']
DEPTH_BOXES = [Box(100, 100, 40, 40),    # plate, centre y 120, area 1600
               Box(0, 200, 10, 10),      # small cup, low in the image
               Box(200, 0, 80, 80)]      # big cup, high in the image
DEPTHS = np.array([2.0, 5.0, 0.5])       # metres: the big cup is closest, the small one farthest


@pytest.mark.parametrize('text, with_depth, proxy', [
    ('the cup in front of the plate', 2, 1),     # proxy: below the plate
    ('the cup behind the plate', 1, 2),          # proxy: above the plate
    ('the cup closer than the plate', 2, 2),     # proxy: bigger than the plate
    ('the cup farther than the plate', 1, 1),    # proxy: smaller than the plate
])
def test_depth_relations_use_depth_when_available(parser, resolver, text, with_depth, proxy):
    p_depth = ground(parser, resolver, text, DEPTH_BOXES, DEPTH_LABELS, box_depths=DEPTHS)
    p_proxy = ground(parser, resolver, text, DEPTH_BOXES, DEPTH_LABELS)
    assert int(np.argmax(p_depth)) == with_depth
    assert int(np.argmax(p_proxy)) == proxy


def test_nan_depths_fall_back_to_the_proxy(parser, resolver):
    text = 'the cup in front of the plate'
    unknown = np.array([np.nan, np.nan, np.nan])
    np.testing.assert_allclose(
        ground(parser, resolver, text, DEPTH_BOXES, DEPTH_LABELS, box_depths=unknown),
        ground(parser, resolver, text, DEPTH_BOXES, DEPTH_LABELS))


# --- between ---------------------------------------------------------------------------------
def test_between_two_different_objects(parser, resolver):
    labels = ['plate', 'bowl', 'cup', 'cup']
    boxes = [Box(0, 0, 20, 20), Box(200, 0, 20, 20), Box(300, 0, 20, 20), Box(100, 5, 20, 20)]
    for text in ('the cup between the plate and the bowl', 'the cup in between the bowl and '
                 'the plate'):
        p = ground(parser, resolver, text, boxes, labels)
        assert int(np.argmax(p)) == 3, text
        assert p[3] > 0.95


def test_between_two_objects_of_one_noun(parser, resolver):
    labels = ['plate', 'plate', 'cup', 'cup']
    boxes = [Box(0, 0, 20, 20), Box(200, 0, 20, 20), Box(-100, 0, 20, 20), Box(100, 5, 20, 20)]
    p = ground(parser, resolver, 'the cup between the plates', boxes, labels)
    assert int(np.argmax(p)) == 3


# --- every superlative -----------------------------------------------------------------------
SUP_LABELS = ['cup', 'cup', 'cup', 'cup', 'cup', 'cup', 'plate', 'table']
SUP_BOXES = [Box(10, 100, 20, 20),     # 0 leftmost cup
             Box(100, 10, 30, 30),     # 1 topmost cup
             Box(200, 150, 60, 60),    # 2 biggest cup
             Box(300, 120, 15, 15),    # 3 rightmost and smallest cup
             Box(150, 260, 20, 20),    # 4 lowest cup
             Box(150, 130, 20, 20),    # 5 cup in the middle of the cups
             Box(0, 0, 5, 5),          # plate: more extreme than any cup in several ways
             Box(0, 0, 400, 300)]      # table: bigger than every cup
SUP_DEPTHS = np.array([0.5, 3.0, 2.0, 1.0, 4.0, 2.5, 0.1, np.nan])


@pytest.mark.parametrize('text, expected', [
    ('the leftmost cup', 0), ('the cup on the left', 0), ('the western cup', 0),
    ('the rightmost cup', 3), ('the cup on the right', 3), ('the cups on the right', 3),
    ('the top cup', 1), ('the topmost cup', 1), ('the upper cup', 1), ('the highest cup', 1),
    ('the cup at the top', 1),
    ('the bottom cup', 4), ('the lowest cup', 4), ('the lower cup', 4),
    ('the cup at the bottom', 4),
    ('the biggest cup', 2), ('the largest cup', 2),
    ('the smallest cup', 3), ('the tiniest cup', 3),
    ('the middle cup', 5), ('the cup in the center', 5), ('the cup in the middle', 5),
    # Without depth the depth superlatives use the paper's proxies:
    ('the closest cup', 2), ('the nearest cup', 2),        # bigger
    ('the farthest cup', 3), ('the furthest cup', 3),      # smaller
    ('the cup in front', 4),                               # lowest
    ('the cup in the back', 1),                            # highest
])
def test_superlatives(parser, resolver, text, expected):
    p = ground(parser, resolver, text, SUP_BOXES, SUP_LABELS)
    check_distribution(p, len(SUP_BOXES))
    assert int(np.argmax(p)) == expected, parser.parse(text).describe()


@pytest.mark.parametrize('text, expected', [
    ('the closest cup', 0), ('the nearest cup', 0), ('the farthest cup', 4),
    ('the furthest cup', 4), ('the cup in front', 0), ('the cup in the back', 4),
    ('the cup closest to the camera', 0), ('the cup furthest from the camera', 4),
])
def test_depth_superlatives(parser, resolver, text, expected):
    p = ground(parser, resolver, text, SUP_BOXES, SUP_LABELS, box_depths=SUP_DEPTHS)
    assert int(np.argmax(p)) == expected, parser.parse(text).describe()


def test_middle_of_the_image_uses_the_image_size(parser, resolver):
    text = 'the cup in the middle of the image'
    p = ground(parser, resolver, text, SUP_BOXES, SUP_LABELS, image_size=(40, 220))
    assert int(np.argmax(p)) == 0                       # image centre (20, 110) = cup 0
    p = ground(parser, resolver, text, SUP_BOXES, SUP_LABELS, image_size=(460, 360))
    assert int(np.argmax(p)) == 2                       # image centre (230, 180) = cup 2
    p = ground(parser, resolver, text, SUP_BOXES, SUP_LABELS)
    check_distribution(p, len(SUP_BOXES))               # no size: centre of all boxes


def test_two_superlatives_compose(parser, resolver):
    labels = ['cup'] * 4
    boxes = [Box(0, 0, 10, 10), Box(0, 200, 10, 10), Box(200, 0, 10, 10), Box(200, 200, 10, 10)]
    p = ground(parser, resolver, 'the bottom left cup', boxes, labels)
    assert int(np.argmax(p)) == 1
    p = ground(parser, resolver, 'the leftmost cup at the bottom', boxes, labels)
    assert int(np.argmax(p)) == 1


# --- ordinals --------------------------------------------------------------------------------
ROW_LABELS = ['cup', 'cup', 'plate', 'cup', 'cup', 'bottle']
ROW_BOXES = [Box(10, 0, 20, 20), Box(60, 0, 20, 20), Box(85, 0, 20, 20), Box(110, 0, 20, 20),
             Box(160, 0, 20, 20), Box(0, 0, 5, 50)]


@pytest.mark.parametrize('text, expected', [
    ('the first cup', 0), ('the second cup from the left', 1), ('the 2nd cup from the left', 1),
    ('the third cup from the left', 3), ('the second cup from the right', 3),
    ('the fourth cup from the right', 0), ('the last cup', 4), ('the second cup', 1),
    ('please hand me the second cup from the left', 1),
])
def test_ordinals(parser, resolver, text, expected):
    p = ground(parser, resolver, text, ROW_BOXES, ROW_LABELS)
    check_distribution(p, len(ROW_BOXES))
    assert int(np.argmax(p)) == expected, parser.parse(text).describe()
    assert p[expected] > 0.9


def test_ordinal_beyond_the_number_of_instances_changes_nothing(parser, resolver):
    p = ground(parser, resolver, 'the fifth cup', ROW_BOXES, ROW_LABELS)
    cups = p[[0, 1, 3, 4]]
    assert cups.max() - cups.min() < 1e-9


def test_ordinal_by_size(parser, resolver):
    labels = ['box', 'box', 'box', 'ball']
    boxes = [Box(0, 0, 10, 10), Box(50, 0, 30, 30), Box(100, 0, 20, 20), Box(200, 0, 90, 90)]
    p = ground(parser, resolver, 'the second largest box', boxes, labels)
    assert int(np.argmax(p)) == 2


def test_ordinal_weighting_on_a_hand_built_tree(resolver):
    boxes = [Box(0, 0, 10, 10), Box(20, 0, 10, 10), Box(40, 0, 10, 10)]
    root = Entity('the cup', 'the cup', ordinal=Ordinal(2, 'right', 'second from the right'))
    parsed = ParsedExpression('x', 'the cup', '', True, root)
    p = resolver.resolve(parsed, boxes, lambda text: np.array([0.4, 0.3, 0.3]))
    assert int(np.argmax(p)) == 1


# --- robot commands, lemmas, plurals ---------------------------------------------------------
@pytest.mark.parametrize('command, expression, expected', [
    ('pick up the cup right of the plate', 'the cup right of the plate', 2),
    ('go to the cup below the plate', 'the cup below the plate', 4),
    ('grab the cup on the left', 'the cup on the left', 1),
    ('bring me the cup below the plate', 'the cup below the plate', 4),
    ('please hand me the cup above the plate', 'the cup above the plate', 3),
    ('point at the cup left of the plate', 'the cup left of the plate', 1),
    ('look at the leftmost cup', 'the leftmost cup', 1),
])
def test_robot_commands_ground_like_their_expression(parser, resolver, command, expression,
                                                     expected):
    a = ground(parser, resolver, command, CROSS, CROSS_LABELS)
    b = ground(parser, resolver, expression, CROSS, CROSS_LABELS)
    np.testing.assert_allclose(a, b)
    assert int(np.argmax(a)) == expected


def test_lemmatised_and_plural_keywords(parser, resolver):
    # "nearing" matches the relation keyword "near" through its lemma.
    p = ground(parser, resolver, 'the cup nearing the plate', NEAR, NEAR_LABELS)
    assert int(np.argmax(p)) == 2
    p = ground(parser, resolver, 'the cups nearer to the plate', NEAR, NEAR_LABELS)
    assert int(np.argmax(p)) == 2
    p = ground(parser, resolver, 'the cups at the bottom', SUP_BOXES, SUP_LABELS)
    assert int(np.argmax(p)) == 4


# --- the execution rule itself, on hand-built trees ------------------------------------------
def tree_scores(table):
    return lambda text: np.asarray(table[text], dtype=float)


@pytest.mark.parametrize('kind', [k for k in relation_words(EXTENDED) if k != 'between'])
def test_relation_execution_formula(resolver, kind):
    boxes = [Box(0, 0, 30, 30), Box(10, 40, 10, 10), Box(60, 5, 40, 20), Box(15, 5, 10, 10)]
    depths = np.array([1.0, 2.0, 0.5, np.nan])
    table = {'full': [0.1, 0.4, 0.3, 0.2], 'a': [0.25, 0.25, 0.3, 0.2],
             'b': [0.7, 0.1, 0.1, 0.1]}
    child = Entity('b', 'b')
    root = Entity('a', 'a', relations=(Relation(kind, kind, (child,)),))
    parsed = ParsedExpression('full', 'full', '', True, root)
    out = resolver.resolve(parsed, boxes, tree_scores(table), box_depths=depths)
    a = np.array(table['a'])
    new = relation_matrix(box_relation(kind, EXTENDED), boxes, depths) @ np.array(table['b'])
    pi = normalise(a * new, fallback=a)
    expected = normalise(np.array(table['full']) * pi, fallback=pi)
    np.testing.assert_allclose(out, expected)


def test_between_execution_formula(resolver):
    boxes = [Box(0, 0, 10, 10), Box(100, 0, 10, 10), Box(50, 3, 10, 10), Box(50, 40, 10, 10)]
    table = {'full': [0.25] * 4, 'a': [0.1, 0.1, 0.4, 0.4], 'b': [0.9, 0.03, 0.04, 0.03],
             'c': [0.03, 0.9, 0.04, 0.03]}
    rel = Relation('between', 'between', (Entity('b', 'b'), Entity('c', 'c')))
    parsed = ParsedExpression('full', 'full', '', True, Entity('a', 'a', relations=(rel,)))
    out = resolver.resolve(parsed, boxes, tree_scores(table))
    new = np.einsum('ijk,j,k->i', between_tensor(boxes), table['b'], table['c'])
    pi = normalise(np.array(table['a']) * new, fallback=np.array(table['a']))
    np.testing.assert_allclose(out, normalise(np.array(table['full']) * pi, pi))
    assert int(np.argmax(out)) == 2


def test_superlative_execution_formula_in_paper_mode(resolver):
    # the paper's soft product: pi'(i) = pi(i) sum_j pi(j) R(i, j) (method note, section 2)
    boxes = [Box(0, 0, 10, 10), Box(50, 0, 10, 10), Box(100, 0, 10, 10)]
    table = {'full': [0.2, 0.5, 0.3], 'a': [0.2, 0.5, 0.3]}
    root = Entity('a', 'a', superlatives=(Superlative('left', 'leftmost'),))
    parsed = ParsedExpression('full', 'full', '', True, root, mode=PAPER)
    out = resolver.resolve(parsed, boxes, tree_scores(table))
    pi = np.array(table['a'])
    sup = normalise(pi * (relation_matrix('left', boxes) @ pi), pi)
    np.testing.assert_allclose(out, normalise(np.array(table['full']) * sup, sup))


def _row_boxes(n, step=50):
    return [Box(i * step, 0, 10, 10) for i in range(n)]


@pytest.mark.parametrize('scores, kind, paper_choice, expected', [
    # "the rightmost cube": two cubes (0.35 each) left of two spheres (0.15 each). The
    # paper's soft product picks the rightmost sphere (0.15 * 0.85 > 0.35 * 0.35); the
    # cubes are the instances (the spheres have less than half their probability) and
    # share the mass equally; only box 1 has an instance to its left.
    ([0.35, 0.35, 0.15, 0.15], 'right', 3, [0.0, 1.0, 0.0, 0.0]),
    # "the leftmost object": every box is an instance (no drop of ln 2), so the leftmost box
    # wins although its score is the lowest; the paper's product picks box 1 (0.3 * 0.55).
    # Flat weights 1/4: box i gets (number of boxes right of it) / 4, normalised: 3:2:1:0.
    ([0.15, 0.3, 0.28, 0.27], 'left', 1, [0.5, 1 / 3, 1 / 6, 0.0]),
])
def test_extended_superlative_orders_only_the_instances_of_the_noun(resolver, scores, kind,
                                                                     paper_choice, expected):
    boxes = _row_boxes(4)
    table = {'full': [0.25] * 4, 'a': scores}
    root = Entity('a', 'a', superlatives=(Superlative(kind, kind + 'most'),))
    paper = resolver.resolve(ParsedExpression('full', 'full', '', True, root, mode=PAPER),
                             boxes, tree_scores(table))
    assert int(np.argmax(paper)) == paper_choice
    out = resolver.resolve(ParsedExpression('full', 'full', '', True, root), boxes,
                           tree_scores(table))
    np.testing.assert_allclose(out, expected)


def test_extended_superlative_without_a_second_instance_keeps_the_scores(resolver):
    boxes = _row_boxes(3)
    # boxes 1 and 2 have less than instance_min_mass (0.1) of box 0's probability
    table = {'full': [1 / 3] * 3, 'a': [0.84, 0.08, 0.08]}
    root = Entity('a', 'a', superlatives=(Superlative('right', 'rightmost'),))
    out = resolver.resolve(ParsedExpression('full', 'full', '', True, root), boxes,
                           tree_scores(table))
    assert int(np.argmax(out)) == 0


@pytest.mark.parametrize('text, with_depth, expected', [
    ('the big cup', True, 1), ('the big cup', False, 0),
    ('the small cup', True, 0), ('the small cup', False, 1),
    ('the larger cup', True, 1), ('the tiny cup', True, 0),
])
def test_size_adjectives_compare_physical_size_within_the_category(parser, resolver, text,
                                                                   with_depth, expected):
    # cup 0: 40 px wide at 0.5 m (about 20 px*m), cup 1: 30 px wide at 1.0 m (30 px*m), so
    # cup 1 is the physically bigger one although its box is smaller; the plate is biggest.
    boxes = [Box(0, 0, 40, 40), Box(100, 0, 30, 30), Box(200, 0, 80, 80)]
    depths = [0.5, 1.0, 0.6] if with_depth else None
    p = ground(parser, resolver, text, boxes, ['cup', 'cup', 'plate'], box_depths=depths)
    assert int(np.argmax(p)) == expected


def test_size_adjective_with_one_instance_is_that_instance(parser, resolver):
    # "the big cup" with a single cup: the plate is bigger but not a cup
    boxes = [Box(0, 0, 20, 20), Box(100, 0, 80, 80)]
    p = ground(parser, resolver, 'the big cup', boxes, ['cup', 'plate'])
    assert int(np.argmax(p)) == 0


def test_final_distribution_multiplies_the_full_expression_score(resolver):
    boxes = [Box(0, 0, 10, 10), Box(50, 0, 10, 10)]
    table = {'the whole text': [0.9, 0.1], 'head': [0.5, 0.5]}
    parsed = ParsedExpression('the whole text', 'the whole text', '', True, Entity('head', 'h'))
    np.testing.assert_allclose(resolver.resolve(parsed, boxes, tree_scores(table)), [0.9, 0.1])


def test_score_fn_is_called_once_per_distinct_text(parser, resolver):
    score = OverlapScore(CROSS_LABELS)
    resolver.resolve(parser.parse('the cup left of the plate'), CROSS, score)
    assert sorted(score.calls) == sorted({'the cup', 'the plate', 'the cup left of the plate'})


# --- robustness ------------------------------------------------------------------------------
@pytest.mark.parametrize('text', ['the leftmost cup', 'the cup left of the plate',
                                  'the cup between the plate and the bowl',
                                  'the second cup from the left', 'the middle cup',
                                  'the cup closest to the camera', 'a cup'])
def test_single_box(parser, resolver, text):
    p = resolver.resolve(parser.parse(text), [Box(5, 5, 10, 10)], OverlapScore(['cup']),
                         box_depths=[1.0], image_size=(100, 100))
    np.testing.assert_allclose(p, [1.0])


def test_no_boxes_gives_an_empty_distribution(parser, resolver):
    assert resolver.resolve(parser.parse('the leftmost cup'), [], OverlapScore([])).shape == (0,)


def test_zero_mass_never_gives_nan(parser, resolver):
    boxes = CROSS
    zeros = lambda text: np.zeros(len(boxes))            # noqa: E731
    for text in ('the cup left of the plate', 'the leftmost cup', 'the second cup',
                 'the cup between the plate and the bowl', 'the middle cup'):
        p = resolver.resolve(parser.parse(text), boxes, zeros)
        check_distribution(p, len(boxes))
    # A relation that no pair satisfies keeps the previous distribution.
    labels = ['cup', 'plate']
    same_x = [Box(0, 0, 10, 10), Box(0, 50, 10, 10)]
    p = ground(parser, resolver, 'the cup left of the plate', same_x, labels)
    check_distribution(p, 2)
    assert int(np.argmax(p)) == 0


@pytest.mark.parametrize('bad', [np.array([0.5, 0.5]), np.array([np.nan, 0.5, 0.5]),
                                 np.array([-0.1, 0.6, 0.5]), 'abc'])
def test_bad_score_fn_output_raises(parser, resolver, bad):
    boxes = [Box(0, 0, 5, 5), Box(10, 0, 5, 5), Box(20, 0, 5, 5)]
    with pytest.raises(ValueError, match='score_fn'):
        resolver.resolve(parser.parse('the leftmost cup'), boxes, lambda text: bad)


def test_bad_depths_and_image_size_raise(parser, resolver):
    parsed = parser.parse('the closest cup')
    boxes = [Box(0, 0, 5, 5), Box(10, 0, 5, 5)]
    score = OverlapScore(['cup', 'cup'])
    with pytest.raises(ValueError, match='box_depths'):
        resolver.resolve(parsed, boxes, score, box_depths=[1.0])
    with pytest.raises(ValueError, match='image_size'):
        resolver.resolve(parsed, boxes, score, image_size=(0, 10))


def test_bad_resolver_options_raise():
    with pytest.raises(ValueError):
        SpatialResolver(near_scale=0)
    with pytest.raises(ValueError):
        SpatialResolver(instance_min_mass=2.0)


def _row(n):
    return [Box(20 + 60 * i, 50, 40, 40) for i in range(n)]


def _ordinal_entity(rank, kind):
    return ParsedExpression(expression='x', text='x', command='', has_keywords=True,
                            root=Entity(text='the cup', chunk='the cup',
                                               ordinal=Ordinal(rank, kind, 'w')),
                            keywords=('w',))


@pytest.mark.parametrize('rank,kind,expected', [(2, 'left', 1), (3, 'left', 2),
                                                (1, 'right', 4), (2, 'right', 3)])
def test_ordinal_with_uneven_scores_of_true_instances(resolver, rank, kind, expected):
    """Pick the rank-th of five cups whose region scores differ (0.07 .. 0.33).

    All are cups, so the rank-th in order is chosen, not the box with most mass nearby.
    """
    pi = np.array([0.33, 0.12, 0.07, 0.28, 0.20])
    boxes = _row(5)
    p = resolver.resolve(_ordinal_entity(rank, kind), boxes, lambda t: pi)
    assert int(np.argmax(p)) == expected


def test_ordinal_counts_only_the_nouns_boxes_after_a_clear_drop(resolver):
    """Count only the cups (boxes 1 and 3, high scores) as instances.

    The second cup from the left is box 3 even though box 2 is the second box.
    """
    pi = np.array([0.03, 0.40, 0.04, 0.48, 0.05])
    p = resolver.resolve(_ordinal_entity(2, 'left'), _row(5), lambda t: pi)
    assert int(np.argmax(p)) == 3
    first = resolver.resolve(_ordinal_entity(1, 'left'), _row(5), lambda t: pi)
    assert int(np.argmax(first)) == 1


def test_ordinal_rank_beyond_the_instances_leaves_the_distribution(resolver):
    pi = np.array([0.5, 0.3, 0.2])
    p = resolver.resolve(_ordinal_entity(5, 'left'), _row(3), lambda t: pi)
    np.testing.assert_allclose(p, normalise(pi * pi, fallback=pi))


def test_ordinal_word_is_not_part_of_the_scored_text(parser):
    parsed = parser.parse('the second red cup from the left')
    assert parsed.root.text == 'the red cup'
    assert parsed.root.ordinal.rank == 2 and parsed.root.ordinal.kind == 'left'


def test_ordinal_cut_may_fall_after_the_last_eligible_box(resolver):
    """Count all three capsules when the largest drop follows the third one.

    Capsules score 0.47, 0.35 and 0.12, three cubes 0.02 each: the drop after the third
    capsule is the largest, so all three capsules are instances (not just the top two).
    """
    xs = [425, 493, 124, 302, 518, 202]
    boxes = [Box(x - 20, 50, 40, 40) for x in xs]
    pi = np.array([0.47, 0.35, 0.12, 0.02, 0.02, 0.02])
    p = resolver.resolve(_ordinal_entity(2, 'left'), boxes, lambda t: pi)
    assert int(np.argmax(p)) == 0  # capsules at x 124, 425, 493: the second is at 425


# --- the crop view decides the instances of the noun -----------------------------------------
def _view_case():
    """Five boxes left to right; box 1 is a cone that the full score cannot tell from the cups.

    Full scores 0.24, 0.22, 0.20, 0.19, 0.15: no drop of ln 2, so without a view all five
    are instances and "the second cup from the left" is box 1, the cone. The crop view
    scores the cone 0.02 against 0.20-0.30 for the cups: pi * q**2 gives the cone
    0.22 * 0.0004 = 8.8e-5 against 0.006-0.0216 for the cups, less than instance_min_mass
    (0.1) of the best, so the cups are boxes 0, 2, 3, 4 and the second is box 2.
    """
    pi = np.array([0.24, 0.22, 0.20, 0.19, 0.15])
    q = np.array([0.30, 0.02, 0.25, 0.23, 0.20])
    return pi, q


def test_crop_view_excludes_a_confusable_box_from_the_ordinal(resolver):
    pi, q = _view_case()
    parsed = _ordinal_entity(2, 'left')
    without = resolver.resolve(parsed, _row(5), lambda t: pi)
    assert int(np.argmax(without)) == 1
    with_view = resolver.resolve(parsed, _row(5), lambda t: pi, instance_score_fn=lambda t: q)
    assert int(np.argmax(with_view)) == 2
    # the chosen box keeps its own probability: pi restricted to it, then the final product
    assert with_view[2] == pytest.approx(1.0)


def test_crop_view_decides_the_instances_of_a_superlative(resolver):
    """"the rightmost cup": box 4 is a cone in the view; the rightmost cup is box 3."""
    pi = np.array([0.20, 0.19, 0.20, 0.19, 0.22])
    q = np.array([0.30, 0.25, 0.25, 0.19, 0.01])
    root = Entity('the cup', 'the cup', superlatives=(Superlative('right', 'rightmost'),))
    parsed = ParsedExpression('the rightmost cup', 'the rightmost cup', '', True, root)
    assert int(np.argmax(resolver.resolve(parsed, _row(5), lambda t: pi))) == 4
    out = resolver.resolve(parsed, _row(5), lambda t: pi, instance_score_fn=lambda t: q)
    assert int(np.argmax(out)) == 3


def test_crop_view_scores_the_entity_text_and_is_off_at_weight_zero_or_in_paper_mode():
    pi, q = _view_case()
    asked = []

    def view(text):
        asked.append(text)
        return q

    parsed = _ordinal_entity(2, 'left')
    SpatialResolver().resolve(parsed, _row(5), lambda t: pi, instance_score_fn=view)
    assert asked == ['the cup']
    off = SpatialResolver(instance_view_weight=0.0).resolve(parsed, _row(5), lambda t: pi,
                                                            instance_score_fn=view)
    assert int(np.argmax(off)) == 1 and asked == ['the cup']
    root = Entity('a', 'a', superlatives=(Superlative('right', 'rightmost'),))
    paper = ParsedExpression('full', 'full', '', True, root, mode=PAPER)
    plain = SpatialResolver().resolve(paper, _row(5), lambda t: pi)
    viewed = SpatialResolver().resolve(paper, _row(5), lambda t: pi, instance_score_fn=view)
    np.testing.assert_array_equal(plain, viewed)
    assert asked == ['the cup']


@pytest.mark.parametrize('weight', [-1.0, float('inf'), float('nan')])
def test_bad_instance_view_weight_raises(weight):
    with pytest.raises(ValueError):
        SpatialResolver(instance_view_weight=weight)
