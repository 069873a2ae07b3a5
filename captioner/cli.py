"""The `captioner` command: train, caption, shapes.

Exit codes: 0 success; 1 some inputs failed (each reported); 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys


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
    caption.add_argument("--checkpoint", required=True, help="a checkpoint written by train")
    caption.add_argument("--max-len", type=int, default=20, help="maximum words per caption (default 20)")
    caption.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    caption.set_defaults(run=_caption)
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
