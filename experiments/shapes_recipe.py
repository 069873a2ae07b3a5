"""The bundled model's recipe from nothing, every stage timed: the shapes world, its feature
cache, cross-entropy training, self-critical training, the test world and the test scores, then
(with --export) the bundled checkpoint. `make shapes-model` runs it.

    python experiments/shapes_recipe.py --export captioner/assets/shapes.pt
    python experiments/shapes_recipe.py --data data/shapes_fresh --run runs/shapes_fresh   # a second world and run

A stage whose output exists is skipped (and marked so in the timings), so an interrupted recipe
resumes; the time "from nothing" is only claimed when no stage was skipped. The test world's seed
(2030, the recipe study's: `make shapes-scst`) is used to choose nothing: the seeds in
configs/shapes.yaml and configs/shapes_scst.yaml were chosen on validation
(experiments/shapes_scst.py). A world folder of another size is refused, not reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import shapes_seeds

CROSS_ENTROPY, SCST = "configs/shapes.yaml", "configs/shapes_scst.yaml"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", default="data/shapes", help="training world folder (default data/shapes)")
    parser.add_argument("--num-images", type=int, default=20000, help="images in the training world (default 20000)")
    parser.add_argument("--test-seed", type=int, default=2030, help="seed of the test world (default 2030)")
    parser.add_argument("--run", default="runs/shapes", help="folder for the feature cache and both runs")
    parser.add_argument("--export", metavar="CHECKPOINT", help="export the final model here (e.g. captioner/assets/shapes.pt)")
    parser.add_argument("--timings", help="write the stage times here too (always: RUN/recipe_time.json)")
    return parser


def stages(args) -> list[tuple[str, list[str], Path]]:
    """(name, command, output that marks it done) of every stage, in order."""
    data, run, test = args.data, Path(args.run), f"{args.data}_test_seed{args.test_seed}"
    world = ["--set", f"data.root={data}", f"data.split_file={data}/dataset_shapes.json",
             f"data.feature_cache_dir={run}/features"]
    captioner = [sys.executable, "-m", "captioner"]
    return [
        ("shapes world", [*captioner, "shapes", "--out", data, "--num-images", str(args.num_images), "--seed", "0",
                          "--quiet"], Path(data) / "dataset_shapes.json"),
        ("feature cache", [*captioner, "features", "--config", CROSS_ENTROPY, "--out", f"{run}/features", "--quiet",
                           *world], run / "features"),
        ("cross-entropy training", [sys.executable, "train.py", "--config", CROSS_ENTROPY, *world,
                                    f"output_dir={run}/cross_entropy"], run / "cross_entropy" / "checkpoint_best.pt"),
        ("self-critical training", [sys.executable, "train.py", "--config", SCST, "--init",
                                    f"{run}/cross_entropy/checkpoint_best.pt", *world, f"output_dir={run}/scst"],
         run / "scst" / "checkpoint_best.pt"),
        ("test world", [*captioner, "shapes", "--out", test, "--num-images", "1000", "--seed", str(args.test_seed),
                        "--splits", "test=1", "--quiet"], Path(test) / "dataset_shapes.json"),
        ("test scores", [*captioner, "evaluate", "--checkpoint", f"{run}/scst/checkpoint_best.pt", "--data-root", test,
                         "--split-file", f"{test}/dataset_shapes.json", "--split", "test", "--beam-size", "3",
                         "--device", "cpu", "--output", f"{run}/test_scores.json", "--quiet"],
         run / "test_scores.json"),
    ]


def run_stage(name: str, command: list[str], done: Path) -> dict:
    if done.exists():
        print(f"[{name}] done already ({done}): skipped", flush=True)
        return {"stage": name, "skipped": True}
    print(f"[{name}] {' '.join(command)}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    print(f"[{name}] {seconds / 60:.1f} min", flush=True)
    return {"stage": name, "skipped": False, "seconds": seconds, "command": " ".join(command[1:])}


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average_1min_before": os.getloadavg()[0], "gpu": torch.cuda.is_available()}


def main(args: argparse.Namespace) -> int:
    shapes_seeds.check_world(args.data, args.num_images)
    before = machine()  # before the recipe: its load average is other work's
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [run_stage(*stage) for stage in stages(args)]
    timed = [row["seconds"] for row in rows if not row["skipped"]]
    result = {
        "command": "python experiments/shapes_recipe.py " + " ".join(sys.argv[1:]),
        "started": started, "machine": before, "stages": rows,
        "total_minutes": sum(timed) / 60,
        "from_nothing": all(not row["skipped"] for row in rows),
        "test_scores": json.loads((Path(args.run) / "test_scores.json").read_text()).get("shapes"),
    }
    text = json.dumps(result, indent=1) + "\n"
    for path in filter(None, [Path(args.run) / "recipe_time.json", args.timings and Path(args.timings)]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"recipe: {result['total_minutes']:.1f} min" + ("" if result["from_nothing"] else " (some stages skipped)"))
    if args.export:
        origin = f"captioner shapes --out {args.data} --num-images {args.num_images} --seed 0"
        subprocess.run([sys.executable, "-m", "captioner", "export", f"{args.run}/scst/checkpoint_best.pt",
                        args.export, "--scores", f"{args.run}/test_scores.json", "--data-origin", origin], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
