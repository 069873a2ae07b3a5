"""Train a captioner: `python train.py --config configs/shapes.yaml [--set key=value ...] [--resume PATH]`.

The same as `captioner train`; see `python train.py --help`.
"""

import sys

from captioner.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
