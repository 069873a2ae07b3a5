"""Decode a split with a model and score it: COCO caption metrics, plus grounding on shapes data.

Used by validation during training and by `captioner evaluate`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from captioner.atomic import AtomicFile
from captioner.coco_eval import GroundTruth, evaluate_captions
from captioner.data.coco import DatasetError, ImageRecord
from captioner.data.shapes import load_objects
from captioner.decoding import DecodingOptions
from captioner.inference import CaptionResult, Captioner
from captioner.metrics import shapes_report

SHAPES_OBJECTS = Path("annotations") / "shapes_objects.json"


def decode_records(
    captioner: Captioner,
    records: Sequence[ImageRecord],
    options: DecodingOptions,
    features: torch.Tensor | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[int, CaptionResult]:
    """Captions {image_id: CaptionResult} of `records`, from cached features (N, P, D) or the
    images. An image that cannot be read is a broken dataset here, not a skippable input."""
    bar = tqdm(total=len(records), desc="decoding", unit="img", disable=not progress, leave=False)
    if features is not None:
        results = (result for start in range(0, len(records), batch_size)
                   for result in captioner.caption_features(features[start : start + batch_size], options))
    else:
        results = captioner.caption_files([r.path for r in records], options, batch_size, num_workers)
    decoded = {}
    for record, result in zip(records, results):
        if not result.ok:
            raise DatasetError(f"cannot caption {record.path}: {result.error}")
        decoded[record.image_id] = result
        bar.update()
    bar.close()
    return decoded


def score_captions(records: Sequence[ImageRecord], texts: dict[int, str]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr of `texts` against every reference of each record, with the
    Python tokenizer: no JVM start-ups in the training loop, and close to the official figures
    (which `captioner evaluate` reports)."""
    ground_truth = GroundTruth({r.image_id: list(r.captions) for r in records}, "validation references")
    return evaluate_captions(ground_truth, texts, java=False)["metrics"]


def shapes_scores(decoded: dict[int, CaptionResult], objects_file: Path) -> dict[str, float]:
    """Object recall, hallucination and attention grounding of decoded shapes captions."""
    texts = {i: c.text for i, c in decoded.items()}
    attentions = {i: (c.words, c.attention) for i, c in decoded.items()}
    return shapes_report(texts, attentions, load_objects(objects_file))


def write_results(texts: dict[int, str], path: Path) -> None:
    """COCO results format: [{"image_id": int, "caption": str}, ...]."""
    with AtomicFile(path) as handle:
        json.dump([{"image_id": i, "caption": t} for i, t in sorted(texts.items())], handle, indent=1)
