"""Reward speed: what the CIDEr-D reward of self-critical training costs per 1,000 captions.

Times `captioner.cider.CiderD.scores` on one SCST batch: B images × K = 5 sampled captions,
given as the (B·K, L) token tensor `captioner.decoding.sample` returns (words, <end>, padding),
against 5 references per image from a corpus built once. Two synthetic workloads with a fixed
seed, 10–16 words per caption: shapes-world-like (48-entry vocabulary, uniform words) and
COCO-like (10,000-entry vocabulary, Zipf-distributed words). Samples are references of their
image with about 40% of the words redrawn and the length changed, so they share n-grams with it.

The baseline, measured in the same run on the same captions, is pycocoevalcap's `CiderScorer`
called once per batch on the (candidate, references) pairs, as strings "w<id>" made beforehand
(not timed). It takes df and N from the batch's own references, while `CiderD` takes them from
the corpus; so the run also scores the batch with a `CiderD` built on the batch's pairs, which
is then CiderScorer's definition exactly, and reports the largest difference (and that path's
time, construction included).

    python bench/reward_speed.py            # corpus of 113,287 images (COCO's Karpathy train), batches of 200 × 5
    python bench/reward_speed.py --quick    # corpus of 300 images, batches of 40 × 5

Prints one JSON object; without --quick it is also saved as
bench/results/reward_speed_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

import numpy as np
import torch
from pycocoevalcap.cider.cider_scorer import CiderScorer

import measure
from captioner.cider import CiderD

REFERENCES, SAMPLES = 5, 5
MIN_WORDS, MAX_WORDS = 10, 16
PAD, START, END, FIRST_WORD = 0, 1, 2, 4  # captioner.vocab's special ids
WORKLOADS = {  # name → (vocabulary size with the 4 specials, Zipf exponent; 0: uniform)
    "shapes-world-like": (48, 0.0),
    "coco-like": (10_000, 1.0),
}


def word_sampler(vocab_size: int, exponent: float, rng: np.random.Generator):
    """A function count → word ids (≥ 4), uniform or Zipf-distributed over the vocabulary."""
    ranks = np.arange(1, vocab_size - FIRST_WORD + 1, dtype=np.float64)
    p = ranks**-exponent
    p /= p.sum()
    return lambda count: FIRST_WORD + rng.choice(len(p), size=count, p=p)


def corpus(images: int, draw, rng: np.random.Generator) -> list[list[list[int]]]:
    """`images` × 5 references of 10–16 words, the words drawn in one call (COCO has 566,435)."""
    lengths = rng.integers(MIN_WORDS, MAX_WORDS + 1, images * REFERENCES)
    captions = [words.tolist() for words in np.split(draw(int(lengths.sum())), np.cumsum(lengths)[:-1])]
    return [captions[i: i + REFERENCES] for i in range(0, len(captions), REFERENCES)]


def samples_of(references: list[list[int]], draw, rng: np.random.Generator) -> list[list[int]]:
    """5 sample-like captions of an image: a reference, ~40% of its words redrawn, ±3 words."""
    captions = []
    for _ in range(SAMPLES):
        words = np.array(references[rng.integers(len(references))])
        redraw = rng.random(len(words)) < 0.4
        words[redraw] = draw(int(redraw.sum()))
        length = int(np.clip(len(words) + rng.integers(-3, 4), 1, MAX_WORDS))
        captions.append(np.concatenate([words, draw(max(0, length - len(words)))])[:length].tolist())
    return captions


def as_sampled_tensor(captions: list[list[int]]) -> torch.Tensor:
    """Captions → (M, MAX_WORDS + 1) as `sample` returns them: words, <end>, then <pad>."""
    tokens = torch.full((len(captions), MAX_WORDS + 1), PAD, dtype=torch.long)
    for row, words in enumerate(captions):
        tokens[row, : len(words) + 1] = torch.tensor([*words, END])
    return tokens


def ciderscorer_scores(pairs: list[tuple[str, list[str]]]) -> np.ndarray:
    """pycocoevalcap's CIDEr-D of each (candidate, references) pair, df and N from the pairs."""
    scorer = CiderScorer(n=4, sigma=6.0)
    for candidate, references in pairs:
        scorer += (candidate, references)
    with contextlib.redirect_stdout(io.StringIO()):
        _, scores = scorer.compute_score()
    return np.asarray(scores)


def text(tokens) -> str:
    return " ".join(f"w{t}" for t in tokens)


def run_workload(name: str, corpus_images: int, batch_images: int, repeats: int, seed: int) -> dict:
    vocab_size, exponent = WORKLOADS[name]
    rng = np.random.default_rng(seed)
    draw = word_sampler(vocab_size, exponent, rng)
    references = corpus(corpus_images, draw, rng)
    started = time.perf_counter()
    cider = CiderD(references, end_id=END, drop_ids=(START, PAD))
    build_seconds = time.perf_counter() - started

    images = rng.choice(corpus_images, batch_images, replace=False)
    captions = [c for i in images for c in samples_of(references[i], draw, rng)]
    tokens, rows = as_sampled_tensor(captions), torch.as_tensor(images).repeat_interleave(SAMPLES)
    cpu = torch.device("cpu")
    ours = measure.timed_seconds(lambda: cider.scores(rows, tokens), cpu, warmup=2, repeats=repeats)

    pairs = [(text(c), [text(r) for r in references[i]]) for c, i in zip(captions, rows.tolist())]
    baseline_times = measure.timed_seconds(lambda: ciderscorer_scores(pairs), cpu, warmup=1,
                                           repeats=max(1, repeats // 3))

    def ours_per_batch_df():  # CiderScorer's definition: every pair one document of the corpus
        batch = CiderD([references[i] for i in rows.tolist()], end_id=END, drop_ids=(START, PAD))
        return batch.scores(np.arange(len(rows)), tokens)

    same_definition = measure.timed_seconds(ours_per_batch_df, cpu, warmup=1, repeats=max(1, repeats // 3))
    difference = np.abs(ours_per_batch_df() - ciderscorer_scores(pairs)).max()
    per_1000 = 1000 * 1000 / len(captions)  # seconds of one batch → ms per 1,000 captions
    ours_ms = float(np.median(ours)) * per_1000
    baseline_ms = float(np.median(baseline_times)) * per_1000
    return {
        "workload": name, "vocab_size": vocab_size, "zipf_exponent": exponent,
        "corpus_images": corpus_images, "references_per_image": REFERENCES,
        "words_per_caption": [MIN_WORDS, MAX_WORDS], "batch_images": batch_images,
        "samples_per_image": SAMPLES, "captions_per_batch": len(captions),
        "corpus_build_seconds": round(build_seconds, 3),
        "ours_ms_per_1000_captions": round(ours_ms, 2),
        "ciderscorer_ms_per_1000_captions": round(baseline_ms, 2),
        "speedup": round(baseline_ms / ours_ms, 1),
        "ours_with_batch_df_ms_per_1000_captions": round(float(np.median(same_definition)) * per_1000, 2),
        "max_abs_difference_same_definition": float(difference),
        "mean_reward": round(float(cider.scores(rows, tokens).mean()), 4),
        "timed_repeats": {"ours": repeats, "ciderscorer": max(1, repeats // 3)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    measure.add_common_arguments(parser, "a 300-image corpus, batches of 40 images; saves nothing")
    parser.add_argument("--device", default="cpu", choices=["cpu"], help="the reward runs in numpy, on the CPU")
    parser.add_argument("--corpus-images", type=int, default=113_287, help="default: Karpathy train + restval")
    parser.add_argument("--batch-images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    measure.set_threads(args.threads, args.quick)
    device = torch.device("cpu")
    corpus_images, batch_images = (300, 40) if args.quick else (args.corpus_images, args.batch_images)
    report = {"benchmark": "reward_speed", **measure.machine(device), "quick": args.quick,
              "command": " ".join(["python bench/reward_speed.py", *sys.argv[1:]]),
              "numpy": np.__version__}
    report["workloads"] = [run_workload(name, corpus_images, batch_images, 3 if args.quick else args.repeats,
                                        args.seed) for name in WORKLOADS]
    report["peak_memory_mib"] = measure.peak_memory_mib(device)
    report["peak_memory_kind"] = measure.peak_memory_kind(device)
    measure.write_report(report, args.output, "reward_speed", device, save=not args.quick)


if __name__ == "__main__":
    main()
