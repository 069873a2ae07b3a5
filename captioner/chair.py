"""CHAIR, the object hallucination metric of Rohrbach et al. (EMNLP 2018, "Object Hallucination
in Image Captioning"), on any COCO-format dataset with instance annotations.

An image's ground-truth objects are the categories of its instance annotations together with
the objects its reference captions name. A caption's object mentions are found by matching its
words (the project's tokenizer) against each category's words and phrases, longest first, so
that "a hot dog" is a hot dog and not a dog. A mention is hallucinated when its category is not
among the image's ground-truth objects.

- CHAIRi = hallucinated mentions / mentions
- CHAIRs = captions with at least one hallucinated mention / captions

`object_grounding` measures, for the generated words naming an object that is in the image,
the attention mass in that object's boxes and segmentation masks (the same word matching).

The synonyms of COCO's 80 categories ship as `assets/coco_synonyms.json`. A dataset's category
missing from it (the shapes world's "circle") is named by its own name and that name's plural.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np

from captioner.data.coco import DatasetError
from captioner.metrics import box_mask, inside_box, mask_mass, peak_centre
from captioner.vocab import tokenize

SYNONYMS_FILE = Path(__file__).parent / "assets" / "coco_synonyms.json"


@dataclass(frozen=True)
class Mention:
    """An object mention: the words as said, the category they name, and the position (in the
    word list searched) of the phrase's last word, the word whose attention map grounds it."""

    words: str
    category: str
    index: int


@dataclass(frozen=True)
class Lexicon:
    """Word sequences → the category they name (None: a phrase that names no object, such as
    "baseball field", matched only so that its words are not read as objects)."""

    phrases: Mapping[tuple[str, ...], str | None]

    def mentions(self, caption: str) -> list[Mention]:
        """The object mentions of `caption` (split by the project's tokenizer), left to right."""
        return self.find(tokenize(caption))

    def find(self, words: Sequence[str]) -> list[Mention]:
        """The object mentions in `words`, left to right, each phrase the longest that matches."""
        # Treebank keeps "cell-phone" and "hot-dog" whole; their parts are the phrase's words.
        parts = [(index, part) for index, word in enumerate(words) for part in word.lower().split("-") if part]
        longest = max((len(p) for p in self.phrases), default=1)
        found, start = [], 0
        while start < len(parts):
            for length in range(min(longest, len(parts) - start), 0, -1):
                phrase = tuple(part for _, part in parts[start : start + length])
                if phrase in self.phrases:
                    break
            else:
                start += 1
                continue
            if self.phrases[phrase] is not None:
                found.append(Mention(" ".join(phrase), self.phrases[phrase], parts[start + length - 1][0]))
            start += length
        return found


@lru_cache(maxsize=1)
def _synonyms() -> Mapping:
    """The shipped synonym table, read once."""
    return json.loads(SYNONYMS_FILE.read_text())


def plural(phrase: str, irregular: Mapping[str, str] = MappingProxyType({})) -> str:
    """`phrase` with its last word in the plural: "hot dog" → "hot dogs", "man" → "men"."""
    *head, last = phrase.split(" ")
    if last in irregular:
        last = irregular[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join([*head, last])


def load_lexicon(categories: Iterable[str]) -> Lexicon:
    """The words naming each of `categories` (a dataset's category names) and their plurals.

    COCO's categories take their synonyms from the shipped table; any other category is named by
    its own name. The table's non-object phrases are always included: they only keep words from
    being read as objects.
    """
    return _lexicon(tuple(categories))


@lru_cache(maxsize=8)
def _lexicon(categories: tuple[str, ...]) -> Lexicon:
    """`load_lexicon`, built once per dataset: grounding asks for it once per image."""
    table = _synonyms()
    irregular = table["irregular_plurals"]
    phrases: dict[tuple[str, ...], str | None] = {}
    for phrase in table["not_objects"]:
        for form in (phrase, plural(phrase, irregular)):
            phrases[tuple(form.split())] = None
    for category in categories:
        for phrase in table["categories"].get(category, [category]):
            for form in (phrase, plural(phrase, irregular)):
                # A phrase two categories claim would make the metric depend on their order.
                words = tuple(form.split())
                if phrases.get(words, category) != category:
                    raise DatasetError(f"{SYNONYMS_FILE.name}: {form!r} would name both {phrases[words]!r} "
                                       f"and {category!r}")
                phrases[words] = category
    return Lexicon(MappingProxyType(phrases))


@dataclass(frozen=True)
class Instances:
    """A COCO instances file: each image's object categories (an image listed without
    annotations has none), the dataset's category names, and the pycocotools index itself
    (boxes and masks, for attention grounding)."""

    objects: Mapping[int, frozenset[str]]
    categories: tuple[str, ...]
    source: str
    coco: object = None


def load_instances(path: str | Path) -> Instances:
    """Read `instances_val2014.json` (or any COCO detection file) with pycocotools."""
    from pycocotools.coco import COCO  # noqa: PLC0415 - slow import, only needed here

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"COCO instances file not found: {path}")
    try:
        # pycocotools prints progress lines; keep them off stdout, where reports go.
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
        if not coco.dataset.get("categories"):  # a captions file, say: images and annotations only
            raise DatasetError(f"{path} is not a COCO instances file: it has no categories")
        names = {category["id"]: category["name"] for category in coco.loadCats(coco.getCatIds())}
        objects = {
            int(image_id): frozenset(names[a["category_id"]] for a in coco.imgToAnns[image_id])
            for image_id in coco.getImgIds()
        }
    except (json.JSONDecodeError, UnicodeDecodeError, AssertionError, KeyError, TypeError) as error:
        raise DatasetError(f"{path} is not a COCO instances file ({error!r})") from error
    return Instances(MappingProxyType(objects), tuple(names.values()), str(path), coco)


def chair(
    captions: Mapping[int, str], references: Mapping[int, Sequence[str]], instances: Instances
) -> dict:
    """CHAIRi, CHAIRs, their counts, and each image's hallucinated words ("per_image", by id).

    `references` are the images' reference captions (their objects count as present); every
    captioned image must be listed in the instances file.
    """
    missing = sorted(set(captions) - set(instances.objects))
    if missing:
        raise DatasetError(f"{instances.source} lists no image {', '.join(map(str, missing[:5]))} "
                           f"({len(missing)} captioned image(s) not in the instances file)")
    lexicon = load_lexicon(instances.categories)
    mentions = hallucinated = bad_captions = 0
    per_image = {}
    for image_id, caption in captions.items():
        present = instances.objects[image_id] | {
            m.category for reference in references.get(image_id, ()) for m in lexicon.mentions(reference)
        }
        said = lexicon.mentions(caption)
        wrong = [m.words for m in said if m.category not in present]
        mentions, hallucinated = mentions + len(said), hallucinated + len(wrong)
        bad_captions += bool(wrong)
        per_image[image_id] = wrong
    return {
        # No mention, no hallucination: 0.0 rather than undefined.
        "CHAIRi": hallucinated / mentions if mentions else 0.0,
        "CHAIRs": bad_captions / len(captions) if captions else 0.0,
        "mentions": mentions,
        "hallucinated_mentions": hallucinated,
        "captions": len(captions),
        "hallucinated_captions": bad_captions,
        "instances": instances.source,
        "per_image": per_image,
    }


# ---------------------------------------------------------------------------------------------
# Attention grounding: where the model looks when it names an object that is in the image


def object_grounding(
    words: Sequence[str], attention: np.ndarray, image_id: int, instances: Instances
) -> list[dict]:
    """One record per generated word naming a category with instances in the image.

    `attention[t]` (T, h, w) is the map used to generate `words[t]`; a phrase ("hot dog") is
    grounded by its last word's map. Each record holds the attention mass inside the union of
    the category's boxes and inside the union of its segmentation masks, whether the argmax
    cell's centre lies in a box / on the mask (pointing), and the uniform-attention baselines
    (the regions' shares of the image). The grid functions are the shapes world's
    (`captioner.metrics`), so both datasets are measured the same way.
    """
    maps = np.asarray(attention, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[0] < len(words):
        raise ValueError(f"attention must be (T, h, w) with T >= {len(words)} words, got {maps.shape}")
    coco = instances.coco
    image = coco.imgs[image_id]
    width, height = int(image["width"]), int(image["height"])
    regions: dict[str, tuple] = {}
    records = []
    for mention in load_lexicon(instances.categories).find(words):
        if mention.category not in instances.objects[image_id]:
            continue
        if mention.category not in regions:
            regions[mention.category] = _regions(coco, image_id, mention.category, width, height)
        boxes, box_region, mask_region = regions[mention.category]
        grid = maps[mention.index]
        x, y = peak_centre(grid, width, height)
        records.append({
            "image_id": image_id, "t": mention.index, "word": mention.words, "category": mention.category,
            "box_mass": mask_mass(grid, box_region), "mask_mass": mask_mass(grid, mask_region),
            "box_pointing": any(inside_box((x, y), box) for box in boxes),
            "mask_pointing": bool(mask_region[min(int(y), height - 1), min(int(x), width - 1)] > 0),
            "box_baseline": float(box_region.mean()), "mask_baseline": float(mask_region.mean()),
        })
    return records


def _regions(coco, image_id: int, category: str, width: int, height: int) -> tuple:
    """A category's boxes in an image, their union as a pixel mask, and the union of its
    segmentation masks (pycocotools' annToMask: polygons and RLE alike)."""
    category_ids = coco.getCatIds(catNms=[category])
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], catIds=category_ids, iscrowd=None))
    boxes = [a["bbox"] for a in annotations]
    masks = np.zeros((height, width))
    for annotation in annotations:
        np.maximum(masks, coco.annToMask(annotation), out=masks)
    return boxes, box_mask(boxes, width, height), masks


def summarize_object_grounding(records: Sequence[Mapping]) -> dict[str, float]:
    """Means over `object_grounding` records, for boxes and for masks; mass_over_baseline is
    mean mass / mean baseline (1.0: no better than uniform attention). Zeros without records."""
    summary: dict[str, float] = {"count": len(records)}
    for region in ("box", "mask"):
        mass = float(np.mean([r[f"{region}_mass"] for r in records])) if records else 0.0
        baseline = float(np.mean([r[f"{region}_baseline"] for r in records])) if records else 0.0
        summary |= {
            f"{region}_mass": mass,
            f"{region}_pointing": float(np.mean([r[f"{region}_pointing"] for r in records])) if records else 0.0,
            f"{region}_baseline": baseline,
            f"{region}_mass_over_baseline": mass / baseline if baseline > 0 else 0.0,
        }
    return summary
