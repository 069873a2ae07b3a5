"""One-image captioning latency on a CPU: our Captioner against the tutorial's code, same run.

Issue 7's CPU targets, on a 2-core machine: a COCO-size model (ResNet-101 at 256 px, grid 14,
dims 512, vocabulary 9,490) captions one image at beam 3 in ≤ 300 ms (the tutorial's code takes
~1,580 ms there, ~910 ms at beam 1, with ResNet-101's forward alone ~170 ms); the bundled model
in ≤ 100 ms.

Measured here, each as the median of `--runs` calls after two untimed ones, from a decoded
640×480 RGB image in memory (resizing and normalising included, file decoding not):

- ours at COCO size (random weights; `Captioner.caption`), the same with int8 decoder weights
  (`Captioner.load(quantize=True)`, `captioner caption --quantize`), and the tutorial re-creation
  (bench/tutorial_reference.py: its preprocessing, encoder and per-image beam search) at the
  same sizes, beams 1 and 3, both running the same 16 decoder steps (random weights would
  otherwise never emit <end>);
- the ResNet-101 forward alone at batch 1: our encoder (channels-last, pooled to 14×14) and
  the tutorial's (default memory format);
- the bundled model (`Captioner.load()`), beam 3, stopping at <end> as it does in use.

    python bench/cpu_latency.py              # torch's thread count (2 on the 2-core machine)
    python bench/cpu_latency.py --quick      # tiny sizes, seconds, for CI

Prints one JSON object; without --quick it is also saved as
bench/results/cpu_latency_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from PIL import Image

import measure
import tutorial_reference as tutorial
import workloads
from captioner.device import resolve_device
from captioner.images import load_image
from captioner.inference import Captioner, quantize_decoder

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shapes_5.jpg"
TARGETS_MS = {"coco_size_beam_3": 300, "bundled_beam_3": 100}  # issue 7, 2-core CPU
REFERENCE_MS = {"tutorial_beam_3": 1580, "tutorial_beam_1": 910, "resnet101_forward": 170}  # issue 7's figures


def photo() -> Image.Image:
    """A COCO-sized (640×480) RGB photo in memory: the bundled example, enlarged."""
    return load_image(EXAMPLE).resize((640, 480))


def coco_size_latencies(sizes: workloads.Sizes, image: Image.Image, device: torch.device, args) -> list[dict]:
    """Median ms per image: ours and the tutorial re-creation at `sizes`, per beam size."""
    ours = workloads.our_captioner(sizes, device)
    quantized = None
    if device.type == "cpu":  # int8 dynamic quantization is a CPU path
        quantized = workloads.our_captioner(sizes, device)
        quantize_decoder(quantized.model)
    encoder, decoder = workloads.tutorial_models(sizes, device)
    encoder.eval(), decoder.eval()
    steps = args.steps
    rows = []
    for beam in args.beams:
        def tutorial_call(beam=beam):
            pixels = tutorial.preprocess(image, sizes.image_size).to(device)
            tutorial.caption_image_beam_search(encoder, decoder, pixels, workloads.START_ID, workloads.END_ID,
                                               beam, forced_steps=steps)

        def our_call(beam=beam, captioner=ours):
            # min_len = max_len = steps - 1: <end> is masked until the last of `steps` decoder steps
            captioner.caption(image, beam_size=beam, max_len=steps - 1, min_len=steps - 1)

        paths = [("tutorial reference", tutorial_call), ("ours", our_call)]
        if quantized is not None:
            paths.append(("ours, int8 decoder (--quantize)", lambda beam=beam: our_call(beam, quantized)))
        for path, call in paths:
            times = measure.timed_seconds(call, device, args.warmup, args.runs)
            rows.append({"path": path, "beam_size": beam, "median_ms": measure.median_ms(times),
                         "min_ms": round(min(times) * 1000, 1)})
    for row in rows:
        reference = next(r for r in rows if r["beam_size"] == row["beam_size"] and r["path"] == "tutorial reference")
        row["speedup_vs_tutorial"] = round(reference["median_ms"] / row["median_ms"], 2)
    return rows


def encoder_latencies(sizes: workloads.Sizes, device: torch.device, args) -> dict:
    """Median ms of one image's encoder forward: ours and the tutorial's."""
    ours = workloads.our_captioner(sizes, device).model.encoder
    theirs, _ = workloads.tutorial_models(sizes, device)
    theirs.eval()
    pixels = workloads.random_images(1, sizes, device, torch.Generator().manual_seed(0))
    figures = {}
    for name, encoder in (("ours_channels_last", ours), ("tutorial", theirs)):
        with torch.no_grad():
            times = measure.timed_seconds(lambda encoder=encoder: encoder(pixels), device, args.warmup, args.runs)
        figures[f"{name}_median_ms"] = measure.median_ms(times)
    return {"backbone": sizes.backbone, "image_size": sizes.image_size, "batch_size": 1, **figures}


def bundled_latency(image: Image.Image, device: torch.device, args) -> dict:
    """Median ms of the bundled model captioning `image` at beam 3, natural stopping."""
    captioner = Captioner.load(None, device)
    times = measure.timed_seconds(lambda: captioner.caption(image, beam_size=3), device, args.warmup, args.runs)
    return {"beam_size": 3, "max_len": 20, "median_ms": measure.median_ms(times),
            "min_ms": round(min(times) * 1000, 1), "caption": captioner.caption(image, beam_size=3)[0].text}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (the point of this script) or another device")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per figure (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--steps", type=int, default=16, help="decoder steps per caption at COCO size")
    measure.add_common_arguments(parser, "tiny sizes, two runs: checks the script runs")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    measure.set_threads(args.threads, args.quick)
    if args.quick:
        args.runs, args.warmup, args.steps = 2, 1, 4
    device = resolve_device(args.device)
    machine = measure.machine(device)  # before the run: its load average is other work's, not ours
    sizes = workloads.QUICK if args.quick else workloads.COCO
    image = photo()
    rows = coco_size_latencies(sizes, image, device, args)
    report = {
        "benchmark": "cpu_latency",
        **machine,
        "quick": args.quick,
        "runs": args.runs,
        "input": "640x480 RGB image decoded in memory; preprocessing included",
        "coco_size": {"sizes": {**dataclasses.asdict(sizes), "feature_dim": sizes.feature_dim},
                      "decoder_steps": args.steps, "weights": "random", "rows": rows},
        "encoder_forward": encoder_latencies(sizes, device, args),
        "bundled_model": bundled_latency(image, device, args),
        "peak_memory_mib": measure.peak_memory_mib(device),
        "peak_memory_kind": measure.peak_memory_kind(device),
        "targets_ms_2core_cpu": TARGETS_MS,
        "issue_reference_ms_2core_cpu": REFERENCE_MS,
    }
    measure.write_report(report, args.output, "cpu_latency", device, save=not args.quick)


if __name__ == "__main__":
    main()
