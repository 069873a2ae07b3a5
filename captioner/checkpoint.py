"""Self-describing checkpoints: plain types and tensors only, written atomically.

A checkpoint holds everything needed to caption (model config, vocabulary, weights) and,
optionally, everything needed to resume training exactly (optimizer, scheduler, RNG states,
step, epoch, best score). It loads with `torch.load(weights_only=True)`: no pickled code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from captioner.atomic import AtomicFile

FORMAT = "captioner-checkpoint"
VERSION = 1
# The default model trained on the shapes world (README: "The bundled model").
BUNDLED_CHECKPOINT = Path(__file__).parent / "assets" / "shapes.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not one of ours; the message names the file."""


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write `payload` to `path` atomically: a crash mid-write leaves any old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    with AtomicFile(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def load_checkpoint(path: str | Path | None, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` (None: the bundled model), with a clear
    error for bad files."""
    path = Path(path) if path is not None else BUNDLED_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged file fails in many ways inside the unpickler
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt, truncated or not a "
            f"captioner checkpoint ({first_line})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a captioner checkpoint")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer captioner (format version {payload['version']}); "
            "upgrade captioner to read it"
        )
    return payload


def export_checkpoint(source: str | Path, destination: str | Path, evaluation: dict | None = None) -> Path:
    """A captioning-only copy of a training checkpoint: training state dropped, and the
    measured `evaluation` figures (e.g. a scores JSON from `captioner evaluate`) attached."""
    payload = load_checkpoint(source)
    kept = {key: payload[key] for key in ("config", "vocab", "model", "scores") if key in payload}
    if evaluation is not None:
        kept["evaluation"] = evaluation
    return save_checkpoint(kept, destination)
