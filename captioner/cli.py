"""The `captioner` command: train, caption, shapes, evaluate, export.

Exit codes: 0 success; 1 some inputs failed (each reported); 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from captioner.config import load_config  # noqa: PLC0415 - keep `--help` fast
    from captioner.training import fit  # noqa: PLC0415

    config = load_config(args.config, args.set)
    run_dir = fit(config, resume=args.resume)
    print(f"run folder: {run_dir}")
    return 0


def _caption(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from captioner.decoding import greedy_decode  # noqa: PLC0415
    from captioner.images import ImageLoadError, load_image  # noqa: PLC0415
    from captioner.training import load_model, resolve_device  # noqa: PLC0415

    device = resolve_device(args.device)
    model, vocab, _ = load_model(args.checkpoint, device)
    failures = 0
    for path in args.images:
        try:
            pixels = model.encoder.preprocess(load_image(path)).unsqueeze(0).to(device)
        except ImageLoadError as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
            continue
        with torch.no_grad():
            (decoded,) = greedy_decode(model.decoder, model.encoder(pixels), vocab.start_id, vocab.end_id,
                                       args.max_len)
        print(f"{path}\t{vocab.decode_text(decoded.tokens)}")
    if failures:
        print(f"{failures} of {len(args.images)} images failed", file=sys.stderr)
    return 1 if failures else 0


def _shapes(args: argparse.Namespace) -> int:
    from captioner.data.shapes import generate  # noqa: PLC0415

    splits = {}
    for part in args.splits.split(","):
        name, _, share = part.partition("=")
        try:
            splits[name.strip()] = float(share)
        except ValueError:
            print(f"error: --splits {args.splits!r}: expected name=share,... e.g. train=0.8,val=0.1,test=0.1",
                  file=sys.stderr)
            return 2
    summary = generate(args.out, args.num_images, args.seed, splits=splits, image_size=args.image_size,
                       workers=args.workers, progress=not args.quiet)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from captioner.config import DataConfig  # noqa: PLC0415
    from captioner.data.coco import load_split  # noqa: PLC0415
    from captioner.evaluation import SHAPES_OBJECTS, decode_records, score_captions, shapes_scores, write_results  # noqa: PLC0415
    from captioner.training import load_model, resolve_device  # noqa: PLC0415

    device = resolve_device(args.device)
    model, vocab, config = load_model(args.checkpoint, device)
    data = DataConfig(root=args.data_root, split_file=args.split_file)
    records = load_split(data, args.split)[: args.max_images]
    decoded = decode_records(model, vocab, records, device, args.max_len, batch_size=args.batch_size,
                             num_workers=args.num_workers, progress=not args.quiet)
    texts = {i: vocab.decode_text(c.tokens) for i, c in decoded.items()}
    report = {
        "checkpoint": str(args.checkpoint or "bundled"),
        "split": args.split,
        "num_images": len(records),
        "decoding": {"method": "greedy", "max_len": args.max_len},
        "metrics": score_captions(records, texts),
    }
    objects_file = Path(args.data_root) / SHAPES_OBJECTS
    if objects_file.is_file():
        report["shapes"] = shapes_scores(decoded, vocab, objects_file, config.model.encoder.grid)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_results(texts, output.with_name(output.stem + "_results.json"))
    output.write_text(json.dumps(report, indent=1))
    for section in ("metrics", "shapes"):
        for name, value in report.get(section, {}).items():
            print(f"{name:32s} {value:10.4f}")
    print(f"scores: {output}  results: {output.with_name(output.stem + '_results.json')}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from captioner.checkpoint import export_checkpoint  # noqa: PLC0415

    evaluation = json.loads(Path(args.scores).read_text()) if args.scores else None
    path = export_checkpoint(args.checkpoint, args.output, evaluation)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by what the user passed: reported in one line, without a traceback."""
    from captioner.backbones import WeightsUnavailableError  # noqa: PLC0415
    from captioner.checkpoint import CheckpointError  # noqa: PLC0415
    from captioner.config import ConfigError  # noqa: PLC0415
    from captioner.data.coco import DatasetError  # noqa: PLC0415
    from captioner.images import ImageLoadError  # noqa: PLC0415

    return ConfigError, CheckpointError, DatasetError, ImageLoadError, WeightsUnavailableError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captioner", description="Show, Attend and Tell image captioning.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a model from a config",
        description="Train with teacher forcing; checkpoints, metrics.jsonl and config.yaml go to output_dir.",
    )
    train.add_argument("--config", required=True, help="recipe YAML, e.g. configs/shapes.yaml")
    train.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="override config keys, e.g. --set train.epochs=3 data.root=/data/coco")
    train.add_argument("--resume", help="checkpoint_last.pt of an interrupted run to continue exactly")
    train.set_defaults(run=_train)

    caption = commands.add_parser("caption", help="caption image files",
                                  description="Print 'path<TAB>caption' for every image (greedy decoding).")
    caption.add_argument("images", nargs="+", help="image files")
    caption.add_argument("--checkpoint", help="a checkpoint written by train (default: the bundled shapes model)")
    caption.add_argument("--max-len", type=int, default=20, help="maximum words per caption (default 20)")
    caption.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    caption.set_defaults(run=_caption)

    shapes = commands.add_parser(
        "shapes", help="generate the synthetic shapes world",
        description="Write a shapes dataset in the official COCO layout (images, annotations/captions_*.json, "
                    "annotations/shapes_objects.json) plus a Karpathy-style dataset_shapes.json. "
                    "The same seed gives byte-identical files.",
    )
    shapes.add_argument("--out", required=True, help="output folder")
    shapes.add_argument("--num-images", type=int, default=10_000, help="number of images (default 10000)")
    shapes.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    shapes.add_argument("--splits", default="train=0.8,val=0.1,test=0.1",
                        help="shares of each split (default train=0.8,val=0.1,test=0.1; a test-only set: test=1)")
    shapes.add_argument("--image-size", type=int, default=224, help="image side in pixels (default 224)")
    shapes.add_argument("--workers", type=int, default=2, help="processes drawing images (default 2)")
    shapes.add_argument("--quiet", action="store_true", help="no progress bar")
    shapes.set_defaults(run=_shapes)

    evaluate = commands.add_parser(
        "evaluate", help="caption a split and score it",
        description="Decode every image of a split and score the captions with COCO metrics (BLEU-1..4, "
                    "ROUGE-L, CIDEr-D; pure-Python tokenizer). On a shapes dataset it also reports object "
                    "recall, hallucination rate and attention grounding.",
    )
    evaluate.add_argument("--checkpoint", help="checkpoint to evaluate (default: the bundled shapes model)")
    evaluate.add_argument("--data-root", required=True, help="COCO-layout folder (annotations/, train2014/, val2014/)")
    evaluate.add_argument("--split-file", help="Karpathy split JSON (default: the official val2014 captions)")
    evaluate.add_argument("--split", default="test", help="split to score (default test)")
    evaluate.add_argument("--max-images", type=int, help="score only the first N images")
    evaluate.add_argument("--max-len", type=int, default=20, help="maximum words per caption (default 20)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--num-workers", type=int, default=2, help="image loading processes (default 2)")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    evaluate.add_argument("--output", default="scores.json",
                          help="scores JSON (default scores.json); the captions go beside it as *_results.json")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=_evaluate)

    export = commands.add_parser(
        "export", help="strip a training checkpoint down to what captioning needs",
        description="Copy a checkpoint without optimizer/scheduler/RNG state, optionally attaching the "
                    "scores JSON written by `captioner evaluate` so that the model carries its measured figures.",
    )
    export.add_argument("checkpoint", help="checkpoint written by train")
    export.add_argument("output", help="where to write the captioning-only checkpoint")
    export.add_argument("--scores", help="scores JSON from `captioner evaluate` to attach")
    export.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as error:
        if not isinstance(error, _user_errors()):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
