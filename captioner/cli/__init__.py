"""The `captioner` command: train, caption, shapes, evaluate, coco, features, report, demo, export.

Each subcommand's parser sits beside its handler in the module of its group; the handlers
import torch and the rest only when they run, so that `--help` answers at once.

Exit codes: 0 success; 1 some inputs failed (each reported); 2 bad usage or configuration;
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from captioner.cli.caption import add_caption_parser
from captioner.cli.data import add_coco_parser, add_shapes_parser
from captioner.cli.demo import add_demo_parser
from captioner.cli.errors import UsageError, user_errors
from captioner.cli.evaluate import add_evaluate_parser, add_report_parser
from captioner.cli.training import add_export_parser, add_features_parser, add_train_parser

__all__ = ["UsageError", "get_args_parser", "main"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captioner", description="Show, Attend and Tell image captioning.")
    commands = parser.add_subparsers(dest="command", required=True)
    # in the order `captioner --help` lists them
    for add_parser in (add_train_parser, add_caption_parser, add_shapes_parser, add_evaluate_parser,
                       add_coco_parser, add_report_parser, add_features_parser, add_demo_parser, add_export_parser):
        add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as error:
        if not isinstance(error, user_errors()):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
