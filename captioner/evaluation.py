"""Decode a split with a model and score it: COCO caption metrics, plus grounding on shapes data
and CHAIR (object hallucination) when an instances file is given.

Used by validation during training and by `captioner evaluate`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from captioner.atomic import AtomicFile
from captioner.chair import Instances, chair, load_instances, object_grounding, summarize_object_grounding
from captioner.coco_eval import (
    FOLDER_METADATA,
    GroundTruth,
    evaluate_captions,
    load_annotations,
    split_references,
)
from captioner.config import DataConfig
from captioner.data.coco import DatasetError, ImageRecord, load_split, official_captions_file
from captioner.data.folder import metadata_file
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
    (which `captioner evaluate` reports). The references are the records' captions, the ones
    training learns from: validation only ranks checkpoints, so it needs no captions file."""
    ground_truth = GroundTruth({r.image_id: list(r.captions) for r in records}, "validation references")
    return evaluate_captions(ground_truth, texts, java=False)["metrics"]


def shapes_scores(decoded: dict[int, CaptionResult], objects_file: Path) -> dict[str, float]:
    """Object recall, hallucination and attention grounding of decoded shapes captions."""
    texts = {i: c.text for i, c in decoded.items()}
    attentions = {i: (c.words, c.attention) for i, c in decoded.items()}
    return shapes_report(texts, attentions, load_objects(objects_file))


def chair_scores(texts: dict[int, str], ground_truth: GroundTruth, instances: str | Path) -> dict:
    """CHAIR of `texts` against the instances file and the references' objects (see `chair`)."""
    return chair(texts, ground_truth.references, load_instances(instances))


def object_grounding_scores(decoded: dict[int, CaptionResult], instances: Instances) -> dict[str, float]:
    """Attention mass and pointing, in boxes and in masks, of the words naming an object that is
    in the image (see `chair.object_grounding`), averaged over those words."""
    records = [record for image_id, result in decoded.items()
               for record in object_grounding(result.words, result.attention.cpu(), image_id, instances)]
    return summarize_object_grounding(records)


def write_results(texts: dict[int, str], path: Path) -> None:
    """COCO results format: [{"image_id": int, "caption": str}, ...]."""
    with AtomicFile(path) as handle:
        json.dump([{"image_id": i, "caption": t} for i, t in sorted(texts.items())], handle, indent=1)


def write_scores(report: dict, path: Path) -> None:
    """The report of `evaluate_captions` as JSON (image ids become strings there), atomically."""
    report = {**report, "per_image": {str(i): scores for i, scores in report.get("per_image", {}).items()}}
    with AtomicFile(path) as handle:
        json.dump(report, handle, indent=1)


def split_ground_truth(data: DataConfig, split: str, records: Sequence[ImageRecord]) -> GroundTruth:
    """What a split's captions are scored against: the references COCOEvalCap would use.

    With a split file, `records` (the whole split) are matched to the captions file of their
    image folder, falling back to the split file's sentences (see `coco_eval.split_references`);
    without, the split is an official captions file, read in COCOEvalCap's order. An image
    folder's references are its metadata's captions, the only ones it has.
    """
    if data.format == "folder":
        references = {record.image_id: list(record.captions) for record in records}
        return GroundTruth(references, metadata_file(data.root).name, FOLDER_METADATA)
    if data.split_file:
        return split_references(records, data.root, data.split_file)
    return load_annotations(official_captions_file(data.root, split), data.root)


def decode_and_score(
    captioner: Captioner,
    data: DataConfig,
    split: str,
    options: DecodingOptions,
    results_path: Path,
    java: bool | None = None,
    max_images: int | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
    progress: bool = False,
    instances: str | Path | None = None,
) -> dict:
    """Caption a split, write the captions as a COCO results file, and score them with the
    official metrics against the references of `split_ground_truth` (plus grounding on a
    shapes dataset; CHAIR and object grounding in boxes and masks when an `instances` file is
    given). Returns the report."""
    records = load_split(data, split)
    ground_truth = split_ground_truth(data, split, records)
    # Read before decoding, so that a bad instances file fails at once, not after the captioning.
    objects = load_instances(instances) if instances is not None else None
    decoded = decode_records(captioner, records[:max_images], options, batch_size=batch_size,
                             num_workers=num_workers, progress=progress)
    texts = {i: c.text for i, c in decoded.items()}
    write_results(texts, results_path)
    report = {
        "checkpoint": captioner.checkpoint,
        "split": split,
        "results": str(results_path),
        "decoding": dataclasses.asdict(options),
        # captions cut at max_len without <end>: scored as they are, counted so that it shows
        "unfinished": sum(not c.finished for c in decoded.values()),
        **evaluate_captions(ground_truth, texts, java),
    }
    if objects is not None:
        report["chair"] = chair(texts, ground_truth.references, objects)
        report["object_grounding"] = object_grounding_scores(decoded, objects)
    objects_file = Path(data.root) / SHAPES_OBJECTS
    if objects_file.is_file():
        report["shapes"] = shapes_scores(decoded, objects_file)
    return report
