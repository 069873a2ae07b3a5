"""Training throughput: captions/s of our training step against the tutorial's loop, same run.

Synthetic COCO-shaped data (see bench/workloads.py): 256 px images through a frozen ResNet-101
(random weights) pooled to 14×14×2048, vocabulary 9,490, dims 512, caption lengths ~ N(10.5,
2.5) words + <start>/<end>. Two modes:

- decoder-only: the inputs are precomputed features (ours: the fp16 feature cache's
  (B, P, D); the tutorial: fp32 (B, g, g, D)).
- encoder in the loop: the frozen encoder runs on the images at every step.

Paths, timed on the same data sizes: `tutorial reference` (bench/tutorial_reference.py: one
caption per item, so one encoder pass per caption; the per-step, shrinking-batch fp32 loop),
`ours plain (fused_decoder=false)`, `ours fused`, `ours fused+compile` (torch.compile of
the recurrent step; on by default on CUDA, `--compile` elsewhere), and `ours fused, hard
attention (sampled)` (model.attention_mode=hard, a location sampled at every step), and `ours
SCST` (self-critical training: 5 sampled captions per image; captions/s counts the samples). Ours takes
`captions_per_image` = 5 captions per image sharing one encoder pass, as training does, so a
batch of N captions holds N/5 images; compare captions/s. Ours runs in bf16 autocast on CUDA
(`train.amp`, the recipe's setting; `--no-amp` for fp32), fp32 on CPU. Inputs are on the
device before timing for every path: this measures the step, not data loading.

On CUDA it also reports the peak GPU memory of the COCO recipe (configs/coco_resnet101.yaml,
random encoder weights) at its configured batch size, with drawn caption lengths and with
every caption at the 50-word maximum.

    python bench/train_throughput.py                      # CUDA: batches of 32, 80, 160 captions
    python bench/train_throughput.py --device cpu         # CPU: batches of 32 and 80 captions, fewer steps
    python bench/train_throughput.py --quick              # tiny sizes, seconds, for CI

Prints one JSON object; without --quick it is also saved as
bench/results/train_throughput_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import math
from pathlib import Path

import torch

import measure
import tutorial_reference as tutorial
import workloads
from captioner.config import load_config
from captioner.device import keep_freed_memory, resolve_device
from captioner.model import CaptionModel
from captioner.training import SelfCritical, build_optimizer, training_step

DECODER_ONLY, ENCODER_IN_LOOP = "decoder-only (cached features)", "encoder in the loop"
TUTORIAL, PLAIN, FUSED, COMPILED = ("tutorial reference", "ours plain (fused_decoder=false)", "ours fused",
                                    "ours fused+compile")
# hard attention (model.attention_mode=hard) with a location sampled at every step of every batch:
# the cost of its sampled batches (training samples in half of them, hard_expected_context=0.5)
HARD = "ours fused, hard attention (sampled)"
# self-critical training (train.objective=scst, configs/coco_resnet101_scst.yaml's sampling): 5
# captions of at most 16 words sampled per image; captions/s counts sampled captions. The
# reward's own cost at COCO scale is bench/reward_speed.py's.
SCST = "ours SCST (5 samples, <= 16 words, CIDEr-D)"
COMPILE_WARMUP = 5
COCO_RECIPE = Path(__file__).resolve().parent.parent / "configs" / "coco_resnet101.yaml"
TARGETS = {  # issue 7, on one H100 80GB
    "decoder_only_captions_per_s": 17500,
    "encoder_in_loop_captions_per_s": 5000,
    "coco_recipe_peak_memory_gib": 24,
}


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool):
    """The tutorial sets torch.backends.cudnn.benchmark; ours leaves the default."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def tutorial_step(sizes: workloads.Sizes, mode: str, captions_per_step: int, device: torch.device,
                  generator: torch.Generator, batches: int):
    """A closure running one tutorial training step per call, cycling through `batches`
    pre-made caption batches of `captions_per_step` items, one image (or feature grid) each."""
    encoder, decoder = workloads.tutorial_models(sizes, device)
    encoder.train(), decoder.train()  # as the tutorial's train(): batch norm in training mode
    optimizer = torch.optim.Adam(decoder.parameters(), lr=4e-4)
    captions = itertools.cycle([workloads.tutorial_batch(captions_per_step, sizes.vocab_size, generator, device)
                                for _ in range(batches)])
    if mode == ENCODER_IN_LOOP:
        images = workloads.random_images(captions_per_step, sizes, device, generator)
        return lambda: tutorial.train_step_with_encoder(encoder, decoder, optimizer, images, *next(captions))
    features = workloads.random_features(captions_per_step, sizes, device, generator, torch.float32)
    features = features.view(captions_per_step, sizes.grid, sizes.grid, sizes.feature_dim)  # (B, g, g, D)
    return lambda: tutorial.train_step(decoder, optimizer, features, *next(captions))


def our_step(sizes: workloads.Sizes, mode: str, path: str, images: int, device: torch.device,
             generator: torch.Generator, batches: int, amp: bool):
    """A closure running one `captioner.training.training_step` per call on `images` images
    × 5 captions, cycling through `batches` pre-made batches already on the device."""
    cached = mode == DECODER_ONLY
    config = workloads.our_config(sizes, [
        f"data.cache_features={str(cached).lower()}", f"train.fused_decoder={str(path != PLAIN).lower()}",
        f"train.compile={str(path == COMPILED).lower()}", f"train.amp={str(amp).lower()}",
        f"train.batch_size={images}",
        *(["model.attention_mode=hard", "train.hard_expected_context=0.0"] if path == HARD else []),
        *(["train.objective=scst"] if path == SCST else []),
    ])
    model = CaptionModel(config.model, sizes.vocab_size).to(device).train()
    if config.train.compile:
        model.decoder.compile_step()
    optimizer = build_optimizer(model, config)
    if cached:
        inputs = workloads.random_features(images, sizes, device, generator)
    else:
        inputs = workloads.random_images(images, sizes, device, generator)
    prepared = [_to_device(workloads.our_batch(inputs, sizes.vocab_size, generator), device) for _ in range(batches)]
    self_critical = _self_critical(prepared[0], sizes, config) if path == SCST else None
    cycle = itertools.cycle(prepared)
    return lambda: training_step(model, next(cycle), optimizer, config, device, None, self_critical)


def _self_critical(batch: dict, sizes: workloads.Sizes, config) -> SelfCritical:
    """The SCST reward with each image's references taken from the batch's captions."""
    captions = [row[:length].tolist() for row, length in zip(batch["captions"].cpu(), batch["lengths"].cpu())]
    image_index = batch["image_index"].tolist()
    references = [[c for c, i in zip(captions, image_index) if i == image] for image in range(len(batch["inputs"]))]
    return SelfCritical.from_references(references, workloads.vocabulary(sizes), config)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def measure_row(path: str, mode: str, captions_per_step: int, args, sizes, device) -> dict:
    """Build one path's model and data, time its steps, and describe the row."""
    generator = torch.Generator().manual_seed(0)  # every path sees the same length draws
    batches = args.warmup + args.steps
    measure.reset_peak_memory(device)
    if path == TUTORIAL:
        images, captions = captions_per_step, captions_per_step
        with cudnn_benchmark(True):
            step = tutorial_step(sizes, mode, captions_per_step, device, generator, batches)
            times = measure.timed_seconds(step, device, args.warmup, args.steps)
        precision = "fp32"
    else:
        images = max(1, round(captions_per_step / workloads.CAPTIONS_PER_IMAGE))
        captions = images * workloads.CAPTIONS_PER_IMAGE
        # compiled rows need more warm-up: a new shortest batch or longest caption can still
        # recompile in the first steps, and compilation is not what this times
        warmup = max(args.warmup, COMPILE_WARMUP) if path == COMPILED else args.warmup
        step = our_step(sizes, mode, path, images, device, generator, warmup + args.steps, args.amp)
        times = measure.timed_seconds(step, device, warmup, args.steps)
        precision = "bf16 autocast" if args.amp and device.type == "cuda" else "fp32"
    seconds = sum(times)
    row = {
        "path": path,
        "mode": mode,
        "batch_captions": captions,
        "batch_images": images,
        "precision": precision,
        "captions_per_s": round(captions * len(times) / seconds, 1),
        "step_ms_median": measure.median_ms(times),
    }
    if device.type == "cuda":
        row["peak_memory_mib"] = measure.peak_memory_mib(device)
    del step
    _release(device)
    return row


def _release(device: torch.device) -> None:
    """Return cached blocks so the next row's peak is its own."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def add_speedups(rows: list[dict]) -> None:
    """Each of our rows gets `vs_tutorial`: its captions/s over the tutorial row of the same
    mode and requested batch size."""
    baseline = {(r["mode"], r["requested_batch"]): r["captions_per_s"] for r in rows if r["path"] == TUTORIAL}
    for row in rows:
        reference = baseline.get((row["mode"], row["requested_batch"]))
        if row["path"] != TUTORIAL and reference:
            row["vs_tutorial"] = round(row["captions_per_s"] / reference, 2)


def coco_recipe_memory(device: torch.device, steps: int, overrides: list[str] = ()) -> dict:
    """Peak GPU memory of the COCO recipe's training step (plus `overrides`) at its configured
    batch size: with drawn caption lengths, and with every caption as long as the recipe allows."""
    config = load_config(COCO_RECIPE, ["model.encoder.weights=none", *overrides])
    encoder = config.model.encoder
    sizes = dataclasses.replace(workloads.COCO, backbone=encoder.backbone, image_size=encoder.image_size,
                                grid=encoder.grid)
    model = CaptionModel(config.model, sizes.vocab_size).to(device).train()
    if config.train.compile:
        model.decoder.compile_step()
    optimizer = build_optimizer(model, config)
    generator = torch.Generator().manual_seed(0)
    images, per_image = config.train.batch_size, config.data.captions_per_image
    pixels = workloads.random_images(images, sizes, device, generator)
    longest = [config.data.max_caption_words + 2] * (images * per_image)
    report = {"config": str(COCO_RECIPE.relative_to(COCO_RECIPE.parent.parent)), "batch_images": images,
              "batch_captions": images * per_image, "amp": config.train.amp,
              "fused_decoder": config.train.fused_decoder, "compile": config.train.compile}
    for name, lengths in (("drawn_lengths", None), ("longest_captions", longest)):
        measure.reset_peak_memory(device)
        for _ in range(steps):
            batch = workloads.our_batch(pixels, sizes.vocab_size, generator, per_image, lengths)
            training_step(model, _to_device(batch, device), optimizer, config, device)
        measure.synchronize(device)
        report[f"peak_memory_mib_{name}"] = measure.peak_memory_mib(device)
    report["fits_24_gib"] = max(report["peak_memory_mib_drawn_lengths"],
                                report["peak_memory_mib_longest_captions"]) <= 24 * 1024
    del model, optimizer, pixels
    _release(device)
    return report


def plan(args, device: torch.device) -> list[tuple[str, str, int]]:
    """(path, mode, captions per step) of every row, tutorial first within each group."""
    paths = [TUTORIAL, PLAIN, FUSED] + ([COMPILED] if args.compile else []) + [HARD, SCST]
    return [(path, mode, batch) for mode in args.modes for batch in args.batch_sizes for path in paths]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+",
                        help="captions per step (ours: a fifth as many images); default CUDA 32 80 160, CPU 32 80")
    parser.add_argument("--modes", nargs="+", choices=["decoder", "encoder"], default=["decoder", "encoder"])
    parser.add_argument("--warmup", type=int, help="untimed steps per row (default CUDA 5, CPU 1)")
    parser.add_argument("--steps", type=int, help="timed steps per row (default CUDA 20, CPU 3)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time ours with torch.compile (default: on CUDA only)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                        help="ours in bf16 autocast on CUDA, as the recipes train (default on)")
    parser.add_argument("--no-coco-memory", action="store_true", help="skip the COCO recipe's peak memory")
    measure.add_common_arguments(parser, "tiny sizes and two steps: checks the script runs")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    measure.set_threads(args.threads, args.quick)
    keep_freed_memory()  # as `fit` does, for both sides: the figures are what training gets
    device = resolve_device(args.device)
    machine = measure.machine(device)  # before the run: its load average is other work's, not ours
    cuda = device.type == "cuda"
    sizes = workloads.QUICK if args.quick else workloads.COCO
    args.modes = [{"decoder": DECODER_ONLY, "encoder": ENCODER_IN_LOOP}[m] for m in args.modes]
    args.batch_sizes = args.batch_sizes or ([10] if args.quick else [32, 80, 160] if cuda else [32, 80])
    args.warmup = args.warmup if args.warmup is not None else 1 if args.quick or not cuda else 5
    args.steps = args.steps or (2 if args.quick else 20 if cuda else 3)
    args.compile = cuda and not args.quick if args.compile is None else args.compile

    rows = []
    for path, mode, batch in plan(args, device):
        row = measure_row(path, mode, batch, args, sizes, device)
        rows.append({**row, "requested_batch": batch})
    add_speedups(rows)
    if args.quick or args.no_coco_memory:
        coco_memory = {"skipped": "--quick or --no-coco-memory"}
    elif not cuda:
        coco_memory = {"skipped": "CUDA only: a CPU run has no GPU memory to report"}
    else:
        coco_memory = coco_recipe_memory(device, 2)
    report = {
        "benchmark": "train_throughput",
        **machine,
        "quick": args.quick,
        "sizes": {**dataclasses.asdict(sizes), "feature_dim": sizes.feature_dim},
        "captions_per_image_ours": workloads.CAPTIONS_PER_IMAGE,
        "caption_words": f"round(N({workloads.MEAN_WORDS}, {workloads.STD_WORDS})) clamped to [1, 50], + 2",
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "rows": rows,
        "best_captions_per_s": best_by_mode(rows),
        "coco_recipe_memory": coco_memory,
        "peak_memory_mib": measure.peak_memory_mib(device),
        "peak_memory_kind": measure.peak_memory_kind(device),
        "targets_h100": TARGETS,
    }
    measure.write_report(report, args.output, "train_throughput", device, save=not args.quick)


def best_by_mode(rows: list[dict]) -> dict:
    """Per mode: the best captions/s of the tutorial and of ours, and their ratio."""
    best = {}
    for mode in {r["mode"] for r in rows}:
        tutorial_best = max((r["captions_per_s"] for r in rows if r["mode"] == mode and r["path"] == TUTORIAL),
                            default=math.nan)
        ours = [r for r in rows if r["mode"] == mode and r["path"] not in (TUTORIAL, HARD, SCST)]  # same training
        top = max(ours, key=lambda r: r["captions_per_s"]) if ours else None
        best[mode] = {"tutorial_reference": tutorial_best,
                      "ours": top and top["captions_per_s"],
                      "ours_path": top and top["path"], "ours_batch_captions": top and top["batch_captions"],
                      "ratio": top and round(top["captions_per_s"] / tutorial_best, 2)}
    return best


if __name__ == "__main__":
    main()
