"""Synthetic COCO-shaped workloads shared by the benchmarks: model sizes, a vocabulary, caption
lengths, batches, and our model and the tutorial re-creation built at the same sizes.

COCO shapes (issue 7): 256×256 images, ResNet-101 features pooled to 14×14×2048, vocabulary
9,490, embedding/attention/decoder 512, caption lengths ~ N(10.5, 2.5) words + <start>/<end>,
5 captions per image. Random weights everywhere: speed does not depend on them, and nothing
needs downloading.

Letters: B images, N captions, P grid cells, D feature dim, T caption length, V vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import tutorial_reference as tutorial
from captioner.config import Config, load_config
from captioner.inference import Captioner
from captioner.model import CaptionModel
from captioner.vocab import END, SPECIALS, START, Vocabulary

CAPTIONS_PER_IMAGE = 5
START_ID, END_ID = SPECIALS.index(START), SPECIALS.index(END)  # the same ids in every Vocabulary
MEAN_WORDS, STD_WORDS = 10.5, 2.5


@dataclass(frozen=True)
class Sizes:
    """Model and data sizes of a workload."""

    backbone: str = "resnet101"
    image_size: int = 256
    grid: int = 14
    dim: int = 512  # embedding, attention and decoder dims alike
    vocab_size: int = 9490

    @property
    def feature_dim(self) -> int:
        return 2048  # ResNet-50/101/152 after layer4


COCO = Sizes()
# --quick: the same code paths at sizes that run in seconds on a CPU
QUICK = Sizes(backbone="resnet50", image_size=64, grid=2, dim=32, vocab_size=100)


def vocabulary(sizes: Sizes) -> Vocabulary:
    """A vocabulary of `sizes.vocab_size` entries (4 specials + made-up words)."""
    return Vocabulary([f"word{i}" for i in range(sizes.vocab_size - 4)])


def our_config(sizes: Sizes, overrides: list[str] = ()) -> Config:
    """Our config at `sizes` (random encoder weights), plus `overrides` ('a.b=value')."""
    return load_config(None, [
        f"model.encoder.backbone={sizes.backbone}", "model.encoder.weights=none", "model.encoder.layer=last",
        f"model.encoder.image_size={sizes.image_size}", f"model.encoder.grid={sizes.grid}",
        f"model.embed_dim={sizes.dim}", f"model.attention_dim={sizes.dim}", f"model.decoder_dim={sizes.dim}",
        *overrides,
    ])


def our_captioner(sizes: Sizes, device: torch.device) -> Captioner:
    """Our Captioner at `sizes`, random weights, eval mode."""
    config = our_config(sizes)
    vocab = vocabulary(sizes)
    model = CaptionModel(config.model, len(vocab)).to(device)
    return Captioner(model, vocab, config, device, checkpoint=f"random weights, {sizes}")


def tutorial_models(sizes: Sizes, device: torch.device) -> tuple[tutorial.TutorialEncoder, tutorial.TutorialDecoder]:
    """The tutorial re-creation's encoder and decoder at `sizes`, random weights, on `device`."""
    encoder = tutorial.TutorialEncoder(sizes.backbone, sizes.grid).to(device)
    decoder = tutorial.TutorialDecoder(sizes.dim, sizes.dim, sizes.dim, sizes.vocab_size,
                                       sizes.feature_dim).to(device)
    return encoder, decoder


def caption_lengths(count: int, generator: torch.Generator, max_words: int = tutorial.MAX_CAPTION_WORDS) -> list[int]:
    """`count` caption lengths in tokens: round(N(10.5, 2.5)) words, at least 1, + <start>/<end>."""
    words = torch.normal(MEAN_WORDS, STD_WORDS, (count,), generator=generator).round().clamp(1, max_words)
    return [int(w) + 2 for w in words]


def random_captions(lengths: list[int], vocab_size: int, generator: torch.Generator,
                    start_id: int = START_ID, end_id: int = END_ID) -> list[list[int]]:
    """Token lists of the given lengths: <start>, random word ids (≥ 4), <end>."""
    return [[start_id, *torch.randint(4, vocab_size, (n - 2,), generator=generator).tolist(), end_id]
            for n in lengths]


def our_batch(inputs: torch.Tensor, vocab_size: int, generator: torch.Generator,
              captions_per_image: int = CAPTIONS_PER_IMAGE, lengths: list[int] | None = None) -> dict:
    """A batch as `captioner.data.coco.collate_captions` makes it: inputs (B, ...) (images or
    cached features), `captions_per_image` captions per image sharing its input → captions
    (N, T), lengths (N,), image_index (N,), N = B·captions_per_image. `lengths` (N token
    counts) replaces the drawn ones, e.g. to time the longest captions."""
    B = len(inputs)
    lengths = lengths or caption_lengths(B * captions_per_image, generator)
    captions = random_captions(lengths, vocab_size, generator)
    padded = torch.zeros(len(captions), max(lengths), dtype=torch.long)
    for row, caption in enumerate(captions):
        padded[row, : len(caption)] = torch.tensor(caption)
    return {
        "indices": torch.arange(B),
        "inputs": inputs,
        "captions": padded,
        "lengths": torch.tensor(lengths),
        "image_index": torch.arange(B).repeat_interleave(captions_per_image),
    }


def tutorial_batch(count: int, vocab_size: int, generator: torch.Generator,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` caption items the tutorial's way: captions (N, 52) padded to the data files'
    width and lengths (N, 1), on `device`."""
    lengths = caption_lengths(count, generator)
    captions = tutorial.pad_captions(random_captions(lengths, vocab_size, generator))
    return captions.to(device), torch.tensor(lengths).unsqueeze(1).to(device)


def random_images(count: int, sizes: Sizes, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """Normalised-looking pixels (count, 3, S, S) on `device`."""
    return torch.randn(count, 3, sizes.image_size, sizes.image_size, generator=generator).to(device)


def random_features(count: int, sizes: Sizes, device: torch.device, generator: torch.Generator,
                    dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Cached-feature-like (count, P, D) non-negative values (ReLU outputs) on `device`."""
    features = torch.rand(count, sizes.grid**2, sizes.feature_dim, generator=generator)
    return features.to(device=device, dtype=dtype)
