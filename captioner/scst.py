"""Self-critical sequence training (Rennie et al., 2017) with a CIDEr-D reward: the loss and one step.

The gradient of the expected reward is estimated from K captions sampled per image:
∇ ≈ −(r − b) ∇ Σ_t log p(w_t), summed over each sample's words and its `<end>`. The baseline b
must not depend on the sample it is subtracted from, or the estimate is biased:

- `mean` (default): for sample k of an image, the mean reward of the image's other K − 1
  samples (leave-one-out, as in "Buy 4 REINFORCE samples, get a baseline for free"); it costs
  no extra decoding and needs K ≥ 2.
- `greedy`: the reward of the image's greedy caption from the current model in eval mode
  (Rennie et al.'s test-time baseline); one extra greedy decode per batch.

The reward is CIDEr-D (`CiderD.scores`); `ObjectNamingReward` adds to it how well each sample names
the objects of its image, where the training images come with object annotations (the shapes
world's annotations/shapes_objects.json).

`scst_step` is a training step without the optimizer: the caller zeroes the gradients, calls
`loss.backward()`, clips and steps, as `captioner.training.training_step` does for cross-entropy.

Letters: B images, K samples per image, L sampled length (≤ max_len + 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from captioner.data.shapes import ShapesImage
from captioner.decoding import greedy_decode, sample
from captioner.metrics import ObjectMatch, match_objects

BASELINES = ("mean", "greedy")


@dataclass(frozen=True)
class ScstOptions:
    """K samples per image of at most `max_len` words at `temperature`, and the baseline
    (`mean` or `greedy`). Rennie et al.: 5 samples, 16 words, temperature 1."""

    samples: int = 5
    max_len: int = 16
    temperature: float = 1.0
    baseline: str = "mean"

    def __post_init__(self):
        if self.baseline not in BASELINES:
            raise ValueError(f"scst baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.baseline == "mean" and self.samples < 2:
            raise ValueError(f"the mean baseline needs at least 2 samples per image, got {self.samples}")
        if self.samples < 1 or self.max_len < 1 or not self.temperature > 0:
            raise ValueError(f"need samples >= 1, max_len >= 1 and temperature > 0, got "
                             f"{self.samples}, {self.max_len}, {self.temperature}")


class Reward(Protocol):
    def scores(self, image_indices, candidates) -> np.ndarray:
        """(M,) rewards of M candidates (token-id rows) of the images at `image_indices` (M,)."""


class ObjectNamingReward:
    """CIDEr-D plus `weight` × the object F1 of each sample against its image's objects.

    CIDEr-D scores n-grams: "a purple square" for a purple diamond costs a sample about as much
    as any other two wrong words among a dozen, so binding errors weigh little in its reward.
    The F1 (`object_f1`) is 1 only for a caption that names every object with the right counts
    and nothing else, whatever its wording. `images[i]` holds the objects of training image i,
    the image `cider`'s references i belong to.
    """

    def __init__(self, cider: Reward, images: Sequence[ShapesImage], vocab, weight: float):
        if weight < 0:
            raise ValueError(f"the object naming reward's weight must be >= 0, got {weight}")
        self.cider, self.images, self.vocab, self.weight = cider, images, vocab, weight

    def scores(self, image_indices, candidates) -> np.ndarray:
        indices = np.asarray(torch.as_tensor(image_indices).cpu()).reshape(-1)
        rows = candidates.tolist() if isinstance(candidates, (torch.Tensor, np.ndarray)) else candidates
        f1 = [object_f1(match_objects(self.vocab.decode(row), self.images[i])) for i, row in zip(indices, rows)]
        return self.cider.scores(indices, candidates) + self.weight * np.asarray(f1, dtype=np.float64)


def object_f1(match: ObjectMatch) -> float:
    """2·named / (objects + said): the harmonic mean of the share of the image's objects named
    and the share of the objects said that are there (counts honoured); 1 exactly when the
    caption names the image exactly, and 1 for an empty image described as empty."""
    objects, said = len(match.named), match.said
    return 2 * sum(match.named) / (objects + said) if objects + said else 1.0


def leave_one_out_baseline(rewards: torch.Tensor, K: int) -> torch.Tensor:
    """rewards (B·K,), K consecutive rows per image → each row's mean over its image's other K − 1 rows (B·K,)."""
    if K < 2:
        raise ValueError("a leave-one-out baseline needs K >= 2 samples per image")
    per_image = rewards.view(-1, K)
    return ((per_image.sum(dim=1, keepdim=True) - per_image) / (K - 1)).view(-1)


def scst_loss(log_probs: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor, baseline: torch.Tensor,
              entropy: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """−Σ_rows (r − b) Σ_t log p(w_t), divided by the number of real tokens in the batch.

    log_probs (B·K, L) with gradients, mask (B·K, L) of the words and `<end>`, rewards and
    baseline (B·K,), entropy (B·K, L) or None → (loss, stats). Dividing by the real tokens, as
    the cross-entropy does, keeps the step size of the CE stage's learning rate in the same
    range and makes long and short batches weigh per token; the gradient's direction is that of
    the per-sample estimate. Stats (floats): reward, baseline and advantage means, the mean
    |advantage|, the mean entropy per real token (when given), the mean sampled length in tokens.
    """
    mask = mask.to(log_probs.dtype)
    advantage = (rewards - baseline).detach().to(log_probs.dtype)  # (B·K,) the reward is a constant
    tokens = mask.sum().clamp(min=1.0)
    loss = -(advantage * (log_probs * mask).sum(dim=1)).sum() / tokens
    stats = {
        "reward": float(rewards.mean()),
        "baseline": float(baseline.mean()),
        "advantage": float(advantage.mean()),
        "advantage_abs": float(advantage.abs().mean()),
        "sample_tokens": float(mask.sum(dim=1).mean()),
    }
    if entropy is not None:
        stats["entropy"] = float((entropy.detach() * mask).sum() / tokens)
    return loss, stats


def scst_step(model, features: torch.Tensor, image_ids, reward: Reward, options: ScstOptions,
              vocab) -> tuple[torch.Tensor, dict[str, float]]:
    """One SCST loss on a batch: features (B, P, D) of the batch's images (the encoder's output,
    e.g. cached features), image_ids (B,) their positions in the training images `reward` was
    built for (a `CiderD` or an `ObjectNamingReward`) → (loss with gradients, stats). `model`
    is a CaptionModel (its `decoder` samples) in the mode the caller set: train mode samples
    with dropout, as the loss is trained with."""
    decoder = model.decoder
    features = features.float()
    K = options.samples
    samples = sample(decoder, features, vocab.start_id, vocab.end_id, K, options.max_len,
                     options.temperature, banned_ids=(vocab.pad_id,), pad_id=vocab.pad_id)
    images = torch.as_tensor(image_ids).reshape(-1).cpu()
    rewards = _as_tensor(reward.scores(images.repeat_interleave(K), samples.tokens), samples.log_probs)
    if options.baseline == "mean":
        baseline = leave_one_out_baseline(rewards, K)
    else:
        baseline = greedy_rewards(decoder, features, images, reward, vocab, options.max_len)
        baseline = _as_tensor(baseline, samples.log_probs).repeat_interleave(K)
    loss, stats = scst_loss(samples.log_probs, samples.mask, rewards, baseline, samples.entropy)
    stats["finished"] = float(samples.finished.float().mean())
    return loss, stats


@torch.no_grad()
def greedy_rewards(decoder, features: torch.Tensor, image_ids, reward: Reward, vocab, max_len: int) -> np.ndarray:
    """The reward of each image's greedy caption (B,), decoded in eval mode (no dropout, the
    test-time caption); the decoder's mode is restored afterwards."""
    was_training = decoder.training
    decoder.eval()
    try:
        captions = greedy_decode(decoder, features, vocab.start_id, vocab.end_id, max_len,
                                 banned_ids=(vocab.pad_id,))
    finally:
        decoder.train(was_training)
    return reward.scores(image_ids, [c.tokens for c in captions])


def _as_tensor(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype).to(like.device, non_blocking=True)
