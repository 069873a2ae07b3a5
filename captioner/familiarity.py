"""Does an image look like the images a model was trained on? Decided from the encoder's features.

The bundled model only knows the shapes world, and it describes a photo as coloured shapes all
the same. The demo says so plainly, and decides it from the model's own encoder rather than from
a second model: an image's descriptor is the mean, over the grid cells, of each encoder feature
channel (D numbers: roughly, which visual patterns the picture holds). `fit` estimates the mean
and covariance of that descriptor over training images (shrunk 1% towards its diagonal, so it is
well conditioned); an image's `score` is its Mahalanobis distance from that mean divided by √D
(about 1 for a typical training image), and the threshold is a high percentile (99.5th) of the
scores of *validation* images, which the statistics never saw. So, by construction, about 1 in
200 images of the training distribution is flagged, and the threshold owes nothing to photos.

    python -m captioner.familiarity build                 # the bundled model's asset from data/shapes
    python -m captioner.familiarity score photo.jpg ...   # print each image's score and verdict

The statistics belong to one encoder (its config and its weights): `matches` checks both, so a
model with another backbone, or a fine-tuned encoder, never gets the shapes statistics.
Letters: B images, P grid cells, D feature channels.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from captioner.atomic import AtomicFile

ASSET = Path(__file__).resolve().parent / "assets" / "shapes_familiarity.json"
FORMAT = 1
DEFAULT_PERCENTILE = 99.5
# Train images for the statistics: well over D = 80 descriptor dimensions for the covariance, and
# keep the build to a couple of minutes on a 2-core CPU.
DEFAULT_TRAIN_IMAGES = 1500
# Share of the covariance replaced by its diagonal: keeps it invertible when channels are
# nearly collinear (or constant: dead ReLUs).
SHRINKAGE = 0.01
# Added to the diagonal, so a channel that is constant over the training images cannot turn a
# tiny difference into a huge distance.
RIDGE = 1e-6
DIGITS = 5  # significant digits kept in the JSON asset: far finer than the descriptors' spread


@dataclass(frozen=True)
class FamiliarityStats:
    """Descriptor statistics of one encoder over one training set, and the decision threshold.

    `encoder` is the encoder's config as a dict and `fingerprint` a hash of its weights;
    `mean` (D,) is the training descriptors' mean and `whitening` (D, D) a lower-triangular L
    with L Lᵀ = the inverse of their covariance; an image is unfamiliar when its score exceeds
    `threshold`. `source` says what the statistics were computed from (no machine paths).
    """

    encoder: dict
    fingerprint: str
    mean: np.ndarray
    whitening: np.ndarray
    threshold: float
    percentile: float
    source: dict

    def score(self, features: torch.Tensor) -> np.ndarray:
        """(B,) scores of encoder features (B, P, D): 0 is the training images' average."""
        return self.score_descriptors(descriptors(features))

    def score_descriptors(self, rows: np.ndarray) -> np.ndarray:
        """(B,) scores of descriptors (B, D): Mahalanobis distance from the mean / √D."""
        whitened = (rows - self.mean) @ self.whitening  # ‖(x − m)ᵀ L‖² = (x − m)ᵀ C⁻¹ (x − m)
        return np.sqrt(np.sum(whitened * whitened, axis=1) / len(self.mean))

    def familiar(self, features: torch.Tensor) -> np.ndarray:
        """(B,) booleans: whether each image scores at or under the threshold."""
        return self.score(features) <= self.threshold


def descriptors(features: torch.Tensor | np.ndarray) -> np.ndarray:
    """(B, D) float64: each channel's mean over the P grid cells of features (B, P, D)."""
    features = torch.as_tensor(features).detach().to("cpu", torch.float64)
    if features.ndim != 3:
        raise ValueError(f"features must be (B, P, D), got shape {tuple(features.shape)}")
    return features.mean(1).numpy()


def fit(train: np.ndarray, val: np.ndarray, encoder: dict, fingerprint: str,
        percentile: float = DEFAULT_PERCENTILE, source: dict | None = None) -> FamiliarityStats:
    """Statistics from train descriptors (N, D); the threshold from val descriptors (M, D).

    Mean and whitening are rounded as the JSON asset stores them before the threshold is set,
    so a loaded asset gives exactly the scores the threshold was chosen on.
    """
    if len(train) <= train.shape[1] or len(val) < 1:
        raise ValueError(f"need more train descriptors than dimensions ({train.shape[1]}) and at least 1 val "
                         f"descriptor, got {len(train)} and {len(val)}")
    covariance = np.cov(train, rowvar=False)
    covariance = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.diag(np.diag(covariance))
    covariance += RIDGE * np.eye(len(covariance))
    whitening = np.linalg.cholesky(np.linalg.inv(covariance))
    mean, whitening = _rounded(train.mean(0)), np.tril(_rounded(whitening))
    unthresholded = FamiliarityStats(encoder, fingerprint, mean, whitening, float("inf"), percentile, source or {})
    val_scores = unthresholded.score_descriptors(val)
    threshold = float(np.percentile(val_scores, percentile))
    return dataclasses.replace(unthresholded, threshold=threshold)


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """16 hex digits of a SHA-256 over the encoder's parameters and buffers, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def matches(stats: FamiliarityStats, encoder_config, encoder: torch.nn.Module) -> bool:
    """Whether `stats` were computed with this encoder: same config and same weights."""
    return stats.encoder == dataclasses.asdict(encoder_config) and stats.fingerprint == encoder_fingerprint(encoder)


def save(stats: FamiliarityStats, path: str | Path) -> Path:
    """Write `stats` as a small JSON file, atomically."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "what": "encoder feature statistics of a training set, for captioner.familiarity",
        "encoder": stats.encoder,
        "fingerprint": stats.fingerprint,
        "descriptor": "per-channel mean of the encoder features over the grid cells (D numbers)",
        "score": "sqrt(|(x - mean) @ whitening|^2 / D): Mahalanobis distance / sqrt(D); above threshold = unfamiliar",
        "threshold": stats.threshold,
        "percentile": stats.percentile,
        "source": stats.source,
        "mean": stats.mean.tolist(),
        # lower triangle only, row i holding i + 1 numbers: half the size of the full matrix
        "whitening": [row[: i + 1].tolist() for i, row in enumerate(stats.whitening)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(path, "w") as handle:
        handle.write(json.dumps(payload, indent=1) + "\n")
    return path


def load(path: str | Path = ASSET) -> FamiliarityStats:
    """Statistics written by `save`; raises ValueError naming the file if it is not one."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
        if payload.get("format") != FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, expected {FORMAT}")
        rows = payload["whitening"]
        whitening = np.zeros((len(rows), len(rows)))
        for i, row in enumerate(rows):
            whitening[i, : i + 1] = row
        return FamiliarityStats(payload["encoder"], payload["fingerprint"],
                                np.asarray(payload["mean"], dtype=np.float64), whitening,
                                float(payload["threshold"]), float(payload["percentile"]), payload["source"])
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a familiarity statistics file ({error})") from error


def _rounded(values: np.ndarray) -> np.ndarray:
    """`values` to `DIGITS` significant digits, as the JSON asset stores them."""
    return np.vectorize(lambda v: float(f"{v:.{DIGITS}g}"))(values).astype(np.float64)


@torch.no_grad()
def encode_files(captioner, paths: Sequence[str | Path], batch_size: int = 32, label: str = "images",
                 cache_root: str | Path | None = None) -> np.ndarray:
    """Descriptors (N, D) of image files, through `captioner`'s own preprocessing and encoder.

    With `cache_root`, images already in a complete feature cache of this encoder under it
    (`captioner.feature_cache`, as training writes them) are read from there instead.
    """
    cached = _cached_descriptors(cache_root, captioner.config.model.encoder, paths) if cache_root else {}
    missing = [path for path in paths if str(path) not in cached]
    if cached:
        print(f"{label}: {len(paths) - len(missing)} of {len(paths)} images read from the feature cache",
              file=sys.stderr)
    encoded = dict(zip(map(str, missing), _encode_files(captioner, missing, batch_size, label))) if missing else {}
    return np.stack([cached[str(path)] if str(path) in cached else encoded[str(path)] for path in paths])


def _cached_descriptors(cache_root: str | Path, encoder_config, paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Image path → descriptor, for the `paths` found in complete feature caches of this encoder."""
    from captioner import feature_cache  # noqa: PLC0415 - only needed with a cache

    wanted, found = {str(path) for path in paths}, {}
    for index_file in sorted(Path(cache_root).glob(f"*/{feature_cache.INDEX}")):
        index = json.loads(index_file.read_text())
        if index.get("encoder") != dataclasses.asdict(encoder_config) or index.get("completed") != index["shape"][0]:
            continue
        rows = [(row, path) for row, path in enumerate(index["images"]) if path in wanted and path not in found]
        if rows:
            features = feature_cache.read(index_file.parent)
            for first in range(0, len(rows), 256):
                chunk = rows[first:first + 256]
                values = descriptors(features[[row for row, _ in chunk]].float())
                found.update((path, value) for (_, path), value in zip(chunk, values))
    return found


def _encode_files(captioner, paths: Sequence[str | Path], batch_size: int, label: str) -> np.ndarray:
    rows, start = [], time.monotonic()
    for first in range(0, len(paths), batch_size):
        pixels = torch.stack([captioner.preprocess(path) for path in paths[first:first + batch_size]])
        rows.append(descriptors(captioner.model.encoder(pixels.to(captioner.device))))
        done = min(first + batch_size, len(paths))
        print(f"\r{label}: {done}/{len(paths)} encoded ({time.monotonic() - start:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    return np.concatenate(rows)


def build(captioner, data_root: str | Path, train_images: int = DEFAULT_TRAIN_IMAGES,
          percentile: float = DEFAULT_PERCENTILE, val_images: int | None = None,
          cache_root: str | Path | None = None) -> tuple[FamiliarityStats, np.ndarray]:
    """Statistics of `captioner`'s encoder on a shapes world's train split (every k-th image,
    about `train_images` of them), thresholded on its val split (the first `val_images`, or
    all); also returns the val scores. `cache_root`: see `encode_files`."""
    from captioner.data.coco import load_split  # noqa: PLC0415 - pycocotools is slow to import

    root = Path(data_root)
    data = dataclasses.replace(captioner.config.data, format="coco", root=str(root),
                               split_file=str(root / "dataset_shapes.json"))
    train_records, val_records = load_split(data, "train"), load_split(data, "val")
    step = max(1, len(train_records) // max(1, train_images))
    train_paths = [r.path for r in train_records[::step]][:train_images]
    val_paths = [r.path for r in val_records][:val_images]
    train = encode_files(captioner, train_paths, label="train", cache_root=cache_root)
    val = encode_files(captioner, val_paths, label="val", cache_root=cache_root)
    source = {"dataset": "shapes world", "split_file": "dataset_shapes.json",
              "train_images": len(train_paths), "train_every": step, "val_images": len(val_paths)}
    stats = fit(train, val, dataclasses.asdict(captioner.config.model.encoder),
                encoder_fingerprint(captioner.model.encoder), percentile, source)
    return stats, stats.score_descriptors(val)


def main(argv: Sequence[str] | None = None) -> int:
    """`build` the statistics file of a model, or `score` images against one."""
    from captioner.inference import Captioner  # noqa: PLC0415 - keeps `import captioner.familiarity` light

    parser = argparse.ArgumentParser(prog="python -m captioner.familiarity", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="compute the statistics of a model's encoder on a shapes world")
    build_parser.add_argument("--data", default="data/shapes", help="shapes world folder (default: %(default)s)")
    build_parser.add_argument("--out", default=str(ASSET), help="JSON file to write (default: the bundled asset)")
    build_parser.add_argument("--train-images", type=int, default=DEFAULT_TRAIN_IMAGES)
    build_parser.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE)
    build_parser.add_argument("--val-images", type=int, default=None,
                              help="use the first N val images for the threshold (default: all)")
    build_parser.add_argument("--feature-cache", default=None,
                              help="read images already encoded from this feature cache folder "
                                   "(e.g. runs/seeds/features, as training writes it)")
    score_parser = commands.add_parser("score", help="print each image's score and whether it looks familiar")
    score_parser.add_argument("images", nargs="+")
    score_parser.add_argument("--stats", default=str(ASSET), help="statistics file (default: the bundled asset)")
    for sub in (build_parser, score_parser):
        sub.add_argument("--checkpoint", default=None, help="model whose encoder to use (default: the bundled one)")
    args = parser.parse_args(argv)

    captioner = Captioner.load(args.checkpoint, "cpu")
    if args.command == "build":
        stats, val_scores = build(captioner, args.data, args.train_images, args.percentile, args.val_images,
                                  args.feature_cache)
        save(stats, args.out)
        print(f"wrote {args.out}: threshold {stats.threshold:.3f} ({stats.percentile}th percentile of "
              f"{len(val_scores)} val images; val median {np.median(val_scores):.3f}, max {val_scores.max():.3f})")
        return 0
    stats = load(args.stats)
    if not matches(stats, captioner.config.model.encoder, captioner.model.encoder):
        print(f"error: {args.stats} belongs to another encoder than this model's", file=sys.stderr)
        return 2
    scores = stats.score(torch.from_numpy(np.concatenate(
        [_features(captioner, path) for path in args.images])))
    for path, value in zip(args.images, scores):
        print(f"{value:8.3f}  {'familiar' if value <= stats.threshold else 'UNFAMILIAR'}  {path}")
    return 0


@torch.no_grad()
def _features(captioner, path: str | Path) -> np.ndarray:
    return captioner.model.encoder(captioner.preprocess(path)[None].to(captioner.device)).cpu().numpy()


if __name__ == "__main__":
    sys.exit(main())
