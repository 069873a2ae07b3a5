"""Self-describing checkpoints: plain types and tensors only, written atomically.

A checkpoint holds everything needed to caption (model config, vocabulary, weights) and,
optionally, everything needed to resume training exactly (optimizer, scheduler, RNG states,
step, epoch, best score). It loads with `torch.load(weights_only=True)`: no pickled code.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from captioner.atomic import AtomicFile

FORMAT = "captioner-checkpoint"
VERSION = 1
# The default model trained on the shapes world (docs/shapes-world.md).
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


def export_checkpoint(source: str | Path, destination: str | Path, evaluation: dict | None = None,
                      data_origin: str | None = None) -> Path:
    """A captioning-only copy of a training checkpoint: training state dropped, the measured
    `evaluation` figures (e.g. a scores JSON from `captioner evaluate`) and `data_origin` (how the
    training data was made or where it came from, e.g. the `captioner shapes` command) attached.

    An exported checkpoint is meant to be shared, so no path of the machine that built it goes
    in: paths under the working directory become relative, others keep only their tail."""
    payload = load_checkpoint(source)
    kept = {key: payload[key] for key in ("config", "vocab", "model", "scores", "data_origin") if key in payload}
    if evaluation is not None:
        kept["evaluation"] = evaluation
    if data_origin is not None:
        kept["data_origin"] = data_origin
    tensors = kept.pop("model")
    kept = without_machine_paths(kept, Path.cwd())
    return save_checkpoint({**kept, "model": tensors}, destination)


# an absolute POSIX path: "/" not preceded by a word character, then path characters
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/[\w.+@-]+(?:/[\w.+@-]+)*/?")


def without_machine_paths(value, root: Path):
    """`value` (plain types) with every absolute path in its strings rewritten: relative to `root`
    when under it, from `site-packages/` on for installed files, else `…/` and the last two parts."""
    if isinstance(value, dict):
        return {key: without_machine_paths(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(without_machine_paths(item, root) for item in value)
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(lambda match: _portable(match.group(0), root), value)
    return value


def _portable(path: str, root: Path) -> str:
    resolved = Path(path)
    if resolved.is_relative_to(root):
        return str(resolved.relative_to(root)) or "."
    parts = resolved.parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages"):])
    return "…/" + "/".join(parts[-2:])
