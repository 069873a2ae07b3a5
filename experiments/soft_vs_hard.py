"""Soft against hard attention on the shapes world: three training seeds each, each recipe's seed
chosen on validation, every model scored once on a test world drawn for this comparison.

    python experiments/soft_vs_hard.py                 # trains what is missing, scores, writes the JSON
    python experiments/soft_vs_hard.py --table         # the Markdown table of docs/experiments.md

The recipes differ in one key (configs/shapes.yaml against configs/shapes_hard.yaml:
model.attention_mode); both score the cells against h_{t-1} alone, the paper's attention query, as
configs/shapes.yaml did when this study was run (it is given as an override now that the recipe
attends with the last word too), on the 10,000-image world with 12 epochs, as then. Training
and scoring reuse experiments/shapes_seeds.py (a seed's run is trained or resumed only when
unfinished; scores are cached beside the runs). The test world's seed
(--test-seed, default 2027) is used for nothing else: not by the soft recipe's own seed study
(2026), not to choose anything. Training time is each run's summed `train_seconds`
(metrics.jsonl), or for runs that predate that record, the same span read from the last progress
bar of each epoch in the run's training log (validation excluded either way); runs trained side
by side share the CPU, so compare them only with runs trained the same way (the JSON says how
many ran at once).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import shapes_seeds

REPO = Path(__file__).resolve().parents[1]
# name → (config, runs folder, overrides)
RECIPES = {"soft": ("configs/shapes.yaml", "runs/seeds", ["model.attention_query=hidden", "train.epochs=12"]),
           "hard": ("configs/shapes_hard.yaml", "runs/hard", [])}
SHOWN = ("object_recall", "hallucination_rate", "pointing", "mass_over_baseline", "CIDEr", "Bleu_4", "METEOR")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--data", default="data/shapes10k",
                        help="training world folder (default data/shapes10k: the 10,000-image world of the time)")
    parser.add_argument("--num-images", type=int, default=10000, help="images in the training world (default 10000)")
    parser.add_argument("--test-seed", type=int, default=2027, help="seed of this comparison's test world")
    parser.add_argument("--test-images", type=int, default=1000, help="images in the test world (default 1000)")
    parser.add_argument("--beam-size", type=int, default=3, help="beam for every score (default 3)")
    parser.add_argument("--parallel-runs", type=int, default=3,
                        help="how many runs trained at once, one thread each (recorded with the times)")
    parser.add_argument("--output", default="experiments/results/soft_vs_hard.json", help="result JSON")
    parser.add_argument("--table", action="store_true", help="only print the Markdown table of an existing --output")
    return parser


def recipe_args(args, config: str, runs: str) -> argparse.Namespace:
    """The arguments shapes_seeds' `train` and `evaluate` read, for one recipe."""
    return argparse.Namespace(config=config, runs=runs, data=args.data, beam_size=args.beam_size)


# an epoch's finished progress bar: "epoch 3/12: 100%|██████████| 250/250 [02:47<00:00, ..."
FINISHED_EPOCH = re.compile(r"epoch (\d+)/\d+: 100%\|[^|]*\| (\d+)/\2 \[(?:(\d+):)?(\d+):(\d+)<")


def training_seconds(run_dir: Path, log: Path) -> float | None:
    """Summed `train_seconds` of a run's epochs, or for a run that predates that record the
    elapsed time of each epoch's finished progress bar in its training log (None if neither)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = [line.get("train_seconds") for line in lines]
    if seconds and None not in seconds:
        return sum(seconds)
    if not log.is_file():
        return None
    epochs = {int(m[1]): int(m[3] or 0) * 3600 + int(m[4]) * 60 + int(m[5])
              for m in FINISHED_EPOCH.finditer(log.read_text(errors="replace"))}
    return float(sum(epochs.values())) if len(epochs) == len(lines) else None


def score_recipe(args, name: str, test_data: str) -> dict:
    config, runs, overrides = RECIPES[name]
    recipe = recipe_args(args, config, runs)
    checkpoints = {seed: shapes_seeds.train(recipe, seed, overrides=overrides) for seed in args.seeds}
    result = {"recipe": config, **shapes_seeds.score_runs(recipe, checkpoints, test_data)}
    for seed in args.seeds:
        result["runs"][str(seed)]["train_seconds"] = training_seconds(REPO / runs / f"seed_{seed}",
                                                                REPO / runs / f"train_seed_{seed}.log")
    return result


def markdown_table(result: dict) -> str:
    """Test figures: each recipe's mean ± sd over seeds, then its validation-chosen seed."""
    header = "| model | " + " | ".join(SHOWN) + " | training (min) |"
    lines = [header, "|---" * (len(SHOWN) + 2) + "|"]
    for name, recipe in result["recipes"].items():
        spread = recipe["mean_sd"]["test"]
        times = [run["train_seconds"] for run in recipe["runs"].values() if run.get("train_seconds")]
        minutes = f"{sum(times) / len(times) / 60:.0f}" if times else "not recorded"
        lines.append(f"| **{name}, mean ± sd ({len(recipe['runs'])} seeds)** | "
                     + " | ".join(f"{spread[k]['mean']:.3f} ± {spread[k]['sd']:.3f}" for k in SHOWN)
                     + f" | {minutes} |")
        chosen = str(recipe["chosen_on_validation"])
        figures = recipe["runs"][chosen]["test"]
        lines.append(f"| {name}, seed {chosen} (chosen on validation) | "
                     + " | ".join(f"{figures[k]:.3f}" for k in SHOWN) + " | |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    output = REPO / args.output
    if args.table:
        print(markdown_table(json.loads(output.read_text())))
        return 0
    test_data, worlds = shapes_seeds.study_worlds(args)
    result = {
        "command": "python experiments/soft_vs_hard.py " + " ".join(sys.argv[1:]),
        "seeds": args.seeds,
        "beam_size": args.beam_size,
        "data": worlds,
        "training": f"{args.parallel_runs} runs at once on the 2-core CPU, one thread each",
        "recipes": {name: score_recipe(args, name, test_data) for name in RECIPES},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown_table(result))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
