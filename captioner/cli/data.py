"""`captioner shapes` (make the synthetic shapes world) and `captioner coco` (download COCO 2014,
check it, reproduce the paper on it)."""

from __future__ import annotations

import argparse
import json
import sys


def add_shapes_parser(commands) -> None:
    parser = commands.add_parser(
        "shapes", help="generate the synthetic shapes world",
        description="Write a shapes dataset in the official COCO layout (images, annotations/captions_*.json, "
                    "annotations/shapes_objects.json, annotations/instances_*.json) plus a Karpathy-style dataset_shapes.json. "
                    "The same seed gives byte-identical files.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-images", type=int, default=20_000,
                        help="number of images (default 20000, the bundled model's world)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--splits", default="train=0.8,val=0.1,test=0.1",
                        help="shares of each split (default train=0.8,val=0.1,test=0.1; a test-only set: test=1)")
    parser.add_argument("--image-size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--workers", type=int, default=2, help="processes drawing images (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=shapes)


def shapes(args: argparse.Namespace) -> int:
    from captioner.data.shapes import generate  # noqa: PLC0415 - imports numpy and PIL: not for `--help`

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


def add_coco_parser(commands) -> None:
    parser = commands.add_parser(
        "coco", help="download COCO 2014 and reproduce the paper",
        description="COCO 2014 for users who are online: download (resumable, checksummed), check what is "
                    "present, or reproduce: download if missing → train the recipe → evaluate the Karpathy test "
                    "split with beam search → write the run report. Every stage skips what is already done.",
    )
    coco_commands = parser.add_subparsers(dest="coco_command", required=True)
    download = coco_commands.add_parser("download", help="fetch and unpack COCO 2014 + Karpathy's split file")
    check = coco_commands.add_parser("check", help="say what COCO data a folder holds (exit 1 if incomplete)")
    reproduce = coco_commands.add_parser("reproduce", help="data → train → evaluate → report, resumable")
    for sub in (download, check, reproduce):
        sub.add_argument("--root", required=True, help="COCO folder (gets annotations/, train2014/, val2014/, "
                                                       "dataset_coco.json; downloads/ keeps the archives)")
    for sub in (download, reproduce):
        sub.add_argument("--mirror", help="base URL or local folder holding the archives, instead of the "
                                          "official hosts")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
    download.add_argument("--files", nargs="+", help="only these archives (e.g. annotations_trainval2014.zip)")
    reproduce.add_argument("--config", default="configs/coco_resnet101.yaml",
                           help="recipe to train (default configs/coco_resnet101.yaml)")
    reproduce.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    reproduce.add_argument("--beam-size", type=int, default=3, help="beam width for the test scores (default 3)")
    reproduce.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    parser.set_defaults(run=coco)


def coco(args: argparse.Namespace) -> int:
    from captioner.coco_download import check_coco, download_coco, format_check  # noqa: PLC0415

    if args.coco_command == "check":
        report = check_coco(args.root)
        print(format_check(report))
        return 0 if report["complete"] else 1
    if args.coco_command == "download":
        report = download_coco(args.root, mirror=args.mirror, files=args.files, progress=not args.quiet)
        print(format_check(report["check"]))
        return 0
    from captioner.reproduce import reproduce  # noqa: PLC0415 - imports torch: only for this subcommand

    run_dir = reproduce(args.root, args.config, args.set, beam_size=args.beam_size, mirror=args.mirror,
                        download=not args.no_download, progress=not args.quiet)
    print(f"run folder: {run_dir}  report: {run_dir / 'report' / 'index.md'}")
    return 0
