"""Hard attention (Xu et al. §4.1): the sampled context, the learning rule's estimator against an
exact enumeration, training with exact resume, and decoding through the unchanged callers."""

import itertools

import pytest
import torch

import captioner.training as training
from captioner.checkpoint import load_checkpoint
from captioner.config import load_config
from captioner.inference import Captioner
from captioner.model import Decoder, caption_loss, hard_attention_loss
from captioner.training import fit
from test_model import random_captions, small_config
from stand_ins import crash_on_call
from test_training import TINY

P, D, V = 3, 6, 9


def tiny_decoder(seed=0, **changes) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(V, D, small_config(attention_mode="hard", **changes)).eval()


def test_a_sampled_context_is_the_feature_vector_of_the_sampled_cell():
    decoder = tiny_decoder(gate="none")
    features = torch.randn(4, P, D)
    features, keys, (h, c) = decoder.begin(features)
    torch.manual_seed(1)
    words = decoder.embedding(torch.zeros(4, dtype=torch.long))
    context, alpha, location = decoder.attend(keys, features, h, words, sample=True)
    torch.testing.assert_close(context, features[torch.arange(4), location])
    expected, _, none = decoder.attend(keys, features, h, words)
    torch.testing.assert_close(expected, torch.einsum("bp,bpd->bd", alpha, features))
    assert none is None


def test_sampled_locations_follow_alpha():
    decoder = tiny_decoder()
    features = torch.randn(1, P, D).expand(40000, P, D)
    features, keys, (h, _) = decoder.begin(features)
    torch.manual_seed(2)
    words = decoder.embedding(torch.zeros(len(h), dtype=torch.long))
    _, alpha, location = decoder.attend(keys, features, h, words, sample=True)
    frequencies = torch.bincount(location, minlength=P).float() / len(location)
    # 40,000 draws: each frequency's standard error is below 0.0025
    torch.testing.assert_close(frequencies, alpha[0].detach(), atol=0.01, rtol=0)


@pytest.mark.parametrize("fused", [False, True])
def test_the_fused_path_samples_the_same_locations_and_numbers(fused):
    decoder = tiny_decoder()
    features = torch.randn(2, P, D)
    captions, lengths = random_captions([5, 4, 6], vocab_size=V)
    image_index = torch.tensor([0, 1, 1])
    torch.manual_seed(3)
    plain = decoder(features, captions, lengths, image_index, fused=False, sample=True)
    torch.manual_seed(3)
    other = decoder(features, captions, lengths, image_index, fused=fused, sample=True)
    for a, b in zip(plain, other):
        torch.testing.assert_close(a, b)
    locations = plain[2]
    real = torch.arange(lengths.max() - 1) < (lengths - 1).unsqueeze(1)
    assert (locations[real] >= 0).all() and (locations[~real] == -1).all()


def test_without_the_rule_s_extra_terms_the_loss_is_the_cross_entropy():
    decoder = tiny_decoder()
    features = torch.randn(3, P, D)
    captions, lengths = random_captions([5, 4, 6], vocab_size=V)
    logits, alphas, locations = decoder(features, captions, lengths, sample=True)
    loss, cross_entropy, log_likelihood = hard_attention_loss(logits, captions, lengths, alphas, locations,
                                                              baseline=-4.0, reinforce_weight=0.0,
                                                              entropy_weight=0.0)
    expected, _ = caption_loss(logits, captions, lengths, alphas, 0.0)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(cross_entropy, expected.detach())
    torch.testing.assert_close(-log_likelihood.sum() / (lengths - 1).sum(), expected.detach())


def test_the_entropy_term_is_the_summed_entropy_of_alpha():
    decoder = tiny_decoder()
    features = torch.randn(2, P, D)
    captions, lengths = random_captions([5, 3], vocab_size=V)
    logits, alphas, locations = decoder(features, captions, lengths, sample=True)
    args = (logits, captions, lengths, alphas, locations)
    without, _, _ = hard_attention_loss(*args, baseline=0.0, reinforce_weight=0.0, entropy_weight=0.0)
    with_entropy, _, _ = hard_attention_loss(*args, baseline=0.0, reinforce_weight=0.0, entropy_weight=1.0)
    entropy = sum(-(a * a.log()).sum() for row, n in enumerate(lengths - 1) for a in alphas[row, :n])
    torch.testing.assert_close(without - with_entropy, entropy / (lengths - 1).sum())


def _exact_bound_gradient(decoder, features, captions, lengths, monkeypatch):
    """∇ L_s = ∇ Σ_s p(s|a) log p(y|s,a), summing over every path of locations s."""
    steps = int(lengths[0]) - 1
    bound = 0.0
    for path in itertools.product(range(P), repeat=steps):
        forced = iter(path)
        monkeypatch.setattr(torch, "multinomial", lambda probs, n: torch.tensor([[next(forced)]]))
        logits, alphas, locations = decoder(features, captions, lengths, sample=True)
        assert locations[0].tolist() == list(path)
        log_likelihood = -torch.nn.functional.cross_entropy(logits[0], captions[0, 1:], reduction="sum")
        log_p_path = alphas[0, torch.arange(steps), locations[0]].log().sum()
        bound = bound + log_p_path.exp() * log_likelihood
    monkeypatch.undo()
    return torch.autograd.grad(bound, list(decoder.parameters()))


def _estimated_gradient(decoder, features, captions, lengths, samples, baseline, reinforce_weight):
    """Mean over `samples` sampled paths of the rule's gradient (up to the loss's sign and scale)."""
    captions, lengths = captions.expand(samples, -1), lengths.expand(samples)
    logits, alphas, locations = decoder(features, captions, lengths, torch.zeros(samples, dtype=torch.long),
                                        sample=True)
    loss, _, _ = hard_attention_loss(logits, captions, lengths, alphas, locations, baseline, reinforce_weight, 0.0)
    # loss = −Σ_n (rule's objective)_n / (samples · steps), so −steps · ∇loss is the mean over samples
    steps = int(lengths[0]) - 1
    return [-steps * g for g in torch.autograd.grad(loss, list(decoder.parameters()))]


def _flat(gradients):
    return torch.cat([g.reshape(-1) for g in gradients])


def test_the_estimator_matches_the_exact_gradient_of_the_bound(monkeypatch):
    """Three steps over three cells: 27 paths, enumerated exactly. From 60,000 sampled paths the
    rule's estimate must be within 3% (relative L2) of the exact gradient of L_s, and within 15% on
    the attention's own weights, which the REINFORCE term alone trains (the sampled context does not
    depend on them); with the moving-average baseline or without one (a baseline changes the
    variance, not the mean). Over three sampling seeds the errors were at most 1.1% and 8%.
    Dropping the REINFORCE term (λ_r = 0) leaves the biased estimate, which both bounds reject."""
    decoder = tiny_decoder(seed=4, gate="none")
    features = torch.randn(1, P, D) * 2
    captions, lengths = random_captions([5], vocab_size=V, generator=torch.Generator().manual_seed(5))
    attention = torch.cat([torch.full((p.numel(),), name.startswith("attention."))
                           for name, p in decoder.named_parameters()])
    exact = _flat(_exact_bound_gradient(decoder, features, captions, lengths, monkeypatch))

    def errors(estimate):
        return ((estimate - exact).norm() / exact.norm(),
                (estimate - exact)[attention].norm() / exact[attention].norm())

    torch.manual_seed(6)
    for baseline in (0.0, -7.0):
        whole, attention_only = errors(_flat(_estimated_gradient(decoder, features, captions, lengths, 60000,
                                                                  baseline, 1.0)))
        assert whole < 0.03 and attention_only < 0.15, baseline
    whole, attention_only = errors(_flat(_estimated_gradient(decoder, features, captions, lengths, 60000, 0.0, 0.0)))
    assert whole > 0.03 and attention_only > 0.15


def hard_config(shapes_data, out, *overrides):
    return load_config(TINY, [f"data.root={shapes_data}", f"data.split_file={shapes_data / 'dataset_shapes.json'}",
                              f"output_dir={out}", "model.attention_mode=hard", *overrides])


def test_hard_training_resumes_exactly_with_its_baseline(shapes_data, tmp_path, monkeypatch):
    overrides = ["train.epochs=2", "train.batch_size=4", "train.checkpoint_every=1", "train.seed=3"]
    full = fit(hard_config(shapes_data, tmp_path / "full", *overrides))

    crash_on_call(monkeypatch, training, "clip_gradients", 5)  # step 5 of 6: mid-way through epoch 2
    with pytest.raises(RuntimeError, match="crash"):
        fit(hard_config(shapes_data, tmp_path / "crashed", *overrides))
    monkeypatch.undo()
    fit(hard_config(shapes_data, tmp_path / "crashed", *overrides), resume=tmp_path / "crashed" / "checkpoint_last.pt")

    expected = load_checkpoint(full / "checkpoint_last.pt")
    resumed = load_checkpoint(tmp_path / "crashed" / "checkpoint_last.pt")
    assert expected["training"]["hard_baseline"] < 0  # a log-likelihood, set by sampled batches
    assert resumed["training"]["hard_baseline"] == pytest.approx(expected["training"]["hard_baseline"], rel=1e-5)
    for key, value in expected["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_about_half_the_batches_sample_locations(shapes_data, tmp_path):
    config = hard_config(shapes_data, tmp_path)
    torch.manual_seed(0)
    draws = [training.sample_locations(config) for _ in range(4000)]
    assert abs(sum(draws) / len(draws) - 0.5) < 0.03  # standard error 0.008
    soft = load_config(TINY, [])
    assert not any(training.sample_locations(soft) for _ in range(100))


def test_a_hard_model_captions_with_one_map_per_word_and_deterministically(shapes_data, tmp_path):
    run = fit(hard_config(shapes_data, tmp_path / "run", "train.epochs=1", "train.batch_size=4"))
    captioner = Captioner.load(run / "checkpoint_last.pt", device="cpu")
    assert captioner.config.model.attention_mode == "hard"
    images = sorted((shapes_data / "val2014").glob("*.jpg"))[:3]
    first = captioner.caption(images, beam_size=3, max_len=8, top_n=2)
    second = captioner.caption(images, beam_size=3, max_len=8, top_n=2)
    for result in first:
        for hypothesis in (result, *result.alternatives):
            assert len(hypothesis.words) == len(hypothesis.tokens) == len(hypothesis.attention) > 0
    assert [r.tokens for r in first] == [r.tokens for r in second]
