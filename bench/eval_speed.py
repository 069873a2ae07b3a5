"""How long `captioner.coco_eval.evaluate_captions` takes on a COCO-test-sized corpus.

Synthetic ground truth: N images × 5 references drawn from a small vocabulary with a fixed seed,
and one candidate caption for every image. Prints one JSON object. The baseline, measured in the
same run on the same data, is pycocoevalcap used directly the usual way (PTBTokenizer once for
references and once for candidates, then Bleu, Meteor, Rouge, Cider one after another); it is
skipped with --no-baseline, without Java, or when pycocoevalcap's folder is read-only (its
tokenizer writes there). The figures of both must agree.

    python bench/eval_speed.py            # 5000 images (the Karpathy test split size)
    python bench/eval_speed.py --quick    # 200 images
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import shutil
import time
from pathlib import Path

from captioner import coco_java
from captioner.coco_eval import GroundTruth, evaluate_captions

REFERENCES_PER_IMAGE = 5
WORDS = (
    "a the man woman dog cat bird red blue white small large "
    "sitting standing riding holding on in next to near with of "
    "grass street bus plate field beach kite tree"
).split()


def synthetic_corpus(images: int, seed: int) -> tuple[GroundTruth, dict[int, str]]:
    """(ground truth of `images` × 5 references, one candidate per image), fixed by `seed`."""
    rng = random.Random(seed)

    def caption() -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
        # Capitals and a full stop, as in real captions, so the tokenizer has work to do.
        return " ".join(words).capitalize() + rng.choice([".", "", " ."])

    image_ids = rng.sample(range(1, 600_000), images)  # COCO-like sparse ids
    references = {image_id: [caption() for _ in range(REFERENCES_PER_IMAGE)] for image_id in image_ids}
    return GroundTruth(references, f"synthetic (seed {seed})"), {image_id: caption() for image_id in image_ids}


def pycocoevalcap_baseline(ground_truth: GroundTruth, results: dict[int, str]) -> tuple[float, dict[str, float]]:
    """(seconds, corpus metrics) of pycocoevalcap's tokenizer and scorers called the usual way."""
    from pycocoevalcap.bleu.bleu import Bleu  # noqa: PLC0415 - only the baseline needs them
    from pycocoevalcap.cider.cider import Cider  # noqa: PLC0415
    from pycocoevalcap.meteor.meteor import Meteor  # noqa: PLC0415
    from pycocoevalcap.rouge.rouge import Rouge  # noqa: PLC0415
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # noqa: PLC0415

    started = time.perf_counter()
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in ground_truth.references[i]] for i in results})
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in results.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    metrics = {f"Bleu_{n + 1}": bleu[n] for n in range(4)}
    metrics["METEOR"], _ = Meteor().compute_score(gts, res)
    metrics["ROUGE_L"], _ = Rouge().compute_score(gts, res)
    metrics["CIDEr"], _ = Cider().compute_score(gts, res)
    return time.perf_counter() - started, {name: float(value) for name, value in metrics.items()}


def baseline_skipped_because(java: bool, wanted: bool) -> str | None:
    if not wanted:
        return "--no-baseline"
    if not java:
        return "no java on PATH"
    if not os.access(coco_java.PTB_JAR.parent, os.W_OK):
        return f"{coco_java.PTB_JAR.parent} is read-only (pycocoevalcap's tokenizer writes there)"
    return None


def machine() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")),
            cpu,
        )
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="200 images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip timing pycocoevalcap used directly")
    args = parser.parse_args()
    images = 200 if args.quick else args.images
    ground_truth, results = synthetic_corpus(images, args.seed)

    started = time.perf_counter()
    report = evaluate_captions(ground_truth, results)
    seconds = time.perf_counter() - started
    output = {
        "images": images,
        "references_per_image": REFERENCES_PER_IMAGE,
        "seconds": round(seconds, 2),
        "seconds_by_stage": report["seconds_by_stage"],
        "java": report["versions"]["java"],
        "tokenizer": report["tokenizer"],
        "metrics": {name: round(value, 6) for name, value in report["metrics"].items()},
        "machine": machine(),
    }
    skipped = baseline_skipped_because(shutil.which("java") is not None, not args.no_baseline)
    if skipped:
        output["baseline"] = {"skipped": skipped}
    else:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints progress
            baseline_seconds, baseline_metrics = pycocoevalcap_baseline(ground_truth, results)
        output["baseline"] = {
            "what": "pycocoevalcap directly: PTBTokenizer x2, then Bleu, Meteor, Rouge, Cider sequentially",
            "seconds": round(baseline_seconds, 2),
            "speedup": round(baseline_seconds / seconds, 2),
            "max_abs_metric_difference": max(
                abs(report["metrics"][name] - value) for name, value in baseline_metrics.items()
            ),
        }
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
