"""Seed spread of a shapes recipe: train it with several seeds, choose on validation, score on a
fresh test set once.

    python experiments/shapes_seeds.py                       # configs/shapes.yaml, seeds 0 1 2
    python experiments/shapes_seeds.py --seeds 0 1 2 3 --test-seed 2026

Steps, each skipped when its output already exists (so an interrupted run resumes):
1. the training world (`captioner shapes --seed 0`, its train and val splits) and a test world
   drawn with a seed used for nothing else (`--test-seed`, all of it the test split);
2. `train.py --config RECIPE --set train.seed=S` for every seed (resumed from its last checkpoint
   when interrupted), all seeds sharing one feature cache;
3. `captioner evaluate` of every seed's best checkpoint, and of the shipped model, on the whole
   validation split and on the test set, at the same beam;
4. the JSON (`--output`): each model's figures, the recipe's mean ± sd over the seeds, the seed a
   validation criterion would choose, and whether the mean meets the targets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
from collections.abc import Sequence
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRICS = {  # report key → where `captioner evaluate` puts it
    "object_recall": ("shapes", "object_recall"),
    "hallucination_rate": ("shapes", "hallucination_rate"),
    "exact": ("shapes", "exact"),  # images named exactly: every object, right counts and sizes, nothing extra
    "objects_3_object_recall": ("shapes", "objects_3_object_recall"),
    "pointing": ("shapes", "grounding_pointing"),
    "pointing_ignoring_size": ("shapes", "grounding_pointing_ignoring_size"),
    "mass_over_baseline": ("shapes", "grounding_mass_over_baseline"),
    "CIDEr": ("metrics", "CIDEr"),
    "Bleu_4": ("metrics", "Bleu_4"),
    "METEOR": ("metrics", "METEOR"),
}
TARGETS = {"object_recall": (">=", 0.95), "hallucination_rate": ("<=", 0.05), "pointing": (">=", 0.80)}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", default="configs/shapes.yaml", help="recipe to train (default configs/shapes.yaml)")
    parser.add_argument("--set", nargs="+", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="overrides of --config: a variant (give it its own --runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--data", default="data/shapes", help="training world folder (default data/shapes)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the training world (default 0)")
    parser.add_argument("--num-images", type=int, default=20000, help="images in the training world (default 20000)")
    parser.add_argument("--test-seed", type=int, default=2026,
                        help="seed of the test world; must differ from every seed used to choose anything")
    parser.add_argument("--test-images", type=int, default=1000, help="images in the test world (default 1000)")
    parser.add_argument("--runs", default="runs/seeds", help="folder of the training runs (default runs/seeds)")
    parser.add_argument("--shipped", default="captioner/assets/shapes.pt", help="the shipped model, scored beside")
    parser.add_argument("--beam-size", type=int, default=3, help="beam for every score (default 3)")
    parser.add_argument("--no-test", action="store_true", help="validation only (while still choosing)")
    parser.add_argument("--output", default="experiments/results/shapes_seeds.json", help="result JSON")
    parser.add_argument("--table", action="store_true",
                        help="only print the Markdown table of an existing --output (as in docs/shapes-world.md)")
    return parser


def run(command: list[str], log: Path | None = None) -> None:
    """Run a step from the repository root, its output to `log` (or to ours)."""
    print("+", " ".join(command), flush=True)
    if log is None:
        subprocess.run(command, cwd=REPO, check=True)
        return
    with open(log, "a") as handle:
        subprocess.run(command, cwd=REPO, check=True, stdout=handle, stderr=subprocess.STDOUT)


def world_command(out: str, seed: int, images: int, test_only: bool) -> list[str]:
    splits = ["--splits", "test=1"] if test_only else []
    return ["captioner", "shapes", "--out", out, "--num-images", str(images), "--seed", str(seed), *splits, "--quiet"]


def check_world(data: str, num_images: int) -> None:
    """Refuse a world folder of another size: it would be reused as it is, and the models
    trained on a world other than the one asked for."""
    split_file = REPO / data / "dataset_shapes.json"
    if split_file.is_file():
        found = len(json.loads(split_file.read_text())["images"])
        if found != num_images:
            raise SystemExit(f"{data} holds a shapes world of {found} images, not the {num_images} asked for: "
                             "give --data another folder, or delete that one")


def ensure_world(command: list[str], out: str) -> None:
    check_world(out, int(command[command.index("--num-images") + 1]))
    if not (REPO / out / "dataset_shapes.json").is_file():
        run([sys.executable, "-m", "captioner", *command[1:]])


def train(args, seed: int, init: Path | None = None, features: str | None = None,
          overrides: Sequence[str] = ()) -> Path:
    """The seed's best checkpoint, training (or resuming) it first when it is not finished.
    `init`: the checkpoint a second stage starts from (train.py --init); `features`: the feature
    cache folder (default: the runs folder's own); `overrides`: more `--set` overrides of the
    recipe (a variant)."""
    from captioner.config import load_config  # noqa: PLC0415 - keep --help fast
    from captioner.reproduce import training_finished  # noqa: PLC0415

    run_dir = Path(args.runs) / f"seed_{seed}"
    overrides = [f"train.seed={seed}", f"output_dir={run_dir}", f"data.root={args.data}",
                 f"data.split_file={args.data}/dataset_shapes.json",
                 f"data.feature_cache_dir={features or f'{args.runs}/features'}", *overrides]
    config = load_config(REPO / args.config, overrides)
    check_same_recipe(config, REPO / run_dir, compare_model=init is None)
    if not training_finished(config, REPO / run_dir):
        last = REPO / run_dir / "checkpoint_last.pt"
        start = (["--resume", str(last.relative_to(REPO))] if last.is_file()
                 else ["--init", str(init)] if init is not None else [])
        (REPO / args.runs).mkdir(parents=True, exist_ok=True)
        run([sys.executable, "train.py", "--config", args.config, "--set", *overrides, *start],
            log=REPO / args.runs / f"train_seed_{seed}.log")
    return run_dir / "checkpoint_best.pt"


def check_same_recipe(config, run_dir: Path, compare_model: bool) -> None:
    """Refuse to reuse or resume `run_dir` when the config it saved differs from `config`: a folder
    of runs belongs to one variant. The model section is not compared for a second stage, which
    takes its model from the checkpoint it starts from."""
    from captioner.config import load_config  # noqa: PLC0415

    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved, wanted = load_config(saved_path).to_dict(), config.to_dict()
    sections = ["data", "train"] + (["model"] if compare_model else [])
    changed = [f"{section}.{key}: {saved[section][key]!r} there, {wanted[section][key]!r} asked"
               for section in sections for key in wanted[section] if saved[section][key] != wanted[section][key]]
    if changed:
        raise SystemExit(f"{run_dir} holds a run of another recipe ({'; '.join(changed)}): give this variant "
                         "its own runs folder, or delete that one")


def evaluate(args, checkpoint: Path, name: str, data: str, split: str) -> dict:
    """`captioner evaluate` figures of one checkpoint on one split (cached beside the runs)."""
    output = REPO / args.runs / "scores" / f"{name}_{split}_{Path(data).name}_beam{args.beam_size}.json"
    if not output.is_file():
        output.parent.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "captioner", "evaluate", "--checkpoint", str(checkpoint), "--data-root", data,
             "--split-file", f"{data}/dataset_shapes.json", "--split", split, "--beam-size", str(args.beam_size),
             "--device", "cpu", "--output", str(output.relative_to(REPO)), "--quiet"])
    report = json.loads(output.read_text())
    figures = {key: report.get(section, {}).get(field) for key, (section, field) in METRICS.items()}
    figures["images"] = report.get("num_images")
    figures["unfinished"] = report.get("unfinished")
    return figures


def score_runs(args, checkpoints: dict[int, Path], test_data: str | None, prefix: str = "") -> dict:
    """Each checkpoint's figures on the validation split and on the test world (none when
    `test_data` is None: while still choosing), with scores cached as `{prefix}seed_S`, their
    mean ± sd per split, and the seed validation chooses."""
    result = {"runs": {}, "mean_sd": {}}
    splits = [("val", args.data, "val")] + ([("test", test_data, "test")] if test_data else [])
    for label, data, split in splits:
        rows = {seed: evaluate(args, checkpoint, f"{prefix}seed_{seed}", data, split)
                for seed, checkpoint in checkpoints.items()}
        for seed, row in rows.items():
            result["runs"].setdefault(str(seed), {})[label] = row
        result["mean_sd"][label] = spread(list(rows.values()))
        if label == "val":
            result["chosen_on_validation"] = choose(rows)
    return result


def study_worlds(args) -> tuple[str, dict]:
    """A study's test world folder (`args.test_seed`, made when missing) and how both worlds are
    made, for the result JSON."""
    test_data = f"{args.data}_test_seed{args.test_seed}"
    test_world = world_command(test_data, args.test_seed, args.test_images, test_only=True)
    world = world_command(args.data, 0, args.num_images, False)
    ensure_world(world, args.data)
    ensure_world(test_world, test_data)
    return test_data, {"train_and_val": " ".join(world[:-1]),
                       "test": " ".join(test_world[:-1])}


def spread(rows: list[dict]) -> dict:
    """Mean and sample standard deviation of every figure over the seeds."""
    summary = {}
    for key in METRICS:
        values = [row[key] for row in rows if row.get(key) is not None]
        if len(values) == len(rows) and values:
            summary[key] = {"mean": statistics.fmean(values),
                            "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
    return summary


def choose(validation: dict[int, dict]) -> int:
    """The seed a user would ship, chosen on validation only: most objects named right, then
    fewest invented."""
    return max(validation, key=lambda s: (validation[s]["object_recall"] - validation[s]["hallucination_rate"],
                                          validation[s]["object_recall"]))


def targets_met(mean: dict) -> dict:
    met = {}
    for key, (sense, bound) in TARGETS.items():
        if key in mean:
            value = mean[key]["mean"]
            met[key] = {"target": f"{sense} {bound}", "mean": value,
                        "met": value >= bound if sense == ">=" else value <= bound}
    return met


SHOWN = ("object_recall", "hallucination_rate", "pointing", "pointing_ignoring_size", "CIDEr", "Bleu_4")


def markdown_table(result: dict, split: str = "test") -> str:
    """The figures of `split` as a Markdown table: each seed, the mean ± sd, the shipped model."""
    lines = ["| model | " + " | ".join(SHOWN) + " |", "|---" * (len(SHOWN) + 1) + "|"]
    for seed, figures in result["runs"].items():
        lines.append(f"| seed {seed} | " + " | ".join(_number(figures[split].get(k)) for k in SHOWN) + " |")
    spread = result["recipe_mean_sd"][split]
    lines.append(f"| **mean ± sd ({len(result['runs'])} seeds)** | "
                 + " | ".join(f"{spread[k]['mean']:.3f} ± {spread[k]['sd']:.3f}" if k in spread else "–"
                              for k in SHOWN) + " |")
    lines.append("| shipped model | " + " | ".join(_number(result["shipped"][split].get(k)) for k in SHOWN) + " |")
    return "\n".join(lines)


def _number(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def main(args: argparse.Namespace) -> int:
    if args.table:
        result = json.loads((REPO / args.output).read_text())
        for split in ("val", "test"):
            if split in result["recipe_mean_sd"]:
                print(f"{split}:\n{markdown_table(result, split)}\n")
        return 0
    test_data = f"{args.data}_test_seed{args.test_seed}"
    world = world_command(args.data, args.data_seed, args.num_images, test_only=False)
    test_world = world_command(test_data, args.test_seed, args.test_images, test_only=True)
    ensure_world(world, args.data)
    checkpoints = {seed: train(args, seed, overrides=args.overrides) for seed in args.seeds}
    shipped = REPO / args.shipped
    shipped_name = "shipped_" + hashlib.sha256(shipped.read_bytes()).hexdigest()[:12]
    splits = [("val", args.data, "val")] + ([] if args.no_test else [("test", test_data, "test")])
    if not args.no_test:
        ensure_world(test_world, test_data)
    result = {
        "command": "python experiments/shapes_seeds.py " + " ".join(sys.argv[1:]),
        "recipe": args.config,
        **({"overrides": args.overrides} if args.overrides else {}),
        "seeds": args.seeds,
        "beam_size": args.beam_size,
        "data": {"train_and_val": " ".join(world[:-1]), "test": " ".join(test_world[:-1])},
        "runs": {}, "recipe_mean_sd": {}, "shipped": {"file": args.shipped, "sha256_12": shipped_name[8:]},
    }
    for label, data, split in splits:
        rows = {seed: evaluate(args, checkpoint, f"seed_{seed}", data, split) for seed, checkpoint in checkpoints.items()}
        for seed, row in rows.items():
            result["runs"].setdefault(str(seed), {})[label] = row
        result["recipe_mean_sd"][label] = spread(list(rows.values()))
        result["shipped"][label] = evaluate(args, shipped, shipped_name, data, split)
        if label == "val":
            result["chosen_on_validation"] = choose(rows)
    if not args.no_test:
        result["targets_on_test_mean"] = targets_met(result["recipe_mean_sd"]["test"])
    output = REPO / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("recipe_mean_sd", "chosen_on_validation") if k in result}, indent=1))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
