"""The shapes world's correctness and grounding scores (COCO's caption metrics: `coco_eval`).

The shapes metrics compare what a caption names with the objects really in the image, and
measure how much of a word's attention falls on the object the word names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from captioner.data.shapes import Mention, ShapesImage, find_mentions
from captioner.vocab import tokenize


@dataclass(frozen=True)
class ObjectMatch:
    """What one caption names in its image, honouring counts and sizes.

    `named[k]`: whether some mention names object k. `mentions`: the caption's colour+shape
    mentions (a shape said without a colour names nothing here); `unmatched[i]`: how many of
    mention i's count name no object ("two red circles" with one red circle: 1; "a small red
    circle" with only a large one: 1).
    """

    named: tuple[bool, ...]
    mentions: tuple[Mention, ...]
    unmatched: tuple[int, ...]

    @property
    def said(self) -> int:
        """Objects the caption says, with multiplicity ("two red circles" → 2)."""
        return sum(m.count for m in self.mentions)

    @property
    def wrong(self) -> int:
        """Objects said that are not in the image (absent, surplus, or the wrong size)."""
        return sum(self.unmatched)

    @property
    def exact(self) -> bool:
        """Every object named, with the right counts, and nothing named that is not there."""
        return all(self.named) and self.wrong == 0


def match_objects(words: Sequence[str], image: ShapesImage) -> ObjectMatch:
    """Match a caption's mentions to the image's objects, each object named at most once.

    A mention names up to its count of objects of its colour and shape, and of its size when it
    says one. Mentions that say a size go first: they can name fewer objects, so a mention
    without one must not take the object they need ("a red circle and a small red circle").
    """
    mentions = tuple(m for m in find_mentions(words) if m.colour is not None)
    named = [False] * len(image.objects)
    unmatched = [0] * len(mentions)
    for i in sorted(range(len(mentions)), key=lambda i: mentions[i].size is None):
        free = [k for k, obj in enumerate(image.objects) if not named[k] and mentions[i].names(obj)]
        for k in free[: mentions[i].count]:
            named[k] = True
        unmatched[i] = max(0, mentions[i].count - len(free))
    return ObjectMatch(tuple(named), mentions, tuple(unmatched))


def match_captions(captions: Mapping[int, str], images: Mapping[int, ShapesImage]) -> dict[int, ObjectMatch]:
    """`match_objects` of every captioned image, by image id."""
    return {image_id: match_objects(tokenize(caption), _image(images, image_id))
            for image_id, caption in captions.items()}


def object_recall(captions: Mapping[int, str], images: Mapping[int, ShapesImage]) -> float:
    """Share of all objects, over the captioned images, that the caption names (`match_objects`):
    colour and shape, and size when one is said.

    Counts multiplicity: two red circles need "two red circles" (or two mentions). 1.0 when
    the images hold no objects.
    """
    matches = match_captions(captions, images).values()
    total = sum(len(m.named) for m in matches)
    return sum(sum(m.named) for m in matches) / total if total else 1.0


def hallucination_rate(captions: Mapping[int, str], images: Mapping[int, ShapesImage]) -> float:
    """Share of the objects the captions say (with multiplicity) that match no object of the
    image: absent, one too many, or the wrong size. 0.0 when the captions mention nothing."""
    matches = match_captions(captions, images).values()
    said = sum(m.said for m in matches)
    return sum(m.wrong for m in matches) / said if said else 0.0


def by_object_count(captions: Mapping[int, str], images: Mapping[int, ShapesImage]) -> dict[str, dict[str, float]]:
    """Recall, hallucination and the share of images named exactly, per number of objects in
    the image ("1", "2", "3", ...), and over all images ("all"); `images` counts each group."""
    matches = match_captions(captions, images)
    groups: dict[str, list[ObjectMatch]] = {"all": list(matches.values())}
    for match in matches.values():
        groups.setdefault(str(len(match.named)), []).append(match)
    report = {}
    for name in sorted(groups, key=lambda g: (g == "all", g)):
        group = groups[name]
        objects, said = sum(len(m.named) for m in group), sum(m.said for m in group)
        report[name] = {
            "images": len(group),
            "object_recall": sum(sum(m.named) for m in group) / objects if objects else 1.0,
            "hallucination_rate": sum(m.wrong for m in group) / said if said else 0.0,
            "exact": sum(m.exact for m in group) / len(group),
        }
    return report


def _image(images: Mapping[int, ShapesImage], image_id: int) -> ShapesImage:
    try:
        return images[image_id]
    except KeyError:
        raise KeyError(f"image id {image_id} has a caption but no object annotations") from None


def attention_grounding(
    words: Sequence[str], attention: np.ndarray | torch.Tensor, image: ShapesImage
) -> list[dict]:
    """One record per generated shape word that names an object in `image`.

    `attention[t]` (T, h, w) is the map used to generate `words[t]`; steps after the last word
    (such as the one producing <end>) are ignored. The word can name every object matching the
    mention's colour+shape (shape only when no colour precedes it): "two red circles" names
    both red circles, and "a red circle" either of two. Each record holds the word position and
    text, the box of the match holding the most attention and the attention mass inside it,
    whether the argmax cell's centre lies in the box of a match whose size also fits the
    mention's size word (`pointing`: "a small red circle" peaking on the large red circle is a
    miss), the same ignoring size words (`pointing_ignoring_size`), whether a missed peak lies
    in the box of an object the word cannot name (`other_object`: it looks at the wrong object,
    not at the background), and the uniform-attention baseline (that box's area / image area).
    """
    maps = _as_numpy(attention)
    if maps.ndim != 3 or maps.shape[0] < len(words):
        raise ValueError(f"attention must be (T, h, w) with T >= {len(words)} words, got {maps.shape}")
    records = []
    for mention in find_mentions(words):
        matches = [
            o for o in image.objects
            if o.shape == mention.shape and mention.colour in (None, o.colour)
        ]
        if not matches:
            continue
        grid = maps[mention.index]
        masses = [box_mass(grid, o.bbox, image.width, image.height) for o in matches]
        best = int(np.argmax(masses))
        box = matches[best].bbox
        peak = peak_centre(grid, image.width, image.height)
        pointing = any(inside_box(peak, o.bbox) for o in matches if mention.names(o))
        records.append({
            "t": mention.index,
            "word": words[mention.index],
            "bbox": list(box),
            "mass": masses[best],
            "pointing": pointing,
            "pointing_ignoring_size": any(inside_box(peak, o.bbox) for o in matches),
            "other_object": not pointing and any(inside_box(peak, o.bbox) for o in image.objects),
            "baseline": box[2] * box[3] / (image.width * image.height),
        })
    return records


def _as_numpy(attention: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(attention, torch.Tensor):
        attention = attention.detach().to("cpu", torch.float64).numpy()
    return np.asarray(attention, dtype=np.float64)


def box_mass(grid: np.ndarray, bbox: Sequence[float], width: int, height: int) -> float:
    """Share of an (h, w) attention map's mass inside box (x, y, w, h) of a width×height image.

    Grid cells tile the image evenly; a cell contributes its mass times the fraction of its
    area the box covers, so the result is exact for boxes that cut through cells.
    """
    rows, cols = grid.shape
    x, y, w, h = bbox
    cover_x = _coverage(x, x + w, width, cols)
    cover_y = _coverage(y, y + h, height, rows)
    total = float(grid.sum())
    return float(cover_y @ grid @ cover_x) / total if total > 0 else 0.0


def _coverage(low: float | np.ndarray, high: float | np.ndarray, extent: int, cells: int) -> np.ndarray:
    """Fraction of each of `cells` equal intervals tiling [0, extent] that [low, high] covers
    (`cells`,); with (n, 1) arrays of bounds, one row per interval (n, `cells`)."""
    edges = np.linspace(0.0, extent, cells + 1)
    overlap = np.clip(np.minimum(edges[1:], high) - np.maximum(edges[:-1], low), 0.0, None)
    return overlap / (extent / cells)


def mask_mass(grid: np.ndarray, mask: np.ndarray) -> float:
    """Share of an (h, w) attention map's mass inside a region given as an (H, W) pixel mask of
    the image the grid tiles (each value: the share of that pixel in the region).

    A cell contributes its mass times the share of its area the region covers, as in
    `box_mass`; for a mask that is exact at pixel resolution.
    """
    rows, cols = grid.shape
    height, width = mask.shape
    cover = _pixel_coverage(height, rows).T @ mask @ _pixel_coverage(width, cols)
    total = float(grid.sum())
    return float((grid * cover).sum()) / total if total > 0 else 0.0


def _pixel_coverage(extent: int, cells: int) -> np.ndarray:
    """(extent, cells): the fraction of each cell that each pixel of [0, extent] covers."""
    pixels = np.arange(extent, dtype=np.float64)[:, None]
    return _coverage(pixels, pixels + 1, extent, cells)


def box_mask(boxes: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """(H, W) share of each pixel inside the union of boxes (x, y, w, h), so that `mask_mass`
    measures boxes and segmentation masks alike. A pixel cut by two boxes counts with the
    larger share (exact unless partial pixels of two boxes overlap)."""
    mask = np.zeros((height, width))
    for x, y, w, h in boxes:
        share = np.outer(_coverage(y, y + h, height, height), _coverage(x, x + w, width, width))
        np.maximum(mask, share, out=mask)
    return mask


def peak_centre(grid: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """Image coordinates (x, y) of the centre of an (h, w) map's highest cell."""
    rows, cols = grid.shape
    row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return (col + 0.5) * width / cols, (row + 0.5) * height / rows


def inside_box(point: tuple[float, float], bbox: Sequence[float]) -> bool:
    """Whether image point (x, y) lies in box (x, y, w, h), edges included."""
    x, y, w, h = bbox
    return bool(x <= point[0] <= x + w and y <= point[1] <= y + h)


def summarize_grounding(records: Sequence[Mapping]) -> dict[str, float]:
    """Means over grounding records: attention mass in box, pointing accuracy (honouring size
    words, and ignoring them), share of words whose argmax cell lies on an object they cannot
    name, uniform baseline.

    `mass_over_baseline` is mean mass / mean baseline (1.0 means no better than uniform). All
    values are 0.0 when there are no records; `count` says how many there were.
    """
    if not records:
        return {"count": 0, "mass": 0.0, "pointing": 0.0, "pointing_ignoring_size": 0.0, "other_object": 0.0,
                "baseline": 0.0, "mass_over_baseline": 0.0}
    mass = float(np.mean([r["mass"] for r in records]))
    baseline = float(np.mean([r["baseline"] for r in records]))
    return {
        "count": len(records),
        "mass": mass,
        "pointing": float(np.mean([r["pointing"] for r in records])),
        "pointing_ignoring_size": float(np.mean([r["pointing_ignoring_size"] for r in records])),
        "other_object": float(np.mean([r["other_object"] for r in records])),
        "baseline": baseline,
        "mass_over_baseline": mass / baseline,
    }


def shapes_report(
    captions: Mapping[int, str],
    attentions: Mapping[int, tuple[Sequence[str], np.ndarray | torch.Tensor]] | None,
    images: Mapping[int, ShapesImage],
) -> dict[str, float]:
    """Object recall, hallucination rate, the share of images named exactly, those three per
    number of objects in the image (`by_object_count`, keys "objects_1_exact" ...), and (when
    attentions are given) the grounding summary.

    `attentions` maps image id → (generated words, (T, h, w) attention maps); grounding keys
    are prefixed "grounding_".
    """
    groups = by_object_count(captions, images)
    report = {key: groups["all"][key] for key in ("object_recall", "hallucination_rate", "exact")}
    report |= {f"objects_{count}_{key}": value for count, group in groups.items() if count != "all"
               for key, value in group.items()}
    if attentions is not None:
        records = [
            record
            for image_id, (words, maps) in attentions.items()
            for record in attention_grounding(words, maps, _image(images, image_id))
        ]
        report |= {f"grounding_{key}": value for key, value in summarize_grounding(records).items()}
    return report
