"""Self-critical training's pieces: the baseline, the loss's gradient, and learning from a reward."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import captioner.training as training
from captioner.checkpoint import load_checkpoint
from captioner.cider import CiderD
from captioner.config import ConfigError, EncoderConfig, ModelConfig, load_config
from captioner.data.shapes import ShapeObject, ShapesImage
from captioner.decoding import sample
from captioner.model import Decoder
from captioner.report.curves import curve_series
from captioner.metrics import match_objects
from captioner.scst import (ObjectNamingReward, ScstOptions, leave_one_out_baseline, object_f1, scst_loss,
                            scst_step)
from captioner.vocab import Vocabulary
from stand_ins import crash_on_call
from test_training import TINY

VOCAB = Vocabulary([f"x{i}" for i in range(8)])  # ids 4..11 are words


def tiny_decoder(seed: int = 0, dropout: float = 0.0) -> Decoder:
    torch.manual_seed(seed)
    config = ModelConfig(encoder=EncoderConfig(backbone="tiny", weights="none"), embed_dim=16, attention_dim=12,
                         decoder_dim=24, dropout=dropout)
    return Decoder(vocab_size=len(VOCAB), feature_dim=10, config=config)


@torch.no_grad()
def sequence_log_prob(decoder: Decoder, features: torch.Tensor, tokens: list[int]) -> float:
    """log p of `tokens` (words then <end>) for one image, by a plain step loop."""
    features, keys, state = decoder.begin(features)
    previous, total = torch.tensor([VOCAB.start_id]), 0.0
    for token in tokens:
        logits, state, _ = decoder.step(previous, state, keys, features)
        total += float(logits.log_softmax(-1)[0, token])
        previous = torch.tensor([token])
    return total


def test_leave_one_out_baseline_is_the_mean_of_the_other_samples():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    assert leave_one_out_baseline(rewards, K=3).tolist() == [2.5, 2.0, 1.5, 25.0, 20.0, 15.0]
    assert leave_one_out_baseline(torch.tensor([4.0, 8.0]), K=2).tolist() == [8.0, 4.0]
    with pytest.raises(ValueError, match="K >= 2"):
        leave_one_out_baseline(rewards, K=1)


def test_loss_gradient_is_minus_the_advantage_per_real_token():
    log_probs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.1, 0.0], [-2.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    rewards, baseline = torch.tensor([2.0, 0.5, 1.0]), torch.tensor([1.0, 1.0, 1.0])
    loss, stats = scst_loss(log_probs, mask, rewards, baseline, entropy=torch.ones(3, 3))
    loss.backward()
    advantage = torch.tensor([1.0, -0.5, 0.0])
    expected = -(advantage[:, None] * mask) / 6  # 6 real tokens
    torch.testing.assert_close(log_probs.grad, expected)
    assert float(loss.detach()) == pytest.approx(-(1.0 * -3.5 + -0.5 * -0.4) / 6)
    assert stats["reward"] == pytest.approx(3.5 / 3) and stats["baseline"] == pytest.approx(1.0)
    assert stats["advantage"] == pytest.approx(0.5 / 3) and stats["entropy"] == pytest.approx(1.0)
    assert stats["sample_tokens"] == pytest.approx(2.0)


class FixedReward:
    """A stand-in for CiderD: the reward of each row is given (B·K,)."""

    def __init__(self, rewards):
        self.rewards = rewards

    def scores(self, image_ids, candidates):
        return self.rewards


def test_a_gradient_step_raises_the_probability_of_the_sample_above_the_baseline():
    decoder = tiny_decoder(seed=2)
    features = torch.randn(1, 9, 10)
    torch.manual_seed(5)
    options = ScstOptions(samples=4, max_len=6)
    best = 1  # the one sample that scores above the others' mean
    loss, stats = scst_step(SimpleNamespace(decoder=decoder), features, [0],
                            FixedReward(torch.tensor([0.0, 1.0, 0.0, 0.0]).numpy()), options, VOCAB)
    # the samples drawn: redraw with the same seed to read their tokens
    torch.manual_seed(5)  # the same draws scst_step made
    drawn = sample(decoder, features, VOCAB.start_id, VOCAB.end_id, 4, 6, banned_ids=(VOCAB.pad_id,))
    tokens = [t for t, m in zip(drawn.tokens[best].tolist(), drawn.mask[best].tolist()) if m]
    others = [[t for t, m in zip(drawn.tokens[k].tolist(), drawn.mask[k].tolist()) if m] for k in (0, 2, 3)]
    assert tokens not in others  # else the step cannot single it out
    before = sequence_log_prob(decoder, features, tokens)
    loss.backward()
    with torch.no_grad():
        for parameter in decoder.parameters():
            if parameter.grad is not None:
                parameter -= 0.05 * parameter.grad
    assert sequence_log_prob(decoder, features, tokens) > before
    assert stats["advantage"] == pytest.approx(0.0, abs=1e-6)  # leave-one-out: advantages sum to 0


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread; on a machine busy with other work, two spinning
    threads made these steps twenty times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_scst_steps_raise_the_mean_cider_reward(baseline, one_thread):
    # 4 images, each with its own references over 8 words; a fresh decoder writes random words
    torch.manual_seed(0)
    references = [[[4, 5, 6, 7], [4, 5, 6]], [[8, 9, 10], [8, 9, 10, 11]], [[11, 4, 9], [11, 4]],
                  [[6, 6, 7, 8, 5], [6, 7, 8]]]
    cider = CiderD.from_vocab(references, VOCAB)
    model = SimpleNamespace(decoder=tiny_decoder(seed=0, dropout=0.1).train())
    features = torch.randn(4, 9, 10)
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=1e-2)
    options = ScstOptions(samples=5, max_len=6, baseline=baseline)
    rewards = []
    for _ in range(150):
        loss, stats = scst_step(model, features, torch.arange(4), cider, options, VOCAB)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rewards.append(stats["reward"])
    first, last = sum(rewards[:15]) / 15, sum(rewards[-15:]) / 15
    assert last > first + 2.0, (first, last)  # CIDEr-D of an exact reference is 10 here at most
    assert model.decoder.training  # the greedy baseline put the mode back


def test_options_are_checked():
    with pytest.raises(ValueError, match="baseline"):
        ScstOptions(baseline="max")
    with pytest.raises(ValueError, match="at least 2 samples"):
        ScstOptions(samples=1)
    assert ScstOptions(samples=1, baseline="greedy").samples == 1


# --- the object naming reward ---------------------------------------------------------------

TWO = ShapesImage(224, 224, (ShapeObject((10, 10, 40, 40), "circle", "red", "small"),
                             ShapeObject((100, 100, 80, 80), "square", "blue", "large")))


@pytest.mark.parametrize(("caption", "f1"), [
    ("a red circle and a blue square", 1.0),
    ("a small red circle next to a large blue square", 1.0),
    ("a red circle and a blue circle", 2 * 1 / (2 + 2)),  # a binding error: one named, one absent
    ("a red circle", 2 * 1 / (2 + 1)),  # one missed
    ("two red circles and a blue square", 2 * 2 / (2 + 3)),  # one too many
    ("a large red circle and a blue square", 2 * 1 / (2 + 2)),  # the wrong size names nothing
    ("a picture", 0.0),
])
def test_object_f1_counts_by_hand(caption, f1):
    assert object_f1(match_objects(caption.split(), TWO)) == pytest.approx(f1)


def test_object_f1_of_an_empty_image():
    empty = ShapesImage(224, 224, ())
    assert object_f1(match_objects("nothing here".split(), empty)) == 1.0
    assert object_f1(match_objects("a red circle".split(), empty)) == 0.0


def test_the_object_reward_adds_the_weighted_f1_to_cider():
    vocab = Vocabulary("a red circle and blue square two circles".split())
    captions = ["a red circle and a blue square", "a red circle and a blue circle", "a red circle"]
    references = [[vocab.encode(captions[0]), vocab.encode("a blue square and a red circle")]]
    cider = CiderD.from_vocab(references, vocab)
    # sampled rows: words, <end>, then padding, as `sample` returns them
    rows = [vocab.encode(c)[1:] for c in captions]
    width = max(map(len, rows))
    tokens = torch.tensor([row + [vocab.pad_id] * (width - len(row)) for row in rows])
    images = torch.zeros(3, dtype=torch.long)
    rewards = ObjectNamingReward(cider, [TWO], vocab, weight=2.5).scores(images, tokens)
    expected = cider.scores(images, tokens) + 2.5 * torch.tensor([1.0, 0.5, 2 / 3]).numpy()
    assert rewards == pytest.approx(expected)
    assert ObjectNamingReward(cider, [TWO], vocab, weight=0.0).scores(images, tokens) == pytest.approx(
        cider.scores(images, tokens))
    with pytest.raises(ValueError, match="weight"):
        ObjectNamingReward(cider, [TWO], vocab, weight=-1.0)


# --- the SCST stage in `captioner.training.fit` ---------------------------------------------

def _tiny(shapes_data, out, *overrides):
    return load_config(TINY, [f"data.root={shapes_data}", f"data.split_file={shapes_data / 'dataset_shapes.json'}",
                              f"output_dir={out}", *overrides])


@pytest.fixture(scope="module")
def cross_entropy_run(shapes_data, tmp_path_factory):
    return training.fit(_tiny(shapes_data, tmp_path_factory.mktemp("xe"), "train.epochs=2", "train.batch_size=4"))


SCST_STAGE = ["train.objective=scst", "train.scst_samples=3", "train.scst_max_len=8", "train.batch_size=4",
              "train.lr=1e-3", "train.lr_schedule=none"]


def test_the_scst_stage_starts_from_a_checkpoint_and_logs_its_reward(shapes_data, cross_entropy_run, tmp_path):

    init = cross_entropy_run / "checkpoint_best.pt"
    run = training.fit(_tiny(shapes_data, tmp_path / "scst", "train.epochs=2", *SCST_STAGE), init=init)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert 0 <= line["train_baseline"] and 0 <= line["train_reward"]
        assert line["train_entropy"] > 0 and 0 < line["train_sample_tokens"] <= 9
    assert curve_series(lines, ("train_reward", "train_baseline"))["train_reward"][0] == [1, 2]
    # the vocabulary is the init checkpoint's, kept fixed
    assert load_checkpoint(run / "checkpoint_last.pt")["vocab"] == load_checkpoint(init)["vocab"]


def test_scst_without_a_starting_checkpoint_is_a_clear_error(shapes_data, tmp_path):
    with pytest.raises(ConfigError, match="--init"):
        training.fit(_tiny(shapes_data, tmp_path, *SCST_STAGE))


def test_an_interrupted_scst_stage_resumes_exactly(shapes_data, cross_entropy_run, tmp_path, monkeypatch):
    init = cross_entropy_run / "checkpoint_best.pt"
    overrides = ["train.epochs=2", "train.checkpoint_every=1", *SCST_STAGE]
    full = training.fit(_tiny(shapes_data, tmp_path / "full", *overrides), init=init)

    crash_on_call(monkeypatch, training, "clip_gradients", 5)  # step 5 of 6: mid-way through epoch 2
    with pytest.raises(RuntimeError, match="crash"):
        training.fit(_tiny(shapes_data, tmp_path / "crashed", *overrides), init=init)
    monkeypatch.undo()
    training.fit(_tiny(shapes_data, tmp_path / "crashed", *overrides),
                 resume=tmp_path / "crashed" / "checkpoint_last.pt")
    expected = load_checkpoint(full / "checkpoint_last.pt")
    resumed = load_checkpoint(tmp_path / "crashed" / "checkpoint_last.pt")
    assert resumed["training"]["step"] == expected["training"]["step"] == 6
    for key, value in expected["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_the_object_reward_trains_on_the_world_s_objects(shapes_data, cross_entropy_run, tmp_path):
    init = cross_entropy_run / "checkpoint_best.pt"
    config = _tiny(shapes_data, tmp_path / "objects", "train.epochs=1", "train.scst_object_reward=2", *SCST_STAGE)
    records = training.load_split(config.data, "train")
    vocab = Vocabulary.from_dict(load_checkpoint(init)["vocab"])
    reward = training.SelfCritical.build(records, vocab, config).reward
    caption = records[0].captions[0]  # a reference names its image exactly: F1 1, on top of CIDEr-D
    row = torch.tensor([vocab.encode(caption)[1:]])
    assert reward.scores([0], row) == pytest.approx(reward.cider.scores([0], row) + 2.0)
    run = training.fit(config, init=init)
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["epoch"] == 1 and line["train_reward"] >= 0


def test_the_object_reward_needs_object_annotations(shapes_data, cross_entropy_run, tmp_path):
    world = tmp_path / "world"
    world.mkdir()
    for item in shapes_data.iterdir():  # the same world without annotations/shapes_objects.json
        if item.name != "annotations":
            (world / item.name).symlink_to(item)
    config = load_config(TINY, [f"data.root={world}", f"data.split_file={world / 'dataset_shapes.json'}",
                                f"output_dir={tmp_path / 'run'}", "train.scst_object_reward=1", *SCST_STAGE])
    with pytest.raises(ConfigError, match="shapes_objects.json"):
        training.fit(config, init=cross_entropy_run / "checkpoint_best.pt")
