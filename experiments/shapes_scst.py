"""Self-critical training on the shapes world: each cross-entropy seed of configs/shapes.yaml
continued with configs/shapes_scst.yaml, both stages scored on validation and once on a test
world drawn for this study, against issue 19's targets.

    python experiments/shapes_scst.py                 # trains what is missing, scores, writes the JSON
    python experiments/shapes_scst.py --table         # the Markdown table of docs/experiments.md
    python experiments/shapes_scst.py --scst-set train.scst_object_reward=2 --scst-runs runs/scst_objects2 \
        --seeds 2 --no-test --output experiments/results/shapes_scst_objects2_val.json   # a variant, validation only
    make shapes-scst                                  # the recipe as it ships (docs/experiments.md)

Steps, each skipped when its output exists (an interrupted study resumes):
1. the cross-entropy runs (runs/seeds/seed_S as experiments/shapes_seeds.py trains them, or
   `--ce-runs` with the `--ce-set` overrides of a variant; trained if missing, reused if finished,
   refused when their saved config differs), all with the feature cache in runs/seeds/features;
2. `train.py --config configs/shapes_scst.yaml --init <cross-entropy run>/checkpoint_best.pt` per
   seed (runs/scst/seed_S, or `--scst-runs` with the `--scst-set` overrides of a variant);
3. `captioner evaluate` of both stages of every seed at beam 3, on the whole validation split and
   on the test world (`--test-seed`, default 2028: used by nothing else);
4. the shipped model (`--shipped`) scored the same way, beside the recipe (not with --no-test);
5. the JSON: every figure, each stage's mean ± sd, the SCST seed chosen on validation, and the
   targets met by the SCST mean on test.

Shapes figures use `captioner.metrics.match_objects`: colour and shape, the size where one is
said, counts honoured; `exact` is the share of images named exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import shapes_seeds

REPO = Path(__file__).resolve().parents[1]
STAGES = {"cross_entropy": ("configs/shapes.yaml", "runs/seeds"), "scst": ("configs/shapes_scst.yaml", "runs/scst")}
TARGETS = {"object_recall": (">=", 0.98), "hallucination_rate": ("<=", 0.02), "objects_3_object_recall": (">=", 0.97),
           "exact": (">=", 0.95), "pointing": (">=", 0.90), "mass_over_baseline": (">=", 3.0)}
SHOWN = ("object_recall", "hallucination_rate", "objects_3_object_recall", "exact", "pointing",
         "mass_over_baseline", "CIDEr", "Bleu_4")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--data", default="data/shapes", help="training world folder (default data/shapes)")
    parser.add_argument("--num-images", type=int, default=20000,
                        help="images in the training world, made with seed 0 when --data is missing (default 20000)")
    parser.add_argument("--test-seed", type=int, default=2028, help="seed of this study's test world (default 2028)")
    parser.add_argument("--test-images", type=int, default=1000, help="images in the test world (default 1000)")
    parser.add_argument("--beam-size", type=int, default=3, help="beam for every score (default 3)")
    parser.add_argument("--shipped", default="captioner/assets/shapes.pt", help="the shipped model, scored beside")
    parser.add_argument("--output", default="experiments/results/shapes_scst.json", help="result JSON")
    parser.add_argument("--ce-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides of configs/shapes.yaml: a variant of the cross-entropy stage (give it its own "
                             "--ce-runs and --scst-runs: finished runs there are reused as they are)")
    parser.add_argument("--ce-runs", default=STAGES["cross_entropy"][1],
                        help=f"folder of the cross-entropy runs (default {STAGES['cross_entropy'][1]}; they share its "
                             "feature cache)")
    parser.add_argument("--scst-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides of configs/shapes_scst.yaml: a variant of the self-critical stage")
    parser.add_argument("--scst-runs", default=STAGES["scst"][1],
                        help=f"folder of the self-critical runs and their scores (default {STAGES['scst'][1]})")
    parser.add_argument("--no-test", action="store_true",
                        help="validation only, while still choosing: no test world, no shipped model, no targets")
    parser.add_argument("--table", action="store_true", help="only print the Markdown table of an existing --output")
    return parser


def stage_args(args, stage: str) -> argparse.Namespace:
    """The arguments shapes_seeds' `train` and `evaluate` read, for one stage."""
    config, _ = STAGES[stage]
    return argparse.Namespace(config=config, runs=args.scst_runs if stage == "scst" else args.ce_runs, data=args.data,
                              beam_size=args.beam_size)


def score_stage(args, stage: str, checkpoints: dict[int, Path], test_data: str | None) -> dict:
    scores = stage_args(args, stage)
    if stage == "cross_entropy" and args.ce_runs == STAGES[stage][1]:
        # scored under runs/scst/scores: older caches beside runs/seeds predate the size-aware parser
        scores.runs = STAGES["scst"][1]
    changes = args.scst_set if stage == "scst" else args.ce_set
    overrides = {"overrides": changes} if changes else {}
    return {"recipe": STAGES[stage][0], **overrides,
            **shapes_seeds.score_runs(scores, checkpoints, test_data, f"{stage}_")}


def score_shipped(args, test_data: str) -> dict:
    shipped = REPO / args.shipped
    name = "shipped_" + hashlib.sha256(shipped.read_bytes()).hexdigest()[:12]
    scores = stage_args(args, "scst")
    return {"file": args.shipped, "sha256_12": name[8:],
            **{label: shapes_seeds.evaluate(scores, shipped, name, data, split)
               for label, data, split in (("val", args.data, "val"), ("test", test_data, "test"))}}


def targets_met(mean: dict) -> dict:
    met = {}
    for key, (sense, bound) in TARGETS.items():
        value = mean[key]["mean"]
        met[key] = {"target": f"{sense} {bound}", "mean": value,
                    "met": value >= bound if sense == ">=" else value <= bound}
    return met


def markdown_table(result: dict) -> str:
    """Test figures: each stage's mean ± sd over seeds, then its validation-chosen seed."""
    lines = ["| model | " + " | ".join(SHOWN) + " |", "|---" * (len(SHOWN) + 1) + "|"]
    for name, stage in result["stages"].items():
        spread = stage["mean_sd"]["test"]
        lines.append(f"| **{name}, mean ± sd ({len(stage['runs'])} seeds)** | "
                     + " | ".join(f"{spread[k]['mean']:.3f} ± {spread[k]['sd']:.3f}" for k in SHOWN) + " |")
        chosen = str(stage["chosen_on_validation"])
        figures = stage["runs"][chosen]["test"]
        lines.append(f"| {name}, seed {chosen} (chosen on validation) | "
                     + " | ".join(f"{figures[k]:.3f}" for k in SHOWN) + " |")
    shipped = result["shipped"]["test"]
    lines.append("| shipped model | " + " | ".join(f"{shipped[k]:.3f}" for k in SHOWN) + " |")
    lines.append("| target (issue 19) | " + " | ".join(
        f"{TARGETS[k][0]} {TARGETS[k][1]}" if k in TARGETS else "" for k in SHOWN) + " |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    output = REPO / args.output
    if args.table:
        print(markdown_table(json.loads(output.read_text())))
        return 0
    test_data, worlds = (None, {}) if args.no_test else shapes_seeds.study_worlds(args)
    features = f"{STAGES['cross_entropy'][1]}/features"
    cross_entropy = {seed: shapes_seeds.train(stage_args(args, "cross_entropy"), seed, features=features,
                                              overrides=args.ce_set)
                     for seed in args.seeds}
    scst = {seed: shapes_seeds.train(stage_args(args, "scst"), seed, init=cross_entropy[seed], features=features,
                                     overrides=args.scst_set)
            for seed in args.seeds}
    result = {
        "command": "python experiments/shapes_scst.py " + " ".join(sys.argv[1:]),
        "seeds": args.seeds,
        "beam_size": args.beam_size,
        "data": worlds,
        "stages": {"cross_entropy": score_stage(args, "cross_entropy", cross_entropy, test_data),
                   "scst": score_stage(args, "scst", scst, test_data)},
    }
    if not args.no_test:
        result["shipped"] = score_shipped(args, test_data)
        result["targets_on_test_mean"] = targets_met(result["stages"]["scst"]["mean_sd"]["test"])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({name: stage["mean_sd"] for name, stage in result["stages"].items()}, indent=1)
          if args.no_test else markdown_table(result))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
