"""Stand-ins shared by the evaluation tests: hand tokenization of plain captions, and a
captioner whose captions and attention are fixed in advance, so every figure is known."""

from pathlib import Path

import torch

from captioner.inference import CaptionResult


def hand_tokens(caption: str) -> str:
    """The COCO tokens of a caption made of plain words, commas and a full stop (shapes captions,
    decoded captions): lower-cased words; pycocoevalcap's punctuation list drops the rest."""
    return " ".join(caption.lower().replace(",", " ").replace(".", " ").split())


class FixedCaptioner:
    """Stands in for a model: captions each image file with a given caption and attends uniformly
    over a 7x7 grid."""

    checkpoint = "fixed captions"

    def __init__(self, captions_by_file: dict[str, str]):
        self.captions_by_file = captions_by_file

    def caption_files(self, paths, options, batch_size, num_workers):
        for path in paths:
            text = self.captions_by_file[Path(path).name]
            words = hand_tokens(text).split()
            # One map per word plus the one that produced <end>, as the model gives them.
            yield CaptionResult(source=str(path), text=text, words=words,
                                attention=torch.full((len(words) + 1, 7, 7), 1 / 49))


def crash_on_call(monkeypatch, module, name: str, call: int) -> None:
    """Make `module.name` raise RuntimeError("crash") on its `call`-th call (1-based): a run
    dying mid-way, for the exact-resume tests."""
    real = getattr(module, name)
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise RuntimeError("crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, crashing)
