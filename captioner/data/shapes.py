"""The shapes world: a synthetic captioning dataset written in the official COCO layout.

Each image shows 1–3 non-overlapping coloured shapes on a plain or softly textured background,
with five reference captions that always name every object by colour and shape and never name
anything else. Because every object's box is known, the dataset also supports measuring object
recall, hallucination and attention grounding (see `captioner.metrics`).

Layout written by `generate(out_dir, ...)`, as for COCO with Karpathy's split::

    train2014/COCO_train2014_{id:012d}.jpg        train images
    val2014/COCO_val2014_{id:012d}.jpg            val and test images
    annotations/captions_train2014.json           COCO captions (pycocotools)
    annotations/captions_val2014.json
    annotations/shapes_objects.json               per-image boxes, shapes, colours, sizes
    annotations/instances_train2014.json          COCO detection format: the shapes as categories,
    annotations/instances_val2014.json            with boxes and polygon outlines (for CHAIR)
    dataset_shapes.json                           Karpathy-style split file

The same seed gives byte-identical files, whatever the number of worker processes: every image
draws from its own random generators, derived from (seed, image index).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from captioner.vocab import tokenize

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
PLURALS = MappingProxyType({shape: shape + ("es" if shape.endswith("ss") else "s") for shape in SHAPES})
# Saturated colours far from each other and from the grey-ish backgrounds, so a colour word is
# always recoverable from the pixels.
COLOUR_RGB = MappingProxyType({
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (240, 210, 25),
    "purple": (135, 50, 185),
    "orange": (245, 135, 20),
})
COLOURS = tuple(COLOUR_RGB)
# Box side as a fraction of the image side. Small objects span about one cell of a 7×7 grid.
SIZE_FRACTIONS = MappingProxyType({"small": (0.14, 0.20), "large": (0.30, 0.40)})
SIZES = tuple(SIZE_FRACTIONS)
BACKGROUNDS = ("light", "dark")
CAPTIONS_PER_IMAGE = 5
JPEG_QUALITY = 95

_COUNT_WORDS = MappingProxyType({"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5})
_SINGULAR = MappingProxyType({**{s: s for s in SHAPES}, **{p: s for s, p in PLURALS.items()}})
_SPLITS = ("train", "val", "test")
_FOLDERS = MappingProxyType({"train": "train2014", "val": "val2014", "test": "val2014"})
_COLOUR_JITTER = 12  # per channel; keeps neighbouring colours (orange/yellow) apart
_MAX_OBJECTS = 3
_REPEAT_PROBABILITY = 0.2  # chance an extra object copies an earlier one's colour+shape (counts)
_SIZE_WORD_PROBABILITY = 0.35
_RELATION_PROBABILITY = 0.5
_RELATION_CLARITY = 1.25  # dominant axis offset must exceed the other by this factor
_SUPERSAMPLE = 4  # shapes are drawn larger then box-filtered down, for anti-aliased edges


@dataclass(frozen=True)
class ShapeObject:
    """One object: `bbox` is (x, y, w, h) in pixels; the shape touches all four box edges."""

    bbox: tuple[int, int, int, int]
    shape: str
    colour: str
    size: str


@dataclass(frozen=True)
class ShapesImage:
    """An image's size in pixels, its objects, and its background tone ("light"/"dark")."""

    width: int
    height: int
    objects: tuple[ShapeObject, ...]
    file_name: str = ""
    background: str = ""


@dataclass(frozen=True)
class Mention:
    """A shape word at `index` of a word sequence, with its colour and size (if said) and count.
    `start` is the phrase's first word (its count word, size or colour word, or the shape word
    itself); `colour_index` is where its colour word is (None without one)."""

    index: int
    shape: str
    colour: str | None
    count: int
    size: str | None
    start: int
    colour_index: int | None

    def names(self, obj: ShapeObject) -> bool:
        """Whether this mention can name `obj`: same shape, and colour and size where said."""
        return obj.shape == self.shape and self.colour in (None, obj.colour) and self.size in (None, obj.size)


@dataclass(frozen=True)
class _Scene:
    """Everything needed to draw and caption one image."""

    size: int
    background: str
    base_rgb: tuple[float, float, float]
    objects: tuple[ShapeObject, ...]
    object_rgb: tuple[tuple[int, int, int], ...]


# ---------------------------------------------------------------------------------------------
# Reading captions


def find_mentions(words: Sequence[str]) -> list[Mention]:
    """Every shape word (singular or plural) in `words`, with the colour, size and count before it.

    Size words may sit between the count, colour and shape ("two small red circles"). A plural
    without a count word counts as two. Words are matched case-insensitively.
    """
    words = [w.lower() for w in words]
    mentions = []
    for index, word in enumerate(words):
        if word not in _SINGULAR:
            continue
        before, size = _skip_sizes(words, index - 1)
        colour_index = before if before >= 0 and words[before] in COLOUR_RGB else None
        colour = None if colour_index is None else words[colour_index]
        if colour is not None:
            before, size_before_colour = _skip_sizes(words, before - 1)
            size = size or size_before_colour
        plural = word != _SINGULAR[word]
        count = _count_at(words, before) if plural else 1
        counted = plural and before >= 0 and (words[before].isdigit() or words[before] in _COUNT_WORDS)
        start = before if counted else before + 1
        mentions.append(Mention(index, _SINGULAR[word], colour, count, size, start, colour_index))
    return mentions


def _skip_sizes(words: Sequence[str], position: int) -> tuple[int, str | None]:
    """First position at or before `position` that is not a size word (-1 if none), and the
    size word nearest the shape among those skipped (None if none)."""
    size = None
    while position >= 0 and words[position] in SIZE_FRACTIONS:
        size = size or words[position]
        position -= 1
    return position, size


def _count_at(words: Sequence[str], position: int) -> int:
    """The number a plural's count word says, two when there is none."""
    if position < 0:
        return 2
    word = words[position]
    if word.isdigit():
        return int(word)
    return max(_COUNT_WORDS.get(word, 2), 2)


def parse_caption(text: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs a caption names, one entry per object ("two red circles" → 2).

    Shapes said without a colour are not included.
    """
    return [
        (m.colour, m.shape)
        for m in find_mentions(tokenize(text))
        if m.colour is not None
        for _ in range(m.count)
    ]


def load_objects(path: str | Path) -> dict[int, ShapesImage]:
    """Image id → `ShapesImage` from a `shapes_objects.json` written by `generate`."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())["images"]
        return {int(e["image_id"]): _image_from_json(e) for e in entries}
    except FileNotFoundError:
        raise FileNotFoundError(f"shapes object annotations not found: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a shapes_objects.json file ({error!r})") from error


def _image_from_json(entry: Mapping) -> ShapesImage:
    """One `images[]` entry of shapes_objects.json as a `ShapesImage`."""
    objects = tuple(
        ShapeObject(tuple(int(v) for v in o["bbox"]), o["shape"], o["colour"], o["size"])
        for o in entry["objects"]
    )
    return ShapesImage(
        int(entry["width"]), int(entry["height"]), objects, entry.get("file_name", ""),
        entry.get("background", ""),
    )


# ---------------------------------------------------------------------------------------------
# Sampling a scene


def _sample_scene(rng: np.random.Generator, size: int) -> _Scene:
    """Background tone/tint and 1–3 objects placed without overlap."""
    background = str(rng.choice(BACKGROUNDS))
    level = rng.uniform(190, 240) if background == "light" else rng.uniform(20, 70)
    # A small tint keeps backgrounds near-grey, far from every saturated object colour.
    base_rgb = tuple(float(level + t) for t in rng.uniform(-10, 10, size=3))
    while True:
        kinds = _sample_kinds(rng, int(rng.integers(1, _MAX_OBJECTS + 1)))
        sizes = [str(rng.choice(SIZES)) for _ in kinds]
        sides = [max(3, round(size * rng.uniform(*SIZE_FRACTIONS[s]))) for s in sizes]
        boxes = _place_boxes(rng, sides, size)
        if boxes is not None:
            break
    objects = tuple(
        ShapeObject(box, shape, colour, s) for box, (colour, shape), s in zip(boxes, kinds, sizes)
    )
    jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=(len(objects), 3))
    object_rgb = tuple(
        tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOUR_RGB[o.colour], jit))
        for o, jit in zip(objects, jitter)
    )
    return _Scene(size, background, base_rgb, objects, object_rgb)


def _sample_kinds(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """(colour, shape) per object; repeats are boosted so count phrases occur often enough."""
    kinds: list[tuple[str, str]] = []
    for _ in range(count):
        if kinds and rng.random() < _REPEAT_PROBABILITY:
            kinds.append(kinds[int(rng.integers(len(kinds)))])
        else:
            kinds.append((str(rng.choice(COLOURS)), str(rng.choice(SHAPES))))
    return kinds


def _place_boxes(
    rng: np.random.Generator, sides: Sequence[int], size: int, tries: int = 50
) -> list[tuple[int, int, int, int]] | None:
    """Random square boxes of the given sides, inside the image and apart; None if stuck."""
    gap = max(2, round(0.04 * size))
    border = max(1, round(0.02 * size))
    boxes: dict[int, tuple[int, int, int, int]] = {}
    # Placing the largest first makes a dead end (no room left) much rarer.
    for i in sorted(range(len(sides)), key=lambda k: -sides[k]):
        side = sides[i]
        high = size - side - border
        if high < border:
            return None
        for _ in range(tries):
            x, y = (int(v) for v in rng.integers(border, high + 1, size=2))
            box = (x, y, side, side)
            if all(_apart(box, other, gap) for other in boxes.values()):
                boxes[i] = box
                break
        else:
            return None
    return [boxes[i] for i in range(len(sides))]


def _apart(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    """Whether boxes a and b are separated by at least `gap` pixels along some axis."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax + aw + gap <= bx or bx + bw + gap <= ax or ay + ah + gap <= by or by + bh + gap <= ay


# ---------------------------------------------------------------------------------------------
# Drawing


def _render(scene: _Scene, rng: np.random.Generator) -> Image.Image:
    """The scene's pixels: textured background, anti-aliased objects, optional fine grain."""
    pixels = _background(scene, rng)
    for obj, rgb in zip(scene.objects, scene.object_rgb):
        x, y, w, h = obj.bbox
        alpha = _shape_mask(obj.shape, w)[..., None]
        region = pixels[y : y + h, x : x + w]
        pixels[y : y + h, x : x + w] = region * (1 - alpha) + np.asarray(rgb, np.float32) * alpha
    # Grey (not per-channel) grain: film-like, and a third of the random draws.
    pixels += rng.uniform(0, 3) * rng.standard_normal((scene.size, scene.size, 1), dtype=np.float32)
    np.clip(np.rint(pixels, out=pixels), 0, 255, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8))


def _background(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) float32 background: plain, a gentle linear gradient, or soft blotches."""
    size = scene.size
    shade = np.zeros((size, size), np.float32)
    texture = rng.choice(("plain", "gradient", "blotches"))
    if texture == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
        shade = rng.uniform(10, 30) * (math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None])
    elif texture == "blotches":
        cells = int(rng.integers(3, 8))
        coarse = rng.normal(0, rng.uniform(3, 8), size=(cells, cells)).astype(np.float32)
        shade = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    return shade[..., None] + np.asarray(scene.base_rgb, np.float32)


def _shape_mask(shape: str, side: int) -> np.ndarray:
    """(side, side) coverage in [0, 1] of `shape` filling a side×side box edge to edge."""
    big = side * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse((0, 0, big - 1, big - 1), fill=255)
    elif shape == "square":
        draw.rectangle((0, 0, big - 1, big - 1), fill=255)
    else:
        draw.polygon([(u * (big - 1), v * (big - 1)) for u, v in _outline(shape)], fill=255)
    small = mask.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, np.float32) / 255.0


def _outline(shape: str) -> list[tuple[float, float]]:
    """Polygon of `shape` in unit box coordinates (y down), touching all four edges."""
    if shape == "triangle":
        return [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]
    if shape == "diamond":
        return [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
    if shape == "cross":
        a, b = 1 / 3, 2 / 3
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b),
                (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
    if shape == "star":
        points = [
            ((1.0 if k % 2 == 0 else 0.4) * math.cos(math.pi * (k / 5 - 0.5)),
             (1.0 if k % 2 == 0 else 0.4) * math.sin(math.pi * (k / 5 - 0.5)))
            for k in range(10)
        ]
        return _fit_unit_box(points)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _fit_unit_box(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """`points` stretched so their bounding box is exactly [0, 1]², keeping boxes tight."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in points]


# ---------------------------------------------------------------------------------------------
# Writing captions


def _captions(scene: _Scene, rng: np.random.Generator) -> list[str]:
    """Five distinct captions where possible (repeats only if the templates run out)."""
    captions: list[str] = []
    for _ in range(100):
        caption = _caption(scene, rng)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == CAPTIONS_PER_IMAGE:
            return captions
    return [captions[k % len(captions)] for k in range(CAPTIONS_PER_IMAGE)]


def _caption(scene: _Scene, rng: np.random.Generator) -> str:
    """One caption: an object list or a spatial relation, inside a random paraphrase frame."""
    with_sizes = rng.random() < _SIZE_WORD_PROBABILITY
    pair = _relation_pair(scene.objects)
    if pair is not None and rng.random() < _RELATION_PROBABILITY:
        first, second = pair if rng.random() < 0.5 else pair[::-1]
        phrase = " ".join([_noun_phrase(1, first, with_sizes), _relation(first, second),
                           _noun_phrase(1, second, with_sizes)])
        plural = False
    else:
        groups = _groups(scene.objects, with_sizes)
        order = rng.permutation(len(groups))
        phrases = [_noun_phrase(len(groups[i]), groups[i][0], with_sizes) for i in order]
        phrase = _join(phrases)
        plural = len(groups[order[0]]) > 1
    frames = (
        "{p}",
        "there are {p}" if plural else "there is {p}",
        "an image with {p}",
        "a picture showing {p}",
        "a drawing of {p}",
        "{p} on a {bg} background",
        "a {bg} background with {p}",
    )
    text = str(rng.choice(frames)).format(p=phrase, bg=scene.background)
    return text[0].upper() + text[1:] + "."


def _groups(objects: Sequence[ShapeObject], with_sizes: bool) -> list[list[ShapeObject]]:
    """Objects grouped by colour+shape (and size when sizes are said), first-seen order."""
    groups: dict[tuple[str, ...], list[ShapeObject]] = {}
    for obj in objects:
        key = (obj.colour, obj.shape, obj.size) if with_sizes else (obj.colour, obj.shape)
        groups.setdefault(key, []).append(obj)
    return list(groups.values())


def _noun_phrase(count: int, obj: ShapeObject, with_size: bool) -> str:
    """"a small red circle", "an orange star", "two blue squares"."""
    words = ([obj.size] if with_size else []) + [obj.colour]
    if count == 1:
        article = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([article, *words, obj.shape])
    number = {2: "two", 3: "three"}[count]
    return " ".join([number, *words, PLURALS[obj.shape]])


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _relation_pair(objects: Sequence[ShapeObject]) -> tuple[ShapeObject, ShapeObject] | None:
    """The two objects of a two-object image that differ and sit clearly apart on one axis."""
    if len(objects) != 2:
        return None
    a, b = objects
    if (a.colour, a.shape) == (b.colour, b.shape):
        return None
    dx, dy = (abs(d) for d in _centre_offset(a, b))
    if max(dx, dy) < _RELATION_CLARITY * min(dx, dy):
        return None
    return a, b


def _centre_offset(a: ShapeObject, b: ShapeObject) -> tuple[float, float]:
    """Centre of b minus centre of a, in pixels (y grows downwards)."""
    ax, ay, aw, ah = a.bbox
    bx, by, bw, bh = b.bbox
    return (bx + bw / 2) - (ax + aw / 2), (by + bh / 2) - (ay + ah / 2)


def _relation(a: ShapeObject, b: ShapeObject) -> str:
    """Where a is relative to b, along the axis on which their centres differ most."""
    dx, dy = _centre_offset(a, b)
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


# ---------------------------------------------------------------------------------------------
# Generating a dataset


@dataclass(frozen=True)
class _Task:
    """What a worker needs to make image `index`: it writes the JPEG to `path` itself."""

    seed: int
    index: int
    size: int
    path: str


@dataclass(frozen=True)
class _Made:
    """What a worker sends back about one image, for the annotation files."""

    background: str
    objects: tuple[ShapeObject, ...]
    captions: tuple[str, ...]
    tokens: tuple[list[str], ...]  # per caption; computed here so workers share the work


def _make_image(task: _Task) -> _Made:
    """Sample, draw and save image `task.index`; its generators depend on (seed, index) only."""
    scene_seq, caption_seq, pixel_seq = np.random.SeedSequence([task.seed, task.index]).spawn(3)
    scene = _sample_scene(np.random.default_rng(scene_seq), task.size)
    captions = _captions(scene, np.random.default_rng(caption_seq))
    image = _render(scene, np.random.default_rng(pixel_seq))
    image.save(task.path, format="JPEG", quality=JPEG_QUALITY)
    return _Made(scene.background, scene.objects, tuple(captions), tuple(tokenize(c) for c in captions))


def _split_names(num_images: int, splits: Mapping[str, float]) -> list[str]:
    """Split of each image index: contiguous runs in train/val/test order.

    Run lengths are the fractions of `num_images` rounded down, the images left over going to
    the splits with the largest remainders, so the lengths always add up.
    """
    unknown = set(splits) - set(_SPLITS)
    if unknown or any(f < 0 for f in splits.values()) or not math.isclose(sum(splits.values()), 1.0):
        raise ValueError(f"splits must map train/val/test to fractions summing to 1, got {dict(splits)}")
    exact = [num_images * splits.get(name, 0.0) for name in _SPLITS]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(_SPLITS)), key=lambda k: counts[k] - exact[k])
    for k in by_remainder[: num_images - sum(counts)]:
        counts[k] += 1
    return [name for name, count in zip(_SPLITS, counts) for _ in range(count)]


def _file_name(split: str, image_id: int) -> str:
    return f"COCO_{_FOLDERS[split]}_{image_id:012d}.jpg"


def _run(tasks: Sequence[_Task], workers: int, progress: bool) -> Iterator[_Made]:
    """Results of `_make_image` in task order, computed in `workers` processes."""
    bar = dict(total=len(tasks), disable=not progress, desc="shapes", unit="img")
    if workers == 1:
        yield from tqdm(map(_make_image, tasks), **bar)
        return
    # spawn, not fork: callers may already hold threads (torch, tqdm) that fork would copy.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        chunk = max(1, min(64, len(tasks) // (8 * workers)))
        yield from tqdm(pool.map(_make_image, tasks, chunksize=chunk), **bar)


def generate(
    out_dir: str | Path,
    num_images: int,
    seed: int,
    splits: Mapping[str, float] = MappingProxyType({"train": 0.8, "val": 0.1, "test": 0.1}),
    image_size: int = 224,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Write a shapes dataset of `num_images` square images to `out_dir` (see module docstring).

    Image ids run 1..num_images; train/val/test take contiguous id ranges in that order.
    With `workers` > 1 images are drawn in spawned processes, so a script calling this must
    guard its entry point with `if __name__ == "__main__":`. Returns the number of images per
    split and the paths of the annotation files.
    """
    if num_images < 1 or image_size < 32 or workers < 1 or seed < 0:
        raise ValueError(
            f"need num_images >= 1, image_size >= 32, workers >= 1, seed >= 0; got "
            f"{num_images}, {image_size}, {workers}, {seed}"
        )
    out = Path(out_dir)
    names = _split_names(num_images, splits)
    for folder in sorted(set(_FOLDERS.values())) + ["annotations"]:
        (out / folder).mkdir(parents=True, exist_ok=True)
    tasks = [
        _Task(seed, i, image_size, str(out / _FOLDERS[split] / _file_name(split, i + 1)))
        for i, split in enumerate(names)
    ]
    made = list(_run(tasks, workers, progress))
    files = {
        "captions_train": out / "annotations" / "captions_train2014.json",
        "captions_val": out / "annotations" / "captions_val2014.json",
        "objects": out / "annotations" / "shapes_objects.json",
        "instances_train": out / "annotations" / "instances_train2014.json",
        "instances_val": out / "annotations" / "instances_val2014.json",
        "split_file": out / "dataset_shapes.json",
    }
    info = {"description": "captioner shapes world", "seed": seed, "num_images": num_images,
            "image_size": image_size, "splits": dict(splits)}
    _write_json(files["captions_train"], _coco_captions(names, made, image_size, {"train"}, info))
    _write_json(files["captions_val"], _coco_captions(names, made, image_size, {"val", "test"}, info))
    _write_json(files["objects"], _objects_json(names, made, image_size, info))
    _write_json(files["instances_train"], _coco_instances(names, made, image_size, {"train"}, info))
    _write_json(files["instances_val"], _coco_instances(names, made, image_size, {"val", "test"}, info))
    _write_json(files["split_file"], _karpathy_json(names, made))
    return {
        "out_dir": str(out),
        "num_images": num_images,
        "splits": {name: names.count(name) for name in _SPLITS},
        "files": {key: str(path) for key, path in files.items()},
    }


def _coco_captions(
    names: Sequence[str], made: Sequence[_Made], size: int, wanted: set[str], info: dict
) -> dict:
    """An official-style captions JSON of the images whose split is in `wanted`."""
    images, annotations = [], []
    for image_id, item, image in _coco_images(names, made, size, wanted):
        images.append(image)
        annotations += [
            {"id": _sentence_id(image_id, k), "image_id": image_id, "caption": caption}
            for k, caption in enumerate(item.captions)
        ]
    return {"info": info, "licenses": [{"id": 0, "name": "generated", "url": ""}],
            "images": images, "annotations": annotations}


def _coco_images(names: Sequence[str], made: Sequence[_Made], size: int, wanted: set[str]):
    """(image id, what was made for it, its COCO `images[]` entry) of each image whose split is in `wanted`."""
    for i, (split, item) in enumerate(zip(names, made)):
        if split in wanted:
            image_id = i + 1
            yield image_id, item, {"id": image_id, "file_name": _file_name(split, image_id), "width": size,
                                   "height": size, "license": 0}


def _sentence_id(image_id: int, k: int) -> int:
    """Caption ids unique over the dataset, shared by the COCO and Karpathy files."""
    return (image_id - 1) * CAPTIONS_PER_IMAGE + k + 1


def _coco_instances(
    names: Sequence[str], made: Sequence[_Made], size: int, wanted: set[str], info: dict
) -> dict:
    """An official-style instances (detection) JSON of the images whose split is in `wanted`:
    one category per shape, one annotation per object with its box and outline polygon."""
    images, annotations = [], []
    for image_id, item, image in _coco_images(names, made, size, wanted):
        images.append(image)
        annotations += [_instance(image_id, k, obj, size) for k, obj in enumerate(item.objects)]
    categories = [{"id": k + 1, "name": shape, "supercategory": "shape"} for k, shape in enumerate(SHAPES)]
    return {"info": info, "licenses": [{"id": 0, "name": "generated", "url": ""}], "images": images,
            "annotations": annotations, "categories": categories}


def _instance(image_id: int, k: int, obj: ShapeObject, size: int) -> dict:
    """The COCO annotation of object `k` of an image; its area is that of the polygon as
    pycocotools rasterizes it, as COCO's own areas are mask areas."""
    from pycocotools import mask as mask_utils  # noqa: PLC0415 - only needed when writing

    polygon = _polygon(obj)
    area = int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects([polygon], size, size))))
    return {"id": (image_id - 1) * _MAX_OBJECTS + k + 1, "image_id": image_id,
            "category_id": SHAPES.index(obj.shape) + 1, "bbox": list(obj.bbox), "area": area,
            "iscrowd": 0, "segmentation": [polygon]}


def _polygon(obj: ShapeObject) -> list[float]:
    """The shape's outline in image pixels as COCO's flat [x1, y1, x2, y2, ...], rounded to
    hundredths so the file stays short; a circle is a 32-gon."""
    x, y, w, h = obj.bbox
    if obj.shape == "circle":
        unit = [(0.5 + 0.5 * math.cos(2 * math.pi * k / 32), 0.5 + 0.5 * math.sin(2 * math.pi * k / 32))
                for k in range(32)]
    elif obj.shape == "square":
        unit = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    else:
        unit = _outline(obj.shape)
    return [round(v, 2) for u, t in unit for v in (x + u * w, y + t * h)]


def _objects_json(names: Sequence[str], made: Sequence[_Made], size: int, info: dict) -> dict:
    images = [
        {
            "image_id": i + 1,
            "file_name": _file_name(split, i + 1),
            "width": size,
            "height": size,
            "background": item.background,
            "objects": [
                {"bbox": list(o.bbox), "shape": o.shape, "colour": o.colour, "size": o.size}
                for o in item.objects
            ],
        }
        for i, (split, item) in enumerate(zip(names, made))
    ]
    return {"info": info, "images": images}


def _karpathy_json(names: Sequence[str], made: Sequence[_Made]) -> dict:
    images = []
    for i, (split, item) in enumerate(zip(names, made)):
        sentids = [_sentence_id(i + 1, k) for k in range(len(item.captions))]
        sentences = [
            {"raw": caption, "tokens": tokens, "imgid": i, "sentid": sentid}
            for caption, tokens, sentid in zip(item.captions, item.tokens, sentids)
        ]
        images.append({"filepath": _FOLDERS[split], "filename": _file_name(split, i + 1), "split": split,
                       "cocoid": i + 1, "imgid": i, "sentids": sentids, "sentences": sentences})
    return {"dataset": "shapes", "images": images}


def _write_json(path: Path, content: dict) -> None:
    """Write deterministically (sorted keys), via a temporary file so a crash leaves no half file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, sort_keys=True) + "\n")
    os.replace(temporary, path)
