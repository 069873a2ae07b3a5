"""Where a shapes model goes wrong: its errors by object count and kind, and where its attention
was when it named something that is not there.

    python experiments/shapes_errors.py --checkpoint runs/scst/seed_2/checkpoint_best.pt \\
        --output experiments/results/shapes_errors_scst.json

Decodes one split (default: the validation split of data/shapes, beam 3) with the attention maps,
matches every caption to the image's objects (`captioner.metrics.match_objects`: colour, shape,
the size when one is said, counts), and reports:
- recall, hallucination and images named exactly, per number of objects in the image;
- every wrong mention by kind: `binding` (an object of its colour and one of its shape are both
  in the image, just not together), `wrong colour` (its shape is there, its colour is not),
  `wrong shape`, `neither`, `over-count` (more of a kind than there are), `wrong size`;
- missed objects by size;
- for right and wrong mentions alike, what the argmax of the attention lands on at the colour word
  and at the shape word: an object the mention names, an object of the said colour only, of the
  said shape only, another object, or the background.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", required=True, help="model to analyse")
    parser.add_argument("--data", default="data/shapes", help="shapes world folder (default data/shapes)")
    parser.add_argument("--split", default="val", help="split to decode (default val: nothing is chosen on test)")
    parser.add_argument("--max-images", type=int, help="only the first N images of the split (e.g. of train, to "
                        "compare a model on images it was trained on with validation)")
    parser.add_argument("--beam-size", type=int, default=3, help="beam (default 3)")
    parser.add_argument("--output", help="also write the JSON here")
    return parser


def mention_kind(mention, missing: int, image) -> str:
    """Why a mention's `missing` objects name nothing (see the module docstring)."""
    same = [o for o in image.objects if (o.colour, o.shape) == (mention.colour, mention.shape)]
    if same:
        sized = mention.size is not None and not any(o.size == mention.size for o in same)
        return "wrong size" if sized else "over-count"
    colour = any(o.colour == mention.colour for o in image.objects)
    shape = any(o.shape == mention.shape for o in image.objects)
    return {(True, True): "binding", (False, True): "wrong colour", (True, False): "wrong shape"}.get(
        (colour, shape), "neither")


def attention_target(grid: np.ndarray, mention, image) -> str:
    """What the argmax cell of one word's attention lands on, for `mention`."""
    from captioner.metrics import inside_box, peak_centre  # noqa: PLC0415

    peak = peak_centre(grid, image.width, image.height)
    under = [o for o in image.objects if inside_box(peak, o.bbox)]
    if not under:
        return "background"
    if any(mention.names(o) for o in under):
        return "a named object"
    if any(o.colour == mention.colour for o in under):
        return "its colour only"
    if any(o.shape == mention.shape for o in under):
        return "its shape only"
    return "another object"


def analyse(decoded: dict, images: dict) -> dict:
    """The report of the module docstring from decoded captions with attention."""
    from captioner.metrics import by_object_count, match_objects  # noqa: PLC0415

    kinds: dict[str, Counter] = {}
    missed_by_size, objects_by_size = Counter(), Counter()
    looks = {"right": {"colour word": Counter(), "shape word": Counter()},
             "wrong": {"colour word": Counter(), "shape word": Counter()}}
    examples = []
    for image_id, result in decoded.items():
        image, words = images[image_id], [w.lower() for w in result.words]
        match = match_objects(words, image)
        attention = np.asarray(result.attention)
        for obj, named in zip(image.objects, match.named):
            objects_by_size[obj.size] += 1
            missed_by_size[obj.size] += not named
        for mention, missing in zip(match.mentions, match.unmatched):
            side = "wrong" if missing else "right"
            if missing:
                kinds.setdefault(str(len(image.objects)), Counter())[mention_kind(mention, missing, image)] += missing
            looks[side]["shape word"][attention_target(attention[mention.index], mention, image)] += 1
            position = mention.colour_index
            if position is not None:
                looks[side]["colour word"][attention_target(attention[position], mention, image)] += 1
        if not match.exact and len(examples) < 12:
            examples.append({"image_id": image_id, "caption": result.text,
                             "objects": [f"{o.size} {o.colour} {o.shape}" for o in image.objects]})
    captions = {i: r.text for i, r in decoded.items()}
    return {
        "by_object_count": by_object_count(captions, images),
        "wrong_mentions_by_kind": {count: dict(kinds[count].most_common()) for count in sorted(kinds)},
        "missed_objects_by_size": {size: {"objects": objects_by_size[size], "missed": missed_by_size[size],
                                          "share": missed_by_size[size] / objects_by_size[size]}
                                   for size in sorted(objects_by_size)},
        "attention_argmax": {side: {word: _shares(counter) for word, counter in by_word.items()}
                             for side, by_word in looks.items()},
        "examples": examples,
    }


def _shares(counter: Counter) -> dict:
    total = sum(counter.values())
    return {"count": total, **{key: value / total for key, value in counter.most_common()}}


def main(args: argparse.Namespace) -> int:
    from captioner.config import DataConfig  # noqa: PLC0415
    from captioner.data.coco import load_split  # noqa: PLC0415
    from captioner.data.shapes import load_objects  # noqa: PLC0415
    from captioner.decoding import DecodingOptions  # noqa: PLC0415
    from captioner.evaluation import decode_records  # noqa: PLC0415
    from captioner.inference import Captioner  # noqa: PLC0415

    captioner = Captioner.load(args.checkpoint, device="cpu")
    data = DataConfig(root=args.data, split_file=f"{args.data}/dataset_shapes.json")
    records = load_split(data, args.split)[:args.max_images]
    options = DecodingOptions(beam_size=args.beam_size, max_len=captioner.config.train.max_decode_len)
    decoded = decode_records(captioner, records, options, progress=True)
    report = {
        "command": "python experiments/shapes_errors.py " + " ".join(sys.argv[1:]),
        "split": args.split,
        "beam_size": args.beam_size,
        "images": len(decoded),
        **analyse(decoded, load_objects(Path(args.data) / "annotations" / "shapes_objects.json")),
    }
    text = json.dumps(report, indent=1)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
