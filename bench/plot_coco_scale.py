"""The cost curves of a COCO-scale rehearsal (bench/coco_scale.py) as one PNG for the docs.

Left: each stage's cost per image against the world's size, both axes logarithmic, so that a
stage whose cost per image is flat is linear in images and one that climbs is superlinear.
Right: each stage's peak memory (PSS of its process tree) against the size, with
the 8 GiB target.

    python bench/plot_coco_scale.py bench/results/coco_scale_cpu-2core_2026-12-03.json \
        --out docs/figures/coco_scale.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

STAGE_LABELS = {"generate": "generate", "index": "split + vocabulary", "features": "feature cache",
                "train": "training epoch", "validate": "validation decoding", "evaluate": "test evaluation",
                "report": "report"}
FIGURE_SIZE = (11, 4.2)
FIGURE_DPI = 100


def stage_curves(report: dict) -> dict[str, dict[str, dict[int, float]]]:
    """{stage: {"ms_per_image": {images: ms}, "peak_tree_pss_mib": {images: MiB}}} from the
    report's per-size rows (JSON keys are strings; sizes come back as ints)."""
    curves = {}
    for stage, curve in report["cost_curves"]["stages"].items():
        curves[stage] = {key: {int(size): value for size, value in curve[key].items()}
                         for key in ("ms_per_image", "peak_tree_pss_mib")}
    return curves


def plot(report: dict, out: Path) -> Path:
    curves = stage_curves(report)
    figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    cost, memory = figure.subplots(1, 2)
    for stage, curve in curves.items():
        label = STAGE_LABELS.get(stage, stage)
        sizes = sorted(curve["ms_per_image"])
        cost.plot(sizes, [curve["ms_per_image"][s] for s in sizes], marker="o", label=label)
        memory.plot(sizes, [curve["peak_tree_pss_mib"][s] / 1024 for s in sizes], marker="o", label=label)
    for axis in (cost, memory):
        axis.set_xscale("log")
        axis.set_xlabel("images in the world")
        axis.grid(True, which="both", alpha=0.3)
    cost.set_yscale("log")
    cost.set_ylabel("ms per image (work seconds / images)")
    cost.set_title("Cost per image: flat = linear in images")
    memory.axhline(report["targets"]["peak_memory_gib"], color="red", linestyle="--", label="target (8 GiB)")
    memory.set_ylabel("peak memory of the process tree, GiB (PSS)")
    memory.set_title("Peak memory per stage")
    memory.legend(fontsize=8, loc="upper left")
    figure.suptitle(f"COCO pipeline at COCO's size on shapes data: {report['device']}", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(out))
    return out


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", help="a JSON written by bench/coco_scale.py")
    parser.add_argument("--out", default="docs/figures/coco_scale.png", help="the PNG to write (default %(default)s)")
    return parser


def main(argv=None) -> None:
    args = get_args_parser().parse_args(argv)
    report = json.loads(Path(args.result).read_text())
    if report.get("benchmark") != "coco_scale":
        raise SystemExit(f"{args.result} is not a bench/coco_scale.py result (its benchmark is "
                         f"{report.get('benchmark')!r})")
    print(plot(report, Path(args.out)))


if __name__ == "__main__":
    main()
