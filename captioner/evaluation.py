"""Decode a split with a model and score it: COCO caption metrics, plus grounding on shapes data.

Used by validation during training and by `captioner evaluate`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioner.data.coco import ImageDataset, ImageRecord
from captioner.data.shapes import load_objects
from captioner.decoding import DecodedCaption, greedy_decode
from captioner.metrics import caption_scores, shapes_report
from captioner.model import CaptionModel
from captioner.vocab import Vocabulary

SHAPES_OBJECTS = Path("annotations") / "shapes_objects.json"


@torch.no_grad()
def decode_records(
    model: CaptionModel,
    vocab: Vocabulary,
    records: Sequence[ImageRecord],
    device: torch.device,
    max_len: int,
    features: torch.Tensor | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[int, DecodedCaption]:
    """Greedy captions {image_id: DecodedCaption} from cached features (N, P, D) or the images."""
    model.eval()
    if features is not None:
        batches = ((range(i, min(i + batch_size, len(records))), features[i : i + batch_size])
                   for i in range(0, len(records), batch_size))
    else:
        loader = DataLoader(ImageDataset(records, model.encoder.preprocess), batch_size=batch_size,
                            num_workers=num_workers)
        batches = ((indices.tolist(), pixels) for indices, pixels in loader)
    decoded = {}
    for indices, inputs in tqdm(batches, desc="decoding", unit="batch", disable=not progress, leave=False,
                                total=-(-len(records) // batch_size)):
        inputs = inputs.to(device)
        grid = inputs.float() if features is not None else model.encoder(inputs)
        for index, caption in zip(indices, greedy_decode(model.decoder, grid, vocab.start_id, vocab.end_id, max_len)):
            decoded[records[index].image_id] = caption
    return decoded


def score_captions(
    records: Sequence[ImageRecord], texts: dict[int, str]
) -> dict[str, float]:
    """COCO caption metrics of `texts` against every reference of each record."""
    return caption_scores({r.image_id: list(r.captions) for r in records}, texts)


def shapes_scores(
    decoded: dict[int, DecodedCaption], vocab: Vocabulary, objects_file: Path, grid: int
) -> dict[str, float]:
    """Object recall, hallucination and attention grounding of decoded shapes captions."""
    images = load_objects(objects_file)
    texts = {i: vocab.decode_text(c.tokens) for i, c in decoded.items()}
    attentions = {
        i: (vocab.decode(c.tokens), c.attention.reshape(-1, grid, grid))
        for i, c in decoded.items()
    }
    return shapes_report(texts, attentions, images)


def write_results(texts: dict[int, str], path: Path) -> None:
    """COCO results format: [{"image_id": int, "caption": str}, ...]."""
    path.write_text(json.dumps([{"image_id": i, "caption": t} for i, t in sorted(texts.items())], indent=1))
