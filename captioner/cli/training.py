"""`captioner train`, `captioner features` (a feature cache to train from) and `captioner export`
(a training checkpoint cut down to what captioning needs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from captioner.cli.errors import UsageError


def add_train_parser(commands) -> None:
    parser = commands.add_parser(
        "train", help="train a model from a config",
        description="Train with teacher forcing; checkpoints, metrics.jsonl and config.yaml go to output_dir.",
    )
    parser.add_argument("--config", required=True, help="recipe YAML, e.g. configs/shapes.yaml")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --set train.epochs=3 data.root=/data/coco")
    parser.add_argument("--resume", help="checkpoint_last.pt of an interrupted run to continue exactly")
    parser.add_argument("--init", metavar="CHECKPOINT",
                        help="start from a trained model (a checkpoint, or 'bundled' for the bundled one) to "
                             "fine-tune it: its model config and vocabulary are used, the vocabulary stays "
                             "fixed (new words train as <unk>, counted), and epochs, optimizer and schedule "
                             "start afresh (docs/own-data.md)")
    parser.set_defaults(run=train)


def train(args: argparse.Namespace) -> int:
    from captioner.config import load_config  # noqa: PLC0415 - imports torch: not for `--help`
    from captioner.training import fit  # noqa: PLC0415

    config = load_config(args.config, args.set)
    run_dir = fit(config, resume=args.resume, init=args.init)
    print(f"run folder: {run_dir}")
    return 0


def add_features_parser(commands) -> None:
    parser = commands.add_parser(
        "features", help="encode a dataset's images once into a feature cache for training",
        description="Encode every image of the given splits with the config's frozen encoder and store the "
                    "features as float16 in DIR/<split>_<key>/: features.f16 (raw (N, P, D) float16, "
                    "memory-mapped by training, never loaded whole) and index.json (encoder config, image "
                    "list, shape, images completed). The key is a hash of the encoder config and the image "
                    "list, so training with the same config finds the cache: pass --set "
                    "data.feature_cache_dir=DIR data.cache_features=true to train. The disk size is printed "
                    "before encoding starts, and the command stops at once if the disk is too small. An "
                    "interrupted run resumes where it stopped when run again; a cache of another encoder "
                    "config or image list is never mixed in (--overwrite replaces it).",
    )
    parser.add_argument("--config", required=True, help="recipe YAML, e.g. configs/coco_resnet101.yaml")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, as for train (the model.encoder keys decide the features)")
    parser.add_argument("--out", required=True, metavar="DIR", help="cache root folder")
    parser.add_argument("--splits", nargs="+", metavar="SPLIT",
                        help="splits to encode (default: the config's data.train_split and data.val_split; "
                             "the val split is capped at data.val_max_images, as in training)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder batch (default 64)")
    parser.add_argument("--num-workers", type=int,
                        help="image loading processes (default: the config's data.num_workers)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete existing caches of these splits and encode again")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=features)


def features(args: argparse.Namespace) -> int:
    from captioner import feature_cache  # noqa: PLC0415 - imports torch: not for `--help`
    from captioner.config import load_config  # noqa: PLC0415
    from captioner.device import resolve_device  # noqa: PLC0415
    from captioner.model import Encoder  # noqa: PLC0415

    config = load_config(args.config, args.set)
    if config.model.encoder.fine_tune:
        raise UsageError(f"model.encoder.fine_tune is {config.model.encoder.fine_tune}: an encoder that trains "
                         "changes its features at every step, so they cannot be cached; use a frozen encoder "
                         "(--set model.encoder.fine_tune=0) or train from images (data.cache_features=false)")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = resolve_device(args.device)
    encoder = Encoder(config.model.encoder).to(device)  # no vocabulary needed: the decoder is not built
    num_workers = config.data.num_workers if args.num_workers is None else args.num_workers
    out = Path(args.out).resolve()
    try:
        for name, records in _feature_splits(config, args.splits):
            cached = feature_cache.open_or_build(
                encoder, config.model.encoder, records, out, name, device, batch_size=args.batch_size,
                num_workers=num_workers, amp=config.train.amp, overwrite=args.overwrite, progress=not args.quiet)
            N, P, D = cached.shape
            folder = feature_cache.cache_folder(out, name, config.model.encoder, records)
            print(f"{name}: {folder} ({N} images x {P} cells x {D} features, "
                  f"{feature_cache.human_size(feature_cache.size_estimate(N, P, D))})")
    except KeyboardInterrupt:
        print("interrupted: the images encoded so far are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    print(f"to train on these features, pass the same --config and --set options to train, plus:\n"
          f"  --set data.feature_cache_dir={out} data.cache_features=true")
    return 0


def _feature_splits(config, splits: list[str] | None):
    """(cache name, records) of each split, named and cut as fit() does for its own caches, so
    that training finds them: the config's val split is capped at data.val_max_images."""
    from captioner.data.coco import load_split  # noqa: PLC0415

    if not splits:
        splits = [config.data.train_split, config.data.val_split]
    for split in dict.fromkeys(splits):  # a split named twice is encoded once
        if split == config.data.train_split:
            yield "train", load_split(config.data, split)
        elif split == config.data.val_split:
            yield "val", load_split(config.data, split)[: config.data.val_max_images]
        else:
            yield split, load_split(config.data, split)


def add_export_parser(commands) -> None:
    parser = commands.add_parser(
        "export", help="strip a training checkpoint down to what captioning needs",
        description="Copy a checkpoint without optimizer/scheduler/RNG state, optionally attaching the "
                    "scores JSON written by `captioner evaluate` so that the model carries its measured figures. "
                    "Paths of this machine are not copied: those under the current folder become relative.",
    )
    parser.add_argument("checkpoint", help="checkpoint written by train")
    parser.add_argument("output", help="where to write the captioning-only checkpoint")
    parser.add_argument("--scores", help="scores JSON from `captioner evaluate` to attach")
    parser.add_argument("--data-origin", metavar="TEXT",
                        help="how the training data was made or where it came from, shown with the model "
                             "(e.g. 'captioner shapes --out data/shapes --num-images 20000 --seed 0')")
    parser.set_defaults(run=export)


def export(args: argparse.Namespace) -> int:
    from captioner.checkpoint import export_checkpoint  # noqa: PLC0415 - imports torch: not for `--help`

    evaluation = json.loads(Path(args.scores).read_text()) if args.scores else None
    path = export_checkpoint(args.checkpoint, args.output, evaluation, args.data_origin)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0
