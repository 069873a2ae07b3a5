"""Each training fast path gives the plain path's numbers (train.fused_decoder, train.compile)."""

import json
import shutil

import pytest
import torch

from captioner.config import ModelConfig
from captioner.model import Decoder
from test_training import tiny_config
from captioner.training import fit

VARIANTS = [
    ModelConfig(embed_dim=16, attention_dim=12, decoder_dim=20, dropout=0.0),
    ModelConfig(embed_dim=16, attention_dim=12, decoder_dim=20, dropout=0.0, deep_output=False, gate="vector",
                attention="dot", feature_norm=True),
    ModelConfig(embed_dim=16, attention_dim=12, decoder_dim=20, dropout=0.0, gate="none", attention="bilinear"),
]


def batch(seed=0):
    """5 images (B, P, D) = (5, 9, 24) and 12 captions of uneven length, several per image."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(5, 9, 24, generator=generator, dtype=torch.double)
    image_index = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 2, 0, 4, 4])
    lengths = torch.randint(3, 10, (12,), generator=generator)
    captions = torch.randint(1, 30, (12, int(lengths.max())), generator=generator)
    return features, captions, lengths, image_index


def outputs_and_gradients(decoder, fused):
    features, captions, lengths, image_index = batch()
    logits, alphas = decoder(features, captions, lengths, image_index, fused=fused)
    # a loss that weighs every output differently, so any misplaced row or step shows
    weights = torch.linspace(0.1, 1.0, logits.numel(), dtype=logits.dtype).view_as(logits)
    loss = (logits * weights).sum() + (alphas ** 2).sum()
    grads = torch.autograd.grad(loss, list(decoder.parameters()))
    return logits, alphas, grads


@pytest.mark.parametrize("config", VARIANTS, ids=["additive", "dot-vector-gate", "bilinear-no-gate"])
def test_fused_teacher_forcing_equals_stepwise(config):
    torch.manual_seed(0)
    decoder = Decoder(30, 24, config).double()
    plain = outputs_and_gradients(decoder, fused=False)
    fused = outputs_and_gradients(decoder, fused=True)
    torch.testing.assert_close(fused[0], plain[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(fused[1], plain[1], rtol=0, atol=1e-12)
    for fused_grad, plain_grad in zip(fused[2], plain[2]):
        torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-10, atol=1e-12)


def test_fused_path_leaves_padding_zero():
    torch.manual_seed(0)
    decoder = Decoder(30, 24, VARIANTS[0]).double()
    features, captions, lengths, image_index = batch()
    logits, alphas = decoder(features, captions, lengths, image_index, fused=True)
    for row, length in enumerate(lengths.tolist()):
        assert logits[row, length - 1:].abs().sum() == 0 and alphas[row, length - 1:].abs().sum() == 0
        assert torch.allclose(alphas[row, : length - 1].sum(-1), torch.ones((), dtype=alphas.dtype))


def test_fused_training_run_matches_plain_run(shapes_data, tmp_path):
    losses = {}
    for fused in (False, True):
        out = tmp_path / f"fused_{fused}"
        # dropout off: the fused path draws its masks for all steps at once, in another order
        fit(tiny_config(shapes_data, out, f"train.fused_decoder={str(fused).lower()}", "model.dropout=0.0",
                        f"data.feature_cache_dir={tmp_path / 'cache'}"))
        losses[fused] = [json.loads(line)["train_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses[True]) == 2
    # same seed, same batches: only float summation order differs
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("gcc") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_step_equals_plain_step():
    torch.manual_seed(0)
    decoder = Decoder(30, 24, VARIANTS[0]).float()
    features, captions, lengths, image_index = batch()
    features = features.float()
    plain_logits, plain_alphas = decoder(features, captions, lengths, image_index, fused=False)
    decoder.compile_step()
    logits, alphas = decoder(features, captions, lengths, image_index, fused=True)
    torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alphas, plain_alphas, rtol=1e-5, atol=1e-5)
    logits.sum().backward()  # the compiled step also differentiates
    assert decoder.lstm.weight_hh.grad.abs().sum() > 0
