"""Caption and shapes metrics on hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captioner.data.shapes import ShapeObject, ShapesImage
from captioner.metrics import (
    attention_grounding,
    box_mass,
    by_object_count,
    hallucination_rate,
    match_objects,
    object_recall,
    shapes_report,
    summarize_grounding,
)

RED_CIRCLE = ShapeObject((0, 0, 64, 64), "circle", "red", "large")
BLUE_STAR = ShapeObject((128, 160, 32, 32), "star", "blue", "small")
OTHER_RED_CIRCLE = ShapeObject((160, 32, 32, 32), "circle", "red", "small")
IMAGES = {
    1: ShapesImage(224, 224, (RED_CIRCLE, BLUE_STAR)),
    2: ShapesImage(224, 224, (RED_CIRCLE, OTHER_RED_CIRCLE)),
}


def test_recall_is_one_when_every_object_is_named():
    captions = {1: "a blue star and a red circle", 2: "two red circles"}
    assert object_recall(captions, IMAGES) == 1.0
    assert hallucination_rate(captions, IMAGES) == 0.0


def test_recall_counts_multiplicity():
    # Image 2 has two red circles; "a red circle" recovers one of them.
    assert object_recall({1: "a red circle", 2: "a red circle"}, IMAGES) == pytest.approx(2 / 4)


def test_hallucination_counts_absent_and_surplus_mentions():
    # Mentions: red circle, green square (absent) | three red circles (one too many).
    captions = {1: "a red circle and a green square", 2: "three red circles"}
    assert hallucination_rate(captions, IMAGES) == pytest.approx(2 / 5)
    assert hallucination_rate({1: "nothing to see"}, IMAGES) == 0.0


def test_a_size_word_must_be_right():
    # Image 1: a large red circle and a small blue star.
    assert object_recall({1: "a small red circle and a small blue star"}, IMAGES) == pytest.approx(1 / 2)
    assert hallucination_rate({1: "a small red circle and a small blue star"}, IMAGES) == pytest.approx(1 / 2)
    assert object_recall({1: "a large red circle and a blue star"}, IMAGES) == 1.0


def test_sized_mentions_are_matched_before_unsized_ones():
    # Image 2: a large and a small red circle. Read in order, "a red circle" could take the small
    # one and leave "a small red circle" nothing; matched sized-first, both are named.
    match = match_objects("a red circle beside a small red circle".split(), IMAGES[2])
    assert match.named == (True, True) and match.unmatched == (0, 0) and match.exact
    twice = match_objects("a small red circle and a small red circle".split(), IMAGES[2])
    assert twice.named == (False, True) and twice.unmatched == (0, 1) and not twice.exact


def test_exact_needs_every_object_and_nothing_extra():
    assert match_objects("two red circles".split(), IMAGES[2]).exact
    assert not match_objects("a red circle".split(), IMAGES[2]).exact  # one missed
    assert not match_objects("three red circles".split(), IMAGES[2]).exact  # one too many
    assert not match_objects("a blue star , a red circle and a green square".split(), IMAGES[1]).exact
    # a shape without a colour names nothing, so it neither helps nor hurts
    assert match_objects("a red circle and a blue star beside a triangle".split(), IMAGES[1]).exact


def test_scores_by_object_count():
    images = {**IMAGES, 3: ShapesImage(224, 224, (BLUE_STAR,))}
    captions = {1: "a red circle and a blue star", 2: "a red circle", 3: "a red star"}
    groups = by_object_count(captions, images)
    assert groups["1"] == {"images": 1, "object_recall": 0.0, "hallucination_rate": 1.0, "exact": 0.0}
    assert groups["2"] == {"images": 2, "object_recall": pytest.approx(3 / 4), "hallucination_rate": 0.0,
                           "exact": 0.5}
    assert groups["all"]["object_recall"] == pytest.approx(3 / 5) == object_recall(captions, images)
    assert groups["all"]["exact"] == pytest.approx(1 / 3)
    report = shapes_report(captions, None, images)
    assert report["exact"] == pytest.approx(1 / 3) and report["objects_2_object_recall"] == pytest.approx(3 / 4)


def _one_hot(rows: int, cols: int, row: int, col: int) -> np.ndarray:
    grid = np.zeros((rows, cols))
    grid[row, col] = 1.0
    return grid


def test_attention_inside_box_gives_full_mass_and_pointing():
    words = ["a", "red", "circle", "and", "a", "blue", "star"]
    maps = np.full((len(words) + 1, 7, 7), 1 / 49)  # one extra step for <end>
    maps[2] = _one_hot(7, 7, 0, 1)  # cell (0, 1) spans x 32..64, inside the red circle's box
    maps[6] = _one_hot(7, 7, 5, 4)  # cell (5, 4) is exactly the blue star's box
    records = attention_grounding(words, torch.tensor(maps), IMAGES[1])
    assert [(r["t"], r["word"]) for r in records] == [(2, "circle"), (6, "star")]
    assert [r["mass"] for r in records] == pytest.approx([1.0, 1.0])
    assert [r["pointing"] for r in records] == [True, True]
    summary = summarize_grounding(records)
    assert summary["count"] == 2 and summary["mass"] == pytest.approx(1.0) and summary["pointing"] == 1.0


def test_misses_are_told_apart_by_where_the_argmax_lands():
    words = ["a", "red", "circle", "and", "a", "blue", "star"]
    maps = np.zeros((len(words), 7, 7))
    maps[2] = _one_hot(7, 7, 5, 4)  # the circle's word looks at the blue star
    maps[6] = _one_hot(7, 7, 3, 0)  # the star's word looks at empty background
    records = attention_grounding(words, maps, IMAGES[1])
    assert [(r["pointing"], r["other_object"]) for r in records] == [(False, True), (False, False)]
    assert summarize_grounding(records)["other_object"] == 0.5
    maps[2] = _one_hot(7, 7, 0, 0)  # a hit is never counted as looking at another object
    assert attention_grounding(words, maps, IMAGES[1])[0]["other_object"] is False


def test_uniform_attention_mass_equals_area_share():
    uniform = np.full((7, 7), 1 / 49)
    assert box_mass(uniform, RED_CIRCLE.bbox, 224, 224) == pytest.approx(64 * 64 / 224**2, abs=1e-6)
    records = attention_grounding(["star"], uniform[None], IMAGES[1])
    assert records[0]["mass"] == pytest.approx(records[0]["baseline"], abs=1e-6)
    assert summarize_grounding(records)["mass_over_baseline"] == pytest.approx(1.0)


def test_mass_is_area_weighted_for_boxes_cutting_cells():
    # A box covering half of cell (0, 0) and nothing else, on a 2×2 grid over a 100×100 image.
    grid = np.array([[0.4, 0.2], [0.3, 0.1]])
    assert box_mass(grid, (0, 0, 25, 50), 100, 100) == pytest.approx(0.2)


def test_shape_word_picks_the_matching_object_with_most_attention():
    maps = _one_hot(7, 7, 1, 5)[None].repeat(3, axis=0)  # on OTHER_RED_CIRCLE
    records = attention_grounding(["two", "red", "circles"], maps, IMAGES[2])
    assert records[0]["bbox"] == list(OTHER_RED_CIRCLE.bbox) and records[0]["mass"] == pytest.approx(1.0)
    # A shape word naming nothing in the image gives no record.
    assert attention_grounding(["a", "green", "circle"], maps, IMAGES[2]) == []


def test_a_word_naming_several_objects_points_at_any_of_them():
    # The peak cell is the small red circle's, but the large one holds more of the mass: both
    # are red circles, so "circles" (or "circle") looks at an object it names either way.
    grid = np.zeros((7, 7))
    grid[1, 5] = 0.3  # exactly OTHER_RED_CIRCLE's box
    grid[0:2, 0:2] = 0.7 / 4  # RED_CIRCLE's four cells
    for words in (["two", "red", "circles"], ["a", "red", "circle"]):
        record = attention_grounding(words, np.stack([grid] * 3), IMAGES[2])[0]
        assert record["bbox"] == list(RED_CIRCLE.bbox) and record["mass"] == pytest.approx(0.7)
        assert (record["pointing"], record["other_object"]) == (True, False)
    # With a blue star beside them, a peak on the star is a look at an object it cannot name.
    three = ShapesImage(224, 224, (RED_CIRCLE, OTHER_RED_CIRCLE, BLUE_STAR))
    on_star = _one_hot(7, 7, 5, 4)[None].repeat(3, axis=0)
    record = attention_grounding(["two", "red", "circles"], on_star, three)[0]
    assert (record["pointing"], record["other_object"]) == (False, True)


def test_pointing_honours_size_words():
    # The peak sits on the large red circle (RED_CIRCLE's top-left cell). Said "large", or with
    # no size word, that is a hit; said "small", it is a look at the other red circle: a miss,
    # though ignoring the size word it would count.
    on_large = _one_hot(7, 7, 0, 0)[None].repeat(5, axis=0)
    cases = {
        ("a", "large", "red", "circle"): (True, True, False),
        ("a", "red", "circle"): (True, True, False),
        ("a", "small", "red", "circle"): (False, True, True),
        ("a", "red", "small", "circle"): (False, True, True),
        ("two", "small", "red", "circles"): (False, True, True),
    }
    for words, expected in cases.items():
        (record,) = attention_grounding(list(words), on_large, IMAGES[2])
        assert (record["pointing"], record["pointing_ignoring_size"], record["other_object"]) == expected, words
    # "a small blue star" over the small star is a hit; over nothing of that size it is a miss
    on_star = _one_hot(7, 7, 5, 4)[None].repeat(5, axis=0)
    assert attention_grounding(["a", "small", "blue", "star"], on_star, IMAGES[1])[0]["pointing"]
    (wrong_size,) = attention_grounding(["a", "large", "blue", "star"], on_star, IMAGES[1])
    assert (wrong_size["pointing"], wrong_size["pointing_ignoring_size"]) == (False, True)
    summary = summarize_grounding([wrong_size, attention_grounding(["a", "blue", "star"], on_star, IMAGES[1])[0]])
    assert (summary["pointing"], summary["pointing_ignoring_size"]) == (0.5, 1.0)


def test_shapes_report_combines_all():
    words = ["a", "red", "circle"]
    report = shapes_report({1: "a red circle"}, {1: (words, np.full((3, 7, 7), 1 / 49))}, IMAGES)
    assert report["object_recall"] == 0.5 and report["hallucination_rate"] == 0.0
    assert report["grounding_count"] == 1
    assert report["grounding_mass"] == pytest.approx(64 * 64 / 224**2)
    assert "grounding_mass" not in shapes_report({1: "a red circle"}, None, IMAGES)
