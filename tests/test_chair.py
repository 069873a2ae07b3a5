"""CHAIR (Rohrbach et al. 2018): every figure is counted by hand from tiny COCO-layout files, and
on the shapes world it agrees with the shapes hallucination metric where both measure the same."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from captioner.chair import (
    chair,
    load_instances,
    load_lexicon,
    object_grounding,
    plural,
    summarize_object_grounding,
)
from captioner.config import DataConfig
from captioner.data.coco import DatasetError
from captioner.data.shapes import SHAPES, load_objects
from captioner.decoding import DecodingOptions
from captioner.evaluation import decode_and_score
from captioner.metrics import attention_grounding, hallucination_rate
from captioner.report.markdown import render_markdown
from stand_ins import FixedCaptioner

# Official COCO category ids, as instances_val2014.json numbers them.
CATEGORIES = {"person": 1, "car": 3, "cat": 17, "dog": 18, "bear": 23, "umbrella": 28, "frisbee": 34,
              "hot dog": 58, "bed": 65, "cell phone": 77, "teddy bear": 88}


def mentioned(caption: str, categories=CATEGORIES) -> list[tuple[str, str]]:
    return [(m.words, m.category) for m in load_lexicon(categories).mentions(caption)]


# ---------------------------------------------------------------------------- finding object words


def test_synonyms_and_plurals_name_their_category():
    assert mentioned("A man, two women and three children with puppies.") == [
        ("man", "person"), ("women", "person"), ("children", "person"), ("puppies", "dog")]
    assert mentioned("People taking pictures of kittens with cell phones") == [
        ("people", "person"), ("kittens", "cat"), ("cell phones", "cell phone")]


def test_multi_word_names_win_over_the_words_inside_them():
    # A hot dog is not a dog, a teddy bear is not a bear; the lone words still are.
    assert mentioned("A hot dog beside a dog, a teddy bear and a bear") == [
        ("hot dog", "hot dog"), ("dog", "dog"), ("teddy bear", "teddy bear"), ("bear", "bear")]
    assert mentioned("two hot dogs and a cell-phone") == [("hot dogs", "hot dog"), ("cell phone", "cell phone")]


def test_phrases_that_name_no_object_are_not_objects():
    # "baseball field" holds no ball; "baseball player" is a person.
    categories = {**CATEGORIES, "sports ball": 37}
    assert mentioned("a baseball player on a baseball field", categories) == [("baseball player", "person")]
    assert mentioned("a baseball", categories) == [("baseball", "sports ball")]


def test_only_the_datasets_categories_are_objects_and_unknown_ones_name_themselves():
    # "umbrella" is a category of the file, "kite" is not; "circle" is not a COCO category.
    assert mentioned("an umbrella and a kite") == [("umbrella", "umbrella")]
    assert mentioned("two circles, a cross and three crosses", ["circle", "cross"]) == [
        ("circles", "circle"), ("cross", "cross"), ("crosses", "cross")]


def test_plural_rules():
    assert [plural(w) for w in ("dog", "bus", "box", "bench", "puppy", "toy", "hot dog")] == [
        "dogs", "buses", "boxes", "benches", "puppies", "toys", "hot dogs"]
    assert plural("man", {"man": "men"}) == "men"


# ---------------------------------------------------------------------------- tiny COCO files


# image 1: a person with a hot dog. image 2: a dog; its references name a frisbee, which it has
# no instance of. image 3: listed without any instance; its references name a cat on a bed.
# image 4: a dog.
INSTANCES = {1: ["person", "hot dog"], 2: ["dog"], 3: [], 4: ["dog"]}
REFERENCES = {1: ["A person eating food."], 2: ["A dog catching a frisbee.", "A dog playing."],
              3: ["A cat asleep on a bed."], 4: ["A dog lying on the grass."]}
CAPTIONS = {
    1: "A man eating a hot dog.",                            # man, hot dog: both present
    2: "Two puppies catching a frisbee next to a car.",      # puppies, frisbee (references); car: hallucinated
    3: "A kitten sleeping on a bed with a dog.",             # kitten, bed (references); dog: hallucinated
    4: "A hot dog on a plate.",                              # hot dog: hallucinated (the dog is no hot dog)
}
# 2 + 3 + 3 + 1 mentions, 3 hallucinated, in 3 of 4 captions.
EXPECTED = {"CHAIRi": 3 / 9, "CHAIRs": 3 / 4, "mentions": 9, "hallucinated_mentions": 3, "captions": 4,
            "hallucinated_captions": 3}
EXPECTED_WORDS = {1: [], 2: ["car"], 3: ["dog"], 4: ["hot dog"]}


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def coco_files(folder: Path) -> tuple[Path, Path]:
    """captions_val2014.json and instances_val2014.json of the four images above."""
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 100, "height": 80} for i in INSTANCES]
    captions = [{"id": 10 * i + k, "image_id": i, "caption": c}
                for i, refs in REFERENCES.items() for k, c in enumerate(refs)]
    boxes = [{"id": 10 * i + k, "image_id": i, "category_id": CATEGORIES[name], "bbox": [10, 10, 20, 20],
              "area": 400, "iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]}
             for i, names in INSTANCES.items() for k, name in enumerate(names)]
    categories = [{"id": i, "name": name, "supercategory": "thing"} for name, i in CATEGORIES.items()]
    annotations = folder / "annotations"
    return (write_json(annotations / "captions_val2014.json", {"images": images, "annotations": captions}),
            write_json(annotations / "instances_val2014.json",
                       {"images": images, "annotations": boxes, "categories": categories}))


def test_chair_counted_by_hand(tmp_path):
    _, instances = coco_files(tmp_path)
    report = chair(CAPTIONS, REFERENCES, load_instances(instances))
    assert {key: report[key] for key in EXPECTED} == pytest.approx(EXPECTED)
    assert report["per_image"] == EXPECTED_WORDS


def test_objects_known_only_from_references_count_as_present(tmp_path):
    _, instances = coco_files(tmp_path)
    # Without references, frisbee (image 2), kitten and bed (image 3) are hallucinated too.
    report = chair(CAPTIONS, {}, load_instances(instances))
    assert report["per_image"] == {1: [], 2: ["frisbee", "car"], 3: ["kitten", "bed", "dog"], 4: ["hot dog"]}
    assert report["CHAIRi"] == pytest.approx(6 / 9)


def test_an_image_without_instances_has_only_its_references_objects(tmp_path):
    _, instances = coco_files(tmp_path)
    loaded = load_instances(instances)
    assert loaded.objects[3] == frozenset()
    report = chair({3: "A cat on a bed next to a person."}, REFERENCES, loaded)
    assert report["per_image"] == {3: ["person"]} and report["CHAIRi"] == pytest.approx(1 / 3)


def test_no_mentions_is_zero_and_bad_input_is_named(tmp_path):
    captions_file, instances = coco_files(tmp_path)
    loaded = load_instances(instances)
    assert chair({1: "a view of the sky"}, REFERENCES, loaded)["CHAIRi"] == 0.0
    with pytest.raises(DatasetError, match=r"no image 99"):
        chair({99: "a dog"}, REFERENCES, loaded)
    with pytest.raises(DatasetError, match="not found"):
        load_instances(tmp_path / "missing.json")
    with pytest.raises(DatasetError, match="captions_val2014.json is not a COCO instances file: it has no categories"):
        load_instances(captions_file)
    # "man" is a synonym of person: a dataset with both categories would make it ambiguous.
    with pytest.raises(DatasetError, match="'man' would name both"):
        load_lexicon(["person", "man"])


def test_evaluate_a_results_file_with_instances(tmp_path):
    captions_file, instances = coco_files(tmp_path)
    results = write_json(tmp_path / "results.json", [{"image_id": i, "caption": c} for i, c in CAPTIONS.items()])
    run = subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--results", str(results), "--annotations",
                          str(captions_file), "--instances", str(instances), "--no-java"],
                         capture_output=True, text=True, check=True)
    report = json.loads((tmp_path / "results_scores.json").read_text())["chair"]
    assert {key: report[key] for key in EXPECTED} == pytest.approx(EXPECTED)
    assert report["per_image"] == {str(i): words for i, words in EXPECTED_WORDS.items()}
    assert "CHAIRi" in run.stdout and "3 of 9 object mentions" in run.stdout


def test_evaluate_with_a_missing_instances_file_is_one_clear_line(tmp_path):
    captions_file, _ = coco_files(tmp_path)
    results = write_json(tmp_path / "results.json", [{"image_id": 1, "caption": "a dog"}])
    run = subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--results", str(results), "--annotations",
                          str(captions_file), "--instances", str(tmp_path / "nope.json"), "--no-java"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "nope.json" in run.stderr


# ---------------------------------------------------------------------------- the shapes world


def test_shapes_instances_match_the_objects_file(shapes_data):
    objects = load_objects(shapes_data / "annotations" / "shapes_objects.json")
    for split in ("train", "val"):
        coco = COCO(str(shapes_data / "annotations" / f"instances_{split}2014.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES)
        for image_id in coco.getImgIds():
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            expected = sorted((list(o.bbox), o.shape) for o in objects[image_id].objects)
            names = [(a["bbox"], SHAPES[a["category_id"] - 1]) for a in annotations]
            assert sorted(names) == expected
            for annotation in annotations:
                mask = coco.annToMask(annotation)
                x, y, w, h = annotation["bbox"]
                # The outline fills its box: its area is the mask's, all of it inside the box.
                assert mask.sum() == annotation["area"] == mask[y : y + h, x : x + w].sum() > 0
                assert annotation["iscrowd"] == 0


def test_shapes_chair_agrees_with_the_shapes_hallucination_rate(shapes_data, tmp_path):
    objects = load_objects(shapes_data / "annotations" / "shapes_objects.json")
    test_ids = [i for i, image in objects.items() if image.file_name.startswith("COCO_val2014")][-6:]
    captions = {}
    for n, image_id in enumerate(test_ids):
        present = objects[image_id].objects
        said = [f"a {o.colour} {o.shape}" for o in present]
        if n % 2 == 0:  # every other caption also names a shape that is not in the image
            absent = next(shape for shape in SHAPES if shape not in {o.shape for o in present})
            said.append(f"a red {absent}")
        captions[image_id] = " and ".join(said)
    data = DataConfig(root=str(shapes_data), split_file=str(shapes_data / "dataset_shapes.json"))
    report = decode_and_score(FixedCaptioner({objects[i].file_name: c for i, c in captions.items()}), data, "test",
                              DecodingOptions(), tmp_path / "r.json", java=False, num_workers=0,
                              instances=shapes_data / "annotations" / "instances_val2014.json")
    assert sorted(captions) == sorted(report["chair"]["per_image"])  # the test split is these six images
    mentions = sum(len(objects[i].objects) for i in test_ids) + 3
    assert report["chair"]["CHAIRi"] == pytest.approx(3 / mentions)
    assert report["chair"]["CHAIRi"] == pytest.approx(report["shapes"]["hallucination_rate"])
    assert report["chair"]["CHAIRs"] == pytest.approx(0.5)
    # Uniform attention puts each region's share of the image inside it: the baseline itself.
    grounding = report["object_grounding"]
    assert grounding["count"] == mentions - 3
    assert grounding["box_mass_over_baseline"] == pytest.approx(1.0)
    assert grounding["mask_mass"] == pytest.approx(grounding["mask_baseline"])
    for image_id, words in report["chair"]["per_image"].items():
        alone = hallucination_rate({image_id: captions[image_id]}, objects)
        assert bool(words) == (alone > 0) and np.isclose(len(words) / (len(objects[image_id].objects) + len(words)),
                                                          alone)


# ---------------------------------------------------------------------------- attention grounding


def grounding_instances(folder: Path) -> Path:
    """A 100x100 image with two dogs: a triangle (the box's upper-left half) in box (0, 0, 50, 50)
    and a square filling box (50, 50, 50, 50)."""
    image = {"id": 1, "file_name": "COCO_val2014_000000000001.jpg", "width": 100, "height": 100}
    dogs = [{"id": 1, "image_id": 1, "category_id": 18, "bbox": [0, 0, 50, 50], "area": 1250, "iscrowd": 0,
             "segmentation": [[0, 0, 50, 0, 0, 50]]},
            {"id": 2, "image_id": 1, "category_id": 18, "bbox": [50, 50, 50, 50], "area": 2500, "iscrowd": 0,
             "segmentation": [[50, 50, 100, 50, 100, 100, 50, 100]]}]
    categories = [{"id": i, "name": name} for name, i in CATEGORIES.items()]
    return write_json(folder / "instances.json", {"images": [image], "annotations": dogs, "categories": categories})


def one_cell(row: int, col: int, steps: int) -> np.ndarray:
    maps = np.zeros((steps, 10, 10))
    maps[:, row, col] = 1.0
    return maps


def test_grounding_in_boxes_and_masks(tmp_path):
    instances = load_instances(grounding_instances(tmp_path))
    words = ["a", "dog", "and", "a", "cat", "near", "a", "hot", "dog"]
    # Only "dog" names an object in the image: the cat is not there, and a hot dog is no dog.
    inside_both = object_grounding(words, one_cell(0, 0, 9), 1, instances)
    assert [(r["t"], r["word"], r["category"]) for r in inside_both] == [(1, "dog", "dog")]
    assert inside_both[0]["box_mass"] == pytest.approx(1.0) and inside_both[0]["mask_mass"] == pytest.approx(1.0)
    assert inside_both[0]["box_pointing"] and inside_both[0]["mask_pointing"]
    # Cell (3, 3) covers pixels 30..40 in x and y: inside the first box, off its triangle.
    [box_only] = object_grounding(words, one_cell(3, 3, 9), 1, instances)
    assert box_only["box_mass"] == pytest.approx(1.0) and box_only["mask_mass"] == pytest.approx(0.0)
    assert box_only["box_pointing"] and not box_only["mask_pointing"]
    # Baselines: the union of the two boxes is half the image; the masks a triangle and a square.
    assert box_only["box_baseline"] == pytest.approx(0.5)
    assert box_only["mask_baseline"] == pytest.approx(0.375, abs=0.01)


def test_uniform_attention_scores_its_baseline(tmp_path):
    instances = load_instances(grounding_instances(tmp_path))
    [record] = object_grounding(["two", "dogs"], np.full((3, 10, 10), 0.01), 1, instances)
    assert record["t"] == 1 and record["box_mass"] == pytest.approx(record["box_baseline"]) == pytest.approx(0.5)
    assert record["mask_mass"] == pytest.approx(record["mask_baseline"])
    summary = summarize_object_grounding([record])
    assert summary["count"] == 1
    assert summary["box_mass_over_baseline"] == pytest.approx(1.0)
    assert summary["mask_mass_over_baseline"] == pytest.approx(1.0)
    assert summarize_object_grounding([])["count"] == 0


def test_the_run_report_shows_chair(tmp_path):
    scores = {"metrics": {"CIDEr": 0.5}, "notes": [], "num_images": 4,
              "chair": {**EXPECTED, "instances": "/data/coco/annotations/instances_val2014.json", "per_image": {}},
              "object_grounding": {"count": 3, "box_mass": 0.25}}
    page = render_markdown(tmp_path, None, None, [], {}, scores, tmp_path / "scores.json", None, [], [])
    assert "| CHAIRi | 33.3 | 3 of 9 object mentions |" in page
    assert "| CHAIRs | 75.0 | 3 of 4 captions |" in page
    assert "`instances_val2014.json`" in page and "| `box_mass` | 0.2500 |" in page
    # Without CHAIR in the scores, no such section.
    assert "CHAIR" not in render_markdown(tmp_path, None, None, [], {}, {"metrics": {}, "notes": []},
                                          tmp_path / "scores.json", None, [], [])


def test_box_grounding_is_the_shapes_worlds_on_one_object_images(shapes_data):
    # With one object, the union of its category's boxes is its box: both measures must agree.
    objects = load_objects(shapes_data / "annotations" / "shapes_objects.json")
    instances = load_instances(shapes_data / "annotations" / "instances_val2014.json")
    single = [i for i in instances.objects if len(objects[i].objects) == 1]
    rng = np.random.default_rng(0)
    assert single
    for image_id in single:
        obj = objects[image_id].objects[0]
        words = ["a", obj.colour, obj.shape]
        maps = rng.random((3, 7, 7)) ** 8  # peaked, so that pointing varies
        [ours] = object_grounding(words, maps, image_id, instances)
        [shapes] = attention_grounding(words, maps, objects[image_id])
        assert ours["box_mass"] == pytest.approx(shapes["mass"], abs=1e-12)
        assert ours["box_pointing"] == shapes["pointing_ignoring_size"]
        assert ours["box_baseline"] == pytest.approx(shapes["baseline"], abs=1e-12)


def test_evaluate_with_a_model_adds_chair_and_object_grounding(shapes_data, tmp_path):
    # The bundled shapes model captions the test split itself; CHAIR must be that of its results.
    instances = shapes_data / "annotations" / "instances_val2014.json"
    output = tmp_path / "scores.json"
    run = subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--data-root", str(shapes_data),
                          "--split-file", str(shapes_data / "dataset_shapes.json"), "--split", "test",
                          "--instances", str(instances), "--output", str(output), "--quiet", "--num-workers", "0",
                          "--no-java"], capture_output=True, text=True, check=True)
    report = json.loads(output.read_text())
    captions = {r["image_id"]: r["caption"] for r in json.loads((tmp_path / "scores_results.json").read_text())}
    references = {i: [a["caption"] for a in COCO(str(shapes_data / "annotations" / "captions_val2014.json"))
                      .imgToAnns[i]] for i in captions}
    expected = chair(captions, references, load_instances(instances))
    assert report["chair"] == json.loads(json.dumps(expected))  # JSON turns image ids into strings
    present = sum(m.category in load_instances(instances).objects[i]
                  for i, c in captions.items() for m in load_lexicon(SHAPES).mentions(c))
    assert report["object_grounding"]["count"] == present > 0
    assert "CHAIRs" in run.stdout and "object_box_mass" in run.stdout
