"""The beam search options that `caption` and `evaluate` share."""

from __future__ import annotations

import argparse

from captioner.cli.errors import UsageError


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beam-size", type=int, default=3, help="beam width; 1 is greedy decoding (default 3)")
    parser.add_argument("--max-len", type=int, default=20,
                        help="maximum words per caption; a caption that reaches it without <end> is marked "
                             "unfinished (default 20)")
    parser.add_argument("--min-len", type=int, default=1, help="minimum words per caption (default 1)")
    parser.add_argument("--length-penalty", type=float, default=0.0,
                        help="alpha of the ((5+n)/6)^alpha length normalisation; 0 ranks by log-probability "
                             "(default 0)")
    parser.add_argument("--top-n", type=int, default=1, help="also report the next best captions (default 1)")


def decoding_options(args: argparse.Namespace):
    """The parsed options as `DecodingOptions`; a bad value is a usage error."""
    from captioner.decoding import DecodingOptions  # noqa: PLC0415 - imports torch: not for `--help`

    try:
        return DecodingOptions(beam_size=args.beam_size, max_len=args.max_len, min_len=args.min_len,
                               length_penalty=args.length_penalty, top_n=args.top_n)
    except ValueError as error:
        raise UsageError(str(error)) from None
