"""int8 decoder weights for CPU captioning: each layer within its rounding bounds of the float
layer, and captions that name the same objects as the float model's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captioner.inference import Captioner
from shapes_examples import EXAMPLES as EXAMPLES_DIR, OBJECTS, assert_names_most_objects

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.jpg"))


@pytest.fixture(scope="module")
def captioners():
    return Captioner.load(None, "cpu"), Captioner.load(None, "cpu", quantize=True)


def test_quantized_decoder_holds_int8_weights(captioners):
    plain, quantized = captioners
    kinds = {type(m).__name__ for m in quantized.model.decoder.modules()}
    assert {"Linear", "LSTMCell"} <= kinds and quantized.model.decoder.lstm.__module__.startswith(
        "torch.ao.nn.quantized.dynamic")
    packed = quantized.model.decoder.out._packed_params._weight_bias()[0]
    assert packed.dtype == torch.qint8 and packed.shape == plain.model.decoder.out.weight.shape


def test_int8_layers_stay_within_their_rounding_bounds(captioners):
    plain, quantized = captioners
    float_layers = dict(plain.model.decoder.named_modules())
    checked = 0
    for name, layer in quantized.model.decoder.named_modules():
        if not isinstance(layer, torch.ao.nn.quantized.dynamic.Linear):
            continue
        reference = float_layers[name]
        weight = layer.weight()
        dequantized = weight.dequantize()
        # per-tensor int8: rounding moves every weight by at most half a quantization step (plus
        # float32 rounding of w / scale, ~1e-7 for these weights)
        assert (dequantized - reference.weight).abs().max() <= weight.q_scale() / 2 + 1e-6, name
        # the input is rounded to 8 bits at run time (7 on x86, whose kernels reduce the range
        # to avoid overflow): each output moves by at most Σ_j |w_ij| · half an input step
        x = torch.randn(16, reference.in_features, generator=torch.Generator().manual_seed(checked))
        step = (x.max().clamp(min=0) - x.min().clamp(max=0)) / 127
        bound = dequantized.abs().sum(1) * step / 2 + 1e-5
        assert ((layer(x) - (x @ dequantized.T + reference.bias)).abs() <= bound).all(), name
        checked += 1
    assert checked >= 4  # attention key/query, deep output's two layers and the vocabulary layer


def test_quantized_captions_name_the_objects_as_well_as_the_float_models(captioners):
    # int8 scores move, so a close call between two captions can go the other way; what must
    # hold is what holds for the float model: lone objects exact, most objects named, few invented
    plain, quantized = captioners
    names = sorted(OBJECTS)
    for captioner in (plain, quantized):
        results = captioner.caption([EXAMPLES_DIR / name for name in names])
        assert all(len(r.words) == r.attention.shape[0] for r in results)
        assert_names_most_objects({name: r.text for name, r in zip(names, results)})


def test_caption_cli_quantize(tmp_path):
    output = tmp_path / "captions.jsonl"
    result = subprocess.run([sys.executable, "-m", "captioner", "caption", str(EXAMPLES[0]), "--device", "cpu",
                             "--quantize", "--quiet", "--output", str(output)], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in output.read_text().splitlines()]
    assert record["caption"] == Captioner.load(None, "cpu").caption([EXAMPLES[0]])[0].text
