"""The bundled shapes model: loads without a path and names the objects in the example images."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from captioner.checkpoint import BUNDLED_CHECKPOINT
from captioner.data.shapes import parse_caption
from captioner.decoding import greedy_decode
from captioner.images import load_image
from captioner.training import load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def bundled():
    return load_model(None)


def test_bundled_checkpoint_is_small_and_weights_only():
    assert BUNDLED_CHECKPOINT.stat().st_size < 10 * 2**20
    payload = torch.load(BUNDLED_CHECKPOINT, weights_only=True)
    assert payload["config"]["model"]["encoder"]["weights"] == "imagenet"
    assert not any(key.startswith("encoder.") for key in payload["model"])


def test_bundled_model_names_the_objects_in_the_examples(bundled):
    model, vocab, _ = bundled
    objects = json.loads((EXAMPLES / "objects.json").read_text())
    names = sorted(objects)
    pixels = torch.stack([model.encoder.preprocess(load_image(EXAMPLES / name)) for name in names])
    with torch.no_grad():
        decoded = greedy_decode(model.decoder, model.encoder(pixels), vocab.start_id, vocab.end_id, 20)
    captions = [vocab.decode_text(c.tokens) for c in decoded]
    named = invented = total = 0
    for name, caption in zip(names, captions):
        expected = Counter((o["colour"], o["shape"]) for o in objects[name])
        found = Counter(parse_caption(caption))
        named += sum((expected & found).values())
        invented += sum((found - expected).values())
        total += sum(expected.values())
        if len(objects[name]) == 1:  # lone objects are always named exactly
            assert found == expected, (name, caption)
    # The model still swaps colours between objects in some 3-object scenes (README: recall
    # about 0.9 on 1,000 test images); on these 18 objects it must name most and invent few.
    assert named / total >= 0.7, captions
    assert invented / total <= 0.3, captions


def test_caption_command_defaults_to_the_bundled_model_and_survives_bad_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.touch()
    image = EXAMPLES / "shapes_5.jpg"
    result = subprocess.run([sys.executable, "-m", "captioner", "caption", str(empty), str(image)],
                            capture_output=True, text=True)
    assert result.returncode == 1  # one input failed, the other was still captioned
    assert "empty.jpg" in result.stderr and "1 of 2 images failed" in result.stderr
    path, caption = result.stdout.strip().split("\t")
    assert path == str(image) and parse_caption(caption) == [("yellow", "triangle")]
