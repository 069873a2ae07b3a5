"""The bundled shapes model: loads without a path and names the objects in the example images."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from captioner.checkpoint import BUNDLED_CHECKPOINT
from captioner.data.shapes import ShapeObject, ShapesImage, parse_caption
from captioner.inference import Captioner
from captioner.metrics import match_objects
from shapes_examples import OBJECTS, assert_names_most_objects

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def bundled():
    return Captioner.load(device="cpu")


def test_bundled_checkpoint_is_small_and_weights_only():
    assert BUNDLED_CHECKPOINT.stat().st_size < 10 * 2**20
    payload = torch.load(BUNDLED_CHECKPOINT, weights_only=True)
    assert payload["config"]["model"]["encoder"]["weights"] == "imagenet"
    assert not any(key.startswith("encoder.") for key in payload["model"])


def test_bundled_checkpoint_holds_no_path_of_the_machine_that_built_it():
    payload = torch.load(BUNDLED_CHECKPOINT, weights_only=True)
    texts = []

    def collect(value):
        if isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)
        elif isinstance(value, str):
            texts.append(value)

    collect({key: value for key, value in payload.items() if key != "model"})
    assert not [t for t in texts if t.startswith("/") or any(root in t for root in ("/work/", "/root/", "/home/", "/tmp/"))]
    # its data is named by how it was made, a command anyone can run
    assert payload["data_origin"].startswith("captioner shapes ") and "--seed 0" in payload["data_origin"]
    assert payload["config"]["data"]["root"] == "data/shapes"


def test_bundled_model_names_the_objects_in_the_examples(bundled):
    names = sorted(OBJECTS)
    captions = [result.text for result in bundled.caption([EXAMPLES / name for name in names], beam_size=3)]
    assert_names_most_objects(dict(zip(names, captions)))


def test_bundled_model_names_every_example_exactly(bundled):
    # the shipped model's promise (docs/shapes-world.md): every object of every example, counts and
    # said sizes right, nothing that is not there
    names = sorted(OBJECTS)
    wrong = {}
    for name, result in zip(names, bundled.caption([EXAMPLES / name for name in names], beam_size=3)):
        image = ShapesImage(224, 224, tuple(ShapeObject(tuple(o["bbox"]), o["shape"], o["colour"], o["size"])
                                            for o in OBJECTS[name]))
        if not match_objects(result.words, image).exact:
            wrong[name] = (result.text, [f"{o['size']} {o['colour']} {o['shape']}" for o in OBJECTS[name]])
    assert not wrong


def test_caption_command_defaults_to_the_bundled_model(tmp_path):
    image = EXAMPLES / "shapes_5.jpg"
    result = subprocess.run([sys.executable, "-m", "captioner", "caption", str(image), "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["path"] == str(image) and parse_caption(record["caption"]) == [("yellow", "triangle")]


def test_readme_python_example_runs_and_names_the_objects():
    readme = (EXAMPLES.parent / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, cwd=EXAMPLES.parent,
                            check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 4  # caption + score, attention shape, for each of the two images
    assert Counter(parse_caption(lines[0].rsplit(" ", 1)[0])) == Counter(
        (o["colour"], o["shape"]) for o in json.loads((EXAMPLES / "objects.json").read_text())["shapes_5.jpg"])
    assert lines[1].startswith("torch.Size([") and lines[1].endswith(", 14, 14])")


def test_top_n_alternatives_are_distinct_when_captions_end_at_max_len(bundled):
    # shapes_4's best caption has exactly 6 words: at --max-len 6 it used to come back twice,
    # once finished and once as the same words unfinished
    (result,) = bundled.caption(EXAMPLES / "shapes_4.jpg", beam_size=3, max_len=6, top_n=3)
    texts = [result.text] + [alternative.text for alternative in result.alternatives]
    assert len(texts) == 3 and len(set(texts)) == 3, texts


def test_one_attention_map_per_word_even_when_pad_and_start_score_highest():
    captioner = Captioner.load(device="cpu")
    vocab = captioner.vocab
    with torch.no_grad():  # a decoder that would rather write <pad> or <start> than any word
        captioner.model.decoder.out.bias[[vocab.pad_id, vocab.start_id]] += 30.0
    for beam_size in (1, 3):
        (result,) = captioner.caption(EXAMPLES / "shapes_1.jpg", beam_size=beam_size, max_len=7)
        assert vocab.pad_id not in result.tokens and vocab.start_id not in result.tokens
        assert len(result.words) == len(result.tokens) == result.attention.shape[0]
