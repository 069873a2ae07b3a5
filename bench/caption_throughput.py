"""Captioning throughput: our batched beam search against one image at a time, same model, same images.

The baseline is the way the popular tutorials caption: each image is encoded alone, its K
hypotheses advance in a beam that shrinks as hypotheses finish, with Python bookkeeping per step
(re-created here from that description). Both sides start from preprocessed pixels in memory,
include the encoder, and return the attention maps; a second pair of figures times the beam
search alone, from encoder features (on a CPU the encoder's cost per image does not fall with
the batch size, so it caps the end-to-end gain). A third figure runs the batch CLI's path from
JPEG files on disk (loading in worker processes). The one-at-a-time figures run on the first
`--baseline-images` images (256 by default): their rate needs no more.

Also in the same run:

- a scaling table: images/s of our batched path for batch size × beam size;
- the tutorial's own model and per-image beam search (bench/tutorial_reference.py) at COCO
  size (ResNet-101 at 256 px, 14×14×2048, dims 512, vocabulary 9,490, random weights) against
  ours at the same sizes, both running the same fixed number of decoder steps (16: random
  weights would otherwise never emit <end>), beams 1, 3 and 5;
- the device, and the peak memory (CUDA: max allocated; CPU: the process's peak RSS).

`--model coco-size` runs the main figures on our model at COCO size (random weights) instead
of the bundled shapes model, with larger JPEGs for the files figure: the GPU target of issue 7
(≥ 2,000 images/s from JPEG files, beam 3) is about that model.

    python bench/caption_throughput.py                      # bundled model, 256 shapes images
    python bench/caption_throughput.py --model coco-size    # COCO-size model (on CUDA: 2,048 images)
    python bench/caption_throughput.py --quick              # a few seconds, for CI

Prints one JSON object; without --quick it is also saved as
bench/results/caption_throughput_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch

import measure
import tutorial_reference as tutorial
import workloads
from captioner.data.shapes import generate
from captioner.decoding import DecodingOptions
from captioner.device import resolve_device
from captioner.images import load_image
from captioner.inference import Captioner

TARGET_FILES_IMAGES_PER_S_H100 = 2000  # issue 7: COCO-size model, beam 3, JPEG files to captions


@torch.no_grad()
def one_image_beam_search(captioner: Captioner, features: torch.Tensor, beam_size: int, max_len: int):
    """The tutorials' per-image beam search: features (1, P, D) → best word ids, attention (L, P)."""
    model, vocab = captioner.model, captioner.vocab
    # the decoder's state is a tuple of per-row tensors ((h, c), or more): only its rows matter here
    features, keys, state = model.decoder.begin(features)
    k = beam_size
    features, keys = features.expand(k, -1, -1), keys.expand(k, -1, -1)
    state = tuple(part.expand(k, *part.shape[1:]) for part in state)
    previous = torch.full((k,), vocab.start_id, dtype=torch.long, device=features.device)
    sequences = previous.unsqueeze(1)
    alphas = features.new_zeros(k, 0, features.shape[1])
    scores = features.new_zeros(k, 1)
    finished, finished_alphas, finished_scores = [], [], []
    for step in range(max_len + 1):
        logits, state, alpha = model.decoder.step(previous, state, keys, features)
        totals = scores + logits.log_softmax(dim=-1)
        V = totals.shape[1]
        top_scores, top_index = (totals[0] if step == 0 else totals.view(-1)).topk(k)
        beams, words = top_index // V, top_index % V
        sequences = torch.cat([sequences[beams], words.unsqueeze(1)], dim=1)
        alphas = torch.cat([alphas[beams], alpha[beams].unsqueeze(1)], dim=1)
        running = [i for i, word in enumerate(words.tolist()) if word != vocab.end_id]
        ended = [i for i in range(len(words)) if i not in running]
        for i in ended:
            finished.append(sequences[i, 1:-1].tolist())
            finished_alphas.append(alphas[i, :-1])
            finished_scores.append(float(top_scores[i]))
        k -= len(ended)
        if k == 0:
            break
        sequences, alphas = sequences[running], alphas[running]
        keep = beams[running]
        state, features, keys = tuple(part[keep] for part in state), features[keep], keys[keep]
        scores, previous = top_scores[running].unsqueeze(1), words[running]
    if not finished:
        return sequences[0, 1:].tolist(), alphas[0]
    best = max(range(len(finished)), key=finished_scores.__getitem__)
    return finished[best], finished_alphas[best]


def images_per_second(run, count: int, repeats: int, device: torch.device) -> float:
    """Best of `repeats` timings (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        measure.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return count / best


def batched(captioner: Captioner, pixels: torch.Tensor, batch_size: int, options: DecodingOptions):
    """A closure captioning `pixels` (N, 3, S, S) in batches of `batch_size`, encoder included."""
    def run():
        for start in range(0, len(pixels), batch_size):
            captioner.caption_pixels(pixels[start : start + batch_size], options)
    return run


def main_figures(captioner: Captioner, paths: list[str], args) -> dict:
    """The figures this script has always reported: batched vs one image at a time, end to end
    and decoding alone, and the batch CLI's path from files."""
    device, repeats = captioner.device, args.repeats
    pixels = torch.stack([captioner.model.encoder.preprocess(load_image(p)) for p in paths]).to(device)
    options = DecodingOptions(beam_size=args.beam_size, max_len=args.max_len)

    few = args.baseline_images  # the per-image loops are slow: a rate over fewer images is enough

    def one_at_a_time():
        with torch.no_grad():
            for i in range(few):
                features = captioner.model.encoder(pixels[i : i + 1])
                one_image_beam_search(captioner, features, args.beam_size, args.max_len)

    with torch.no_grad():
        features = torch.cat([captioner.model.encoder(pixels[i : i + args.batch_size])
                              for i in range(0, len(pixels), args.batch_size)])

    def decode_batched():
        for start in range(0, len(features), args.batch_size):
            captioner.caption_features(features[start : start + args.batch_size], options)

    def decode_one_at_a_time():
        for i in range(few):
            one_image_beam_search(captioner, features[i : i + 1], args.beam_size, args.max_len)

    def from_files():
        for _ in captioner.caption_files(paths, options, args.batch_size, args.num_workers):
            pass

    batched_run = batched(captioner, pixels, args.batch_size, options)
    batched_run()  # warm-up: lazy initialisation, allocator, thread pools
    per_image = images_per_second(one_at_a_time, few, repeats, device)
    batched_rate = images_per_second(batched_run, len(pixels), repeats, device)
    decode_per_image = images_per_second(decode_one_at_a_time, few, repeats, device)
    decode_batched_rate = images_per_second(decode_batched, len(pixels), repeats, device)
    files_rate = images_per_second(from_files, len(paths), repeats, device)
    return {
        "baseline_one_image_at_a_time_images_per_s": round(per_image, 2),
        "batched_images_per_s": round(batched_rate, 2),
        "speedup": round(batched_rate / per_image, 2),
        "decoding_only_one_image_at_a_time_images_per_s": round(decode_per_image, 2),
        "decoding_only_batched_images_per_s": round(decode_batched_rate, 2),
        "decoding_only_speedup": round(decode_batched_rate / decode_per_image, 2),
        "files_end_to_end_images_per_s": round(files_rate, 2),
        "one_image_at_a_time_images": few,
        "files_num_workers": args.num_workers,
        "files_jpeg_size": args.jpeg_size,
    }, pixels


def scaling_table(captioner: Captioner, pixels: torch.Tensor, args) -> list[dict]:
    """Images/s of our batched path (pixels in memory, encoder included) per batch × beam."""
    rows = []
    for beam in args.scaling_beams:
        options = DecodingOptions(beam_size=beam, max_len=args.max_len)
        for batch in args.scaling_batches:
            run = batched(captioner, pixels, batch, options)
            measure.reset_peak_memory(captioner.device)
            run()  # warm-up at this shape
            row = {"batch_size": batch, "beam_size": beam,
                   "images_per_s": round(images_per_second(run, len(pixels), args.repeats, captioner.device), 2)}
            if captioner.device.type == "cuda":
                row["peak_memory_mib"] = measure.peak_memory_mib(captioner.device)
            rows.append(row)
    return rows


def tutorial_comparison(sizes: workloads.Sizes, device: torch.device, args) -> dict:
    """The tutorial re-creation's per-image beam search against ours at the same sizes and the
    same number of decoder steps, from the same preprocessed pixels, encoder included."""
    generator = torch.Generator().manual_seed(0)
    pixels = workloads.random_images(args.reference_images, sizes, device, generator)
    steps = args.reference_steps
    encoder, decoder = workloads.tutorial_models(sizes, device)
    encoder.eval(), decoder.eval()
    ours = workloads.our_captioner(sizes, device)
    rows = []
    for beam in args.reference_beams:
        def tutorial_run(beam=beam):
            for image in pixels:
                tutorial.caption_image_beam_search(encoder, decoder, image, workloads.START_ID, workloads.END_ID,
                                                   beam, forced_steps=steps)
        # min_len = max_len = steps - 1: <end> is masked until the last of `steps` decoder steps
        options = DecodingOptions(beam_size=beam, max_len=steps - 1, min_len=steps - 1)
        runs = [("tutorial reference, one image at a time", 1, tutorial_run),
                ("ours, one image at a time", 1, batched(ours, pixels, 1, options)),
                ("ours, batched", args.batch_size, batched(ours, pixels, args.batch_size, options))]
        for path, batch, run in runs:
            run()  # warm-up
            rate = images_per_second(run, len(pixels), args.repeats, device)
            rows.append({"path": path, "beam_size": beam, "batch_size": min(batch, len(pixels)),
                         "images_per_s": round(rate, 2), "ms_per_image": round(1000 / rate, 1)})
    for row in rows:
        reference = next(r for r in rows if r["beam_size"] == row["beam_size"] and r["path"].startswith("tutorial"))
        row["vs_tutorial"] = round(row["images_per_s"] / reference["images_per_s"], 2)
    return {"sizes": {**dataclasses.asdict(sizes), "feature_dim": sizes.feature_dim},
            "images": len(pixels), "decoder_steps": steps,
            "input": "preprocessed pixels in memory, encoder included, random weights", "rows": rows}


def load_model(args, device: torch.device) -> tuple[Captioner, str]:
    """Our captioner for the main figures and its description."""
    if args.checkpoint:
        return Captioner.load(args.checkpoint, device), args.checkpoint
    if args.model == "coco-size":
        sizes = workloads.QUICK if args.quick else workloads.COCO
        return workloads.our_captioner(sizes, device), f"COCO-size, random weights: {sizes}"
    return Captioner.load(None, device), "bundled shapes model"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="model to benchmark (default: the bundled shapes model)")
    parser.add_argument("--model", choices=["bundled", "coco-size"], default="bundled",
                        help="without --checkpoint: the bundled model, or ours at COCO size with random weights")
    parser.add_argument("--images", type=int, help="distinct shapes images (default 256; CUDA with coco-size 2048)")
    parser.add_argument("--baseline-images", type=int,
                        help="images for the one-at-a-time figures (default: min(images, 256))")
    parser.add_argument("--jpeg-size", type=int, help="side of the JPEG files (default 224; coco-size 480)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--num-workers", type=int, help="loader processes for the files figure (default 2; CUDA 8)")
    parser.add_argument("--scaling-batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--scaling-beams", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--scaling-images", type=int, help="images per scaling cell (default: min(images, 128))")
    parser.add_argument("--reference-images", type=int, help="images for the tutorial comparison (CPU 8, CUDA 64)")
    parser.add_argument("--reference-beams", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--reference-steps", type=int, default=16, help="decoder steps per caption in that comparison")
    parser.add_argument("--no-reference", action="store_true", help="skip the tutorial comparison")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    measure.add_common_arguments(parser, "a few images, one repeat, tiny sizes: checks the script runs")
    return parser.parse_args(argv)


def fill_defaults(args, device: torch.device) -> None:
    """Defaults that depend on the device, the model and --quick."""
    cuda, coco = device.type == "cuda", args.model == "coco-size" and not args.checkpoint
    if args.quick:
        args.images, args.repeats, args.batch_size = 8, 1, 4
        args.scaling_batches, args.scaling_beams = [1, 4], [1, 3]
        args.reference_images, args.reference_beams, args.reference_steps = 2, [1, 3], 4
    args.images = args.images or (2048 if cuda and coco else 256)
    args.jpeg_size = args.jpeg_size or (480 if coco and not args.quick else 224)
    args.num_workers = args.num_workers if args.num_workers is not None else 8 if cuda else 2
    args.scaling_images = min(args.scaling_images or 128, args.images)
    args.baseline_images = min(args.baseline_images or 256, args.images)
    args.reference_images = args.reference_images or (64 if cuda else 8)


def main(argv=None) -> None:
    args = parse_args(argv)
    measure.set_threads(args.threads, args.quick)
    device = resolve_device(args.device)
    machine = measure.machine(device)  # before the run: its load average is other work's, not ours
    fill_defaults(args, device)
    measure.reset_peak_memory(device)
    captioner, model_name = load_model(args, device)
    with tempfile.TemporaryDirectory() as folder:
        generate(folder, args.images, seed=123, splits={"test": 1.0}, image_size=args.jpeg_size,
                 workers=max(1, min(os.cpu_count() or 1, 8)) if args.images > 256 else 1, progress=False)
        paths = sorted(str(p) for p in Path(folder, "val2014").glob("*.jpg"))
        figures, pixels = main_figures(captioner, paths, args)
    scaling = scaling_table(captioner, pixels[: args.scaling_images], args)
    del pixels
    reference = ({"skipped": "--no-reference"} if args.no_reference else
                 tutorial_comparison(workloads.QUICK if args.quick else workloads.COCO, device, args))
    report = {
        "benchmark": "caption_throughput",
        **machine,
        "quick": args.quick,
        "model": model_name,
        "images": len(paths),
        "beam_size": args.beam_size,
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        **figures,
        "scaling": {"images": min(args.scaling_images, len(paths)), "max_len": args.max_len,
                    "input": "preprocessed pixels in memory, encoder included", "rows": scaling},
        "tutorial_comparison": reference,
        "peak_memory_mib": measure.peak_memory_mib(device),
        "peak_memory_kind": measure.peak_memory_kind(device),
        "target_files_images_per_s_h100": TARGET_FILES_IMAGES_PER_S_H100,
    }
    measure.write_report(report, args.output, "caption_throughput", device, save=not args.quick)


if __name__ == "__main__":
    main()
