"""The Python API that the batch CLI, evaluation and the demo are thin layers over.

    from captioner import Captioner
    captioner = Captioner.load()                      # None: the bundled shapes model
    for result in captioner.caption(["photo.jpg"], beam_size=3):
        print(result.text, result.score)              # result.attention: (T, h, w), one map per word

Letters: B batch, T caption length, h×w attention grid.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import to_pil_image

from captioner.checkpoint import load_checkpoint
from captioner.config import Config, from_dict
from captioner.decoding import DecodedCaption, DecodingOptions, beam_search
from captioner.images import ImageLoadError, Preprocess, load_image
from captioner.model import CaptionModel
from captioner.device import resolve_device
from captioner.vocab import Vocabulary

ImageInput = str | Path | Image.Image | torch.Tensor


@dataclass
class CaptionResult:
    """The caption of one image (or, with `error` set, why it has none).

    `score` is the ranking score (log-probability after the length penalty), `log_prob` the
    plain log-probability; `attention` (T, h, w) holds one map per word of `words`;
    `alternatives` the next best hypotheses when more than one was asked for.
    """

    source: str
    text: str = ""
    words: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    score: float = float("nan")
    log_prob: float = float("nan")
    attention: torch.Tensor | None = None
    finished: bool = False
    alternatives: list[CaptionResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _ImageFiles(Dataset):
    """Image files → (index, pixels (3, S, S) or None, error or None); never raises, so that
    one unreadable file becomes one error record instead of stopping the loader."""

    def __init__(self, paths: Sequence[str | Path], preprocess: Preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, self.preprocess(load_image(self.paths[index])), None
        except ImageLoadError as error:
            return index, None, str(error)
        except Exception as error:  # a worker must survive any file, whatever the decoder throws
            return index, None, f"{self.paths[index]}: cannot read ({type(error).__name__}: {error})"


def _collate(items):
    return items


class Captioner:
    """A trained model with its vocabulary, ready to caption images on one device."""

    def __init__(self, model: CaptionModel, vocab: Vocabulary, config: Config, device: torch.device,
                 checkpoint: str = "bundled", evaluation: dict | None = None, data_origin: str | None = None):
        self.model, self.vocab, self.config, self.device = model.eval(), vocab, config, device
        self.checkpoint, self.evaluation = checkpoint, evaluation or {}
        self.data_origin = data_origin  # how the training data was made, when the checkpoint says

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | torch.device = "auto",
             quantize: bool = False) -> Captioner:
        """A checkpoint written by `captioner train` or `export` (None: the bundled shapes model).
        `quantize`: int8 decoder weights, for CPUs (see `quantize_decoder`)."""
        device = resolve_device(device)
        payload = load_checkpoint(checkpoint)
        model, vocab, config = model_from_checkpoint(payload, device)
        if quantize:
            quantize_decoder(model)
        return cls(model, vocab, config, device, str(checkpoint) if checkpoint else "bundled",
                   payload.get("evaluation"), payload.get("data_origin"))

    @property
    def grid(self) -> int:
        return self.config.model.encoder.grid

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """A path, PIL image or image tensor ((3, H, W) floats in [0, 1] or uint8) → pixels (3, S, S)."""
        if isinstance(image, torch.Tensor):
            if image.ndim != 3 or image.shape[0] not in (1, 3):
                raise ValueError(f"an image tensor must be (3, H, W) or (1, H, W), got {tuple(image.shape)}")
            image = to_pil_image(image.cpu())
        return self.model.encoder.preprocess(load_image(image))

    @torch.no_grad()
    def caption_pixels(self, pixels: torch.Tensor, options: DecodingOptions,
                       sources: Sequence[str] | None = None) -> list[CaptionResult]:
        """Preprocessed pixels (B, 3, S, S) → B results, encoded and decoded as one batch."""
        return self.caption_features(self.model.encoder(pixels.to(self.device, non_blocking=True)), options, sources)

    @torch.no_grad()
    def caption_features(self, features: torch.Tensor, options: DecodingOptions,
                         sources: Sequence[str] | None = None) -> list[CaptionResult]:
        """Encoder features (B, P, D), e.g. from the feature cache → B results."""
        features = features.to(self.device, torch.float32, non_blocking=True)
        hypotheses = beam_search(self.model.decoder, features, self.vocab.start_id, self.vocab.end_id, options,
                                 banned_ids=(self.vocab.pad_id,))
        sources = sources or [str(i) for i in range(len(hypotheses))]
        return [self._result(source, best) for source, best in zip(sources, hypotheses)]

    def caption(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 32,
                **options) -> list[CaptionResult]:
        """Caption images (paths, PIL images or tensors) in batches; `options` are
        DecodingOptions fields (beam_size=3, max_len=20, min_len, length_penalty, top_n).
        Raises ImageLoadError naming the first input that cannot be read."""
        if isinstance(images, (str, Path, Image.Image, torch.Tensor)):
            images = [images]
        decoding = DecodingOptions(**options)
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            pixels = torch.stack([self.preprocess(image) for image in chunk])
            sources = [str(image) if isinstance(image, (str, Path)) else f"<image {start + i}>"
                       for i, image in enumerate(chunk)]
            results += self.caption_pixels(pixels, decoding, sources)
        return results

    def caption_files(self, paths: Sequence[str | Path], options: DecodingOptions, batch_size: int = 32,
                      num_workers: int = 2) -> Iterator[CaptionResult]:
        """Caption files in input order, loading and preprocessing them in `num_workers`
        processes while the model works. A file that cannot be read yields a result with
        `error` set, and the run goes on."""
        loader = DataLoader(_ImageFiles(paths, self.model.encoder.preprocess), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=_collate,
                            pin_memory=self.device.type == "cuda", persistent_workers=False,
                            prefetch_factor=4 if num_workers else None,
                            # its own generator: without one, a DataLoader draws its seed from the
                            # global RNG, so validating from images moved training's dropout masks
                            generator=torch.Generator().manual_seed(0))
        for items in loader:
            readable = [(index, pixels) for index, pixels, _ in items if pixels is not None]
            captioned = {}
            if readable:
                indices, pixels = zip(*readable)
                results = self.caption_pixels(torch.stack(pixels), options, [str(paths[i]) for i in indices])
                captioned = dict(zip(indices, results))
            for index, _, error in items:
                yield captioned[index] if error is None else CaptionResult(source=str(paths[index]), error=error)

    def _result(self, source: str, hypotheses: list[DecodedCaption]) -> CaptionResult:
        best, *others = [self._hypothesis(source, h) for h in hypotheses]
        best.alternatives = others
        return best

    def _hypothesis(self, source: str, decoded: DecodedCaption) -> CaptionResult:
        words = self.vocab.decode(decoded.tokens)
        attention = decoded.attention.reshape(-1, self.grid, self.grid)
        # overlays, grounding and the demo pair words with maps by position
        assert len(words) == len(attention), f"{len(words)} words but {len(attention)} attention maps"
        return CaptionResult(
            source=source,
            text=" ".join(words),
            words=words,
            tokens=decoded.tokens,
            score=decoded.score,
            log_prob=decoded.log_prob,
            attention=attention,
            finished=decoded.finished,
        )


def quantize_decoder(model: CaptionModel) -> None:
    """Swap the decoder's Linear and LSTMCell layers for int8 dynamically quantized ones (CPU only).

    Decoding one image is bound by reading the decoder's weights once per step, not by
    arithmetic, so int8 weights make single-image decoding faster on a CPU (docs/performance.md).
    Scores move, so captions can change: check a model's figures with and without before
    relying on it.
    """
    if any(p.device.type != "cpu" for p in model.decoder.parameters()):
        raise ValueError("quantize: int8 decoding runs on the CPU only; use --device cpu, or no --quantize on a GPU")
    with warnings.catch_warnings():
        # torch marks eager dynamic quantization deprecated in favour of torchao, which is not a
        # dependency here; the eager API is what torch 2.14 ships and tests cover it
        warnings.simplefilter("ignore")
        # attention.energy (A → 1) stays in float: it is tiny, and SoftAttention reads its weight
        qconfig = torch.ao.quantization.default_dynamic_qconfig
        layers = {name: qconfig for name, module in model.decoder.named_modules()
                  if isinstance(module, (torch.nn.Linear, torch.nn.LSTMCell)) and name != "attention.energy"}
        model.decoder = torch.ao.quantization.quantize_dynamic(model.decoder, layers, dtype=torch.qint8)


def load_model(path: str | Path | None, device: torch.device | str = "cpu") -> tuple[CaptionModel, Vocabulary, Config]:
    """A captioning-ready model (eval mode) from a checkpoint file (None: the bundled model)."""
    return model_from_checkpoint(load_checkpoint(path), device)


def model_from_checkpoint(checkpoint: dict, device: torch.device | str = "cpu") -> tuple[CaptionModel, Vocabulary, Config]:
    """A captioning-ready model (eval mode), its vocabulary and config from a loaded checkpoint."""
    config = from_dict(Config, checkpoint["config"])
    vocab = Vocabulary.from_dict(checkpoint["vocab"])
    model = CaptionModel(config.model, len(vocab))
    model.load_portable_state_dict(checkpoint["model"])
    return model.to(device).eval(), vocab, config
