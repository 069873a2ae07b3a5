"""The objects in examples/ and how many of them a set of captions names right: shared by the
tests that check the bundled model, its int8 variant and the demo against the same truth."""

import json
from collections import Counter
from pathlib import Path

from captioner.data.shapes import parse_caption

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OBJECTS = json.loads((EXAMPLES / "objects.json").read_text())


def truth(name: str) -> Counter:
    return Counter((o["colour"], o["shape"]) for o in OBJECTS[name])


def assert_names_most_objects(captions: dict[str, str]) -> None:
    """Lone objects named exactly; over all the examples' objects, most named and few invented.

    "Most" and "few" are loose bounds (4 in 5, 1 in 5) for a model whose test-set recall and
    hallucination are measured in docs/shapes-world.md: they catch a broken model, not a close call.
    """
    named = invented = total = 0
    for name, caption in captions.items():
        expected, found = truth(name), Counter(parse_caption(caption))
        named += sum((expected & found).values())
        invented += sum((found - expected).values())
        total += sum(expected.values())
        if len(OBJECTS[name]) == 1:
            assert found == expected, (name, caption)
    assert named / total >= 0.8, captions
    assert invented / total <= 0.2, captions
