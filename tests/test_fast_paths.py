"""Each fast path gives the plain path's numbers (train.fused_decoder, train.compile, the CPU
kernels of captioner.fast_paths), and the CPU tricks run only where they were measured: on a CPU,
in float32 outside autocast, with frozen modules."""

import json
import shutil

import pytest
import torch
from torch import nn

from captioner import fast_paths
from captioner.config import EncoderConfig, ModelConfig
from captioner.model import Decoder, Encoder, SoftAttention
from test_training import tiny_config
from captioner.training import fit

VARIANTS = [
    ModelConfig(embed_dim=16, attention_dim=12, decoder_dim=20, dropout=0.0),
    ModelConfig(embed_dim=16, attention_dim=12, decoder_dim=20, dropout=0.0, deep_output=False, gate="vector",
                attention="dot", feature_norm=True),
    ModelConfig(embed_dim=16, attention_dim=12, decoder_dim=20, dropout=0.0, gate="none", attention="bilinear"),
    ModelConfig(embed_dim=16, attention_dim=12, decoder_dim=20, dropout=0.0, attention_query="hidden_and_word"),
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
    logits, alphas, _ = decoder(features, captions, lengths, image_index, fused=fused)
    # a loss that weighs every output differently, so any misplaced row or step shows
    weights = torch.linspace(0.1, 1.0, logits.numel(), dtype=logits.dtype).view_as(logits)
    loss = (logits * weights).sum() + (alphas ** 2).sum()
    grads = torch.autograd.grad(loss, list(decoder.parameters()))
    return logits, alphas, grads


@pytest.mark.parametrize("config", VARIANTS, ids=["additive", "dot-vector-gate", "bilinear-no-gate",
                                                 "query-with-word"])
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
    logits, alphas, _ = decoder(features, captions, lengths, image_index, fused=True)
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
    plain_logits, plain_alphas, _ = decoder(features, captions, lengths, image_index, fused=False)
    decoder.compile_step()
    logits, alphas, _ = decoder(features, captions, lengths, image_index, fused=True)
    torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alphas, plain_alphas, rtol=1e-5, atol=1e-5)
    logits.sum().backward()  # the compiled step also differentiates
    assert decoder.lstm.weight_hh.grad.abs().sum() > 0


def test_additive_scores_and_gradients_equal_the_papers_mlp_written_plainly():
    torch.manual_seed(0)
    attention = SoftAttention(feature_dim=6, query_dim=5, attention_dim=4).double()
    features, hidden = torch.randn(3, 7, 6, dtype=torch.double), torch.randn(3, 5, dtype=torch.double)
    keys, query = attention.keys(features), attention.query(hidden)
    scores = fast_paths.additive_scores(keys, query, attention.energy)
    plain_scores = attention.energy(torch.tanh(keys + query.unsqueeze(1))).squeeze(-1)
    weights = torch.randn_like(scores)
    ours = torch.autograd.grad((scores * weights).sum(), list(attention.parameters()), retain_graph=True)
    plain = torch.autograd.grad((plain_scores * weights).sum(), list(attention.parameters()))
    torch.testing.assert_close(scores, plain_scores, rtol=1e-12, atol=1e-12)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device_type, dtype, autocast, frozen, expected", [
    ("cpu", torch.float32, False, True, True),  # where the tricks were measured
    ("cuda", torch.float32, False, True, False),
    ("cuda", torch.bfloat16, True, True, False),  # the COCO recipe's train.amp
    ("cuda", torch.float32, True, True, False),  # float32 weights, bf16 matmuls under autocast
    ("cpu", torch.float32, True, True, False),
    ("cpu", torch.bfloat16, False, True, False),
    ("cpu", torch.float64, False, True, False),
    ("cpu", torch.float32, False, False, False),  # batch norm in training mode
])
def test_the_switch_takes_the_cpu_tricks_only_where_they_were_measured(device_type, dtype, autocast, frozen,
                                                                       expected):
    assert fast_paths.applies(device_type, dtype, autocast, frozen) is expected


def test_the_switch_reads_the_tensor_and_the_autocast_state():
    assert fast_paths.enabled(torch.zeros(2))
    assert not fast_paths.enabled(torch.zeros(2), frozen=False)
    assert not fast_paths.enabled(torch.zeros(2, dtype=torch.bfloat16))
    assert not fast_paths.enabled(torch.zeros(2, device="meta"))  # a device without autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fast_paths.enabled(torch.zeros(2))


def test_cpu_float32_attention_takes_the_kernel_and_other_dtypes_the_plain_mlp(monkeypatch):
    calls = []
    kernel = fast_paths.additive_scores

    def counted_kernel(*args):
        calls.append(args[0].dtype)
        return kernel(*args)

    monkeypatch.setattr(fast_paths, "additive_scores", counted_kernel)
    attention = SoftAttention(feature_dim=6, query_dim=5, attention_dim=4)
    features, hidden = torch.randn(3, 7, 6), torch.randn(3, 5)
    attention(attention.keys(features), features, hidden)  # what trains the bundled model
    attention.double()
    attention(attention.keys(features.double()), features.double(), hidden.double())
    assert calls == [torch.float32]


def test_attention_under_bf16_autocast_stays_within_bf16_rounding_of_float32():
    """Energy weights that share a sign: 2σ(2u) − 1 summed, then shifted by −Σw ≈ −26, cancels.

    bf16 keeps 8 significant bits, so rounding α itself to bf16 moves each α_i by up to 2^-8 of
    itself, Σ_i |Δα_i| ≤ 2^-8 per image; a plain tanh MLP adds little to that (measured here: a
    mean of 0.0030). The 2σ(2u) − 1 kernel forms a score near Σw ≈ 26, where bf16 values are
    0.125 apart, so its α is off by several percent (measured here: 0.030). The bound, twice α's
    own rounding (0.0078), passes the first by 2.6 times and fails the second by 3.8 times.
    """
    generator = torch.Generator().manual_seed(0)
    attention = SoftAttention(feature_dim=64, query_dim=32, attention_dim=512)
    with torch.no_grad():
        attention.energy.weight.normal_(0.05, 0.05, generator=generator)
    features, hidden = torch.randn(8, 49, 64, generator=generator), torch.randn(8, 32, generator=generator)
    with torch.no_grad():
        _, alpha = attention(attention.keys(features), features, hidden)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, alpha_bf16 = attention(attention.keys(features), features, hidden)
    l1_error = (alpha_bf16.float() - alpha).abs().sum(-1).mean().item()  # mean over images of Σ_i |Δα_i|
    assert l1_error < 2 * 2 ** -8


def batch_sizes_batch_norm_sees(encoder, images):
    """The batch sizes that the encoder's batch-norm layers in training mode, or else all of
    them, receive in one forward pass."""
    layers = [m for m in encoder.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    watched = [m for m in layers if m.training] or layers
    sizes = set()
    hooks = [m.register_forward_pre_hook(lambda module, args: sizes.add(len(args[0]))) for m in watched]
    try:
        encoder(images)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


@pytest.mark.parametrize("fine_tune, training, expected", [
    (1, True, {3}),  # trainable batch norm needs the batch's statistics, not one image's
    (1, False, {1}),  # running statistics: one image at a time is the same function
    (0, True, {1}),  # the frozen encoder of the measured CPU path
])
def test_the_encoder_splits_the_batch_only_while_no_batch_norm_trains(fine_tune, training, expected):
    encoder = Encoder(EncoderConfig(backbone="efficientnet_lite0", weights="none", layer="blocks.3",
                                    image_size=32, grid=1, fine_tune=fine_tune)).train(training)
    assert batch_sizes_batch_norm_sees(encoder, torch.randn(3, 3, 32, 32)) == expected
