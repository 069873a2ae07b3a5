"""COCO caption evaluation: pycocoevalcap's figures and references, clear errors, fallback, concurrency."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from captioner import coco_eval, coco_java
from captioner.coco_eval import (
    PYTHON_TOKENIZER,
    GroundTruth,
    ResultsError,
    check_results,
    evaluate_captions,
    format_table,
    load_annotations,
    load_results,
    load_split_file,
)
from captioner.coco_java import ptb_tokenize
from captioner.data.coco import DatasetError

needs_java = pytest.mark.skipif(
    shutil.which("java") is None, reason="no `java` on PATH: the official PTB tokenizer and METEOR need Java"
)
OFFICIAL = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

# Eight images, 3-5 references each, with the capitals, punctuation, quotes and contractions
# that make the PTB tokenizer matter. The file lists them out of id order, and two references
# end in "a.", which the PTB lexer splits only when the next line starts with "A" or "The": the
# figures match COCOEvalCap only when captions are tokenized in its order (file order,
# references and candidates in separate runs).
REFERENCES = {
    105: ["A cat sleeping on a laptop keyboard.", "The cat is lying on a computer.",
          "A grey cat naps on top of an open laptop", "cat on a keyboard (asleep)"],
    101: ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave in the ocean",
          "Man on a surfboard riding the waves.", "A person surfing on a blue wave."],
    108: ["A giraffe standing next to a tree.", "A tall giraffe eating leaves from a tree",
          "The giraffe is in its enclosure at the zoo."],
    102: ["Two dogs playing with a frisbee in the park.", "A couple of dogs running on the grass!",
          "Dogs chase a red frisbee across a field", "two brown dogs in a grassy park",
          "A dog's toy lies on the lawn; two dogs play in area a."],
    107: ["A man holding a tennis racket on a court.", "A tennis player gets ready to serve the ball",
          "A player swings at a tennis ball.", "Man playing tennis on a clay court"],
    103: ["A plate of food with broccoli and rice.", "Rice, broccoli and chicken on a white plate.",
          "A healthy meal served on a dish"],
    106: ["A group of people flying kites on a beach.", "Kites flying over the sand at the beach",
          "People on the beach with colorful kites."],
    104: ["Red double-decker bus driving down a city street.", "A bus on the road in London",
          "The big red bus is parked near the sidewalk.", "A \"double decker\" bus on route a."],
}
RESULTS = [
    {"image_id": 101, "caption": "A man riding a wave on a surfboard."},
    {"image_id": 102, "caption": "two dogs playing in the grass with a frisbee"},
    {"image_id": 104, "caption": "A red bus is driving down the street"},
    {"image_id": 105, "caption": "A cat laying on top of a laptop computer."},
    {"image_id": 107, "caption": "A man playing tennis on a tennis court."},
]


def _write_annotations(path: Path, references: dict[int, list[str]]) -> Path:
    """A COCO captions file (`captions_val2014.json` layout) holding `references`."""
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 640, "height": 480} for i in references]
    annotations = [
        {"id": n, "image_id": i, "caption": caption}
        for n, (i, caption) in enumerate((i, c) for i, captions in references.items() for c in captions)
    ]
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    return path


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def coco_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco_eval")
    annotations = _write_annotations(folder / "captions_val2014.json", REFERENCES)
    return annotations, _write_json(folder / "results.json", RESULTS)


@pytest.fixture(scope="module")
def java_report(coco_files):
    """Our report on the hand-made files, through the public loaders, with Java."""
    if shutil.which("java") is None:
        pytest.skip("no `java` on PATH: the official PTB tokenizer and METEOR need Java")
    annotations, results = coco_files
    ground_truth = load_annotations(annotations)
    return evaluate_captions(ground_truth, load_results(results, ground_truth), java=True)


class _NoSpice:
    """Stands in for pycocoevalcap's Spice, whose constructor downloads CoreNLP (no network here)."""

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return "SPICE"


def _pycocoevalcap_reference(annotations: Path, results: Path, monkeypatch) -> tuple[dict, dict]:
    """(corpus scores, per-image scores) from pycocoevalcap used the standard way."""
    import pycocoevalcap.eval  # noqa: PLC0415 - only the reference computation needs it
    from pycocotools.coco import COCO  # noqa: PLC0415

    monkeypatch.setattr(pycocoevalcap.eval, "Spice", _NoSpice)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(annotations))
        res = coco.loadRes(str(results))
        evaluator = pycocoevalcap.eval.COCOEvalCap(coco, res)
        evaluator.params["image_id"] = res.getImgIds()
        evaluator.evaluate()
    return evaluator.eval, evaluator.imgToEval


# ---------------------------------------------------------------------------- official figures


@needs_java
def test_every_corpus_figure_matches_pycocoevalcap(coco_files, java_report, monkeypatch):
    tokenizer_dir = coco_java.PTB_JAR.parent
    if not os.access(tokenizer_dir, os.W_OK):
        pytest.skip(f"pycocoevalcap's own PTBTokenizer writes into {tokenizer_dir}, which is read-only here")
    expected, per_image = _pycocoevalcap_reference(*coco_files, monkeypatch)
    assert java_report["num_images"] == len(RESULTS)
    assert set(java_report["metrics"]) == set(OFFICIAL)
    for name in OFFICIAL:
        assert java_report["metrics"][name] == pytest.approx(expected[name], abs=1e-6), name
    assert set(java_report["per_image"]) == {r["image_id"] for r in RESULTS}
    for image_id, scores in java_report["per_image"].items():
        assert scores["CIDEr"] == pytest.approx(per_image[image_id]["CIDEr"], abs=1e-6)
        assert scores["METEOR"] == pytest.approx(per_image[image_id]["METEOR"], abs=1e-6)
        assert scores["Bleu_4"] == pytest.approx(per_image[image_id]["Bleu_4"], abs=1e-6)


@needs_java
def test_tokens_match_pycocoevalcaps_ptb_tokenizer(monkeypatch):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # noqa: PLC0415

    tokenizer_dir = coco_java.PTB_JAR.parent
    if not os.access(tokenizer_dir, os.W_OK):
        pytest.skip(f"pycocoevalcap's own PTBTokenizer writes into {tokenizer_dir}, which is read-only here")
    captions = [c for captions in REFERENCES.values() for c in captions]
    captions += ["Café crème, s'il vous plaît!", 'He said "hi', "it's the 80's -- (really)", "two\nlines"]
    with contextlib.redirect_stdout(io.StringIO()):
        expected = PTBTokenizer().tokenize({n: [{"caption": c}] for n, c in enumerate(captions)})
    assert ptb_tokenize(captions, shutil.which("java")) == [expected[n][0] for n in range(len(captions))]


@needs_java
def test_other_line_breaks_do_not_shift_later_captions():
    tokens = ptb_tokenize(["a dog\ron grass", "a cat\u2028on a mat", "a bird"], shutil.which("java"))
    assert tokens == ["a dog on grass", "a cat on a mat", "a bird"]


def test_report_lists_versions_notes_and_formats_as_a_table(coco_files):
    annotations, results = coco_files
    ground_truth = load_annotations(annotations)
    report = evaluate_captions(ground_truth, load_results(results, ground_truth), java=False)
    assert report["versions"]["pycocoevalcap"] and report["versions"]["pycocotools"]
    assert report["versions"]["java"] is None
    assert report["references"] == {"source": str(annotations), "kind": "coco-captions"}
    table = format_table(report)
    cider = report["metrics"]["CIDEr"]
    assert f"{cider:.4f}" in table and f"{cider * 100:.1f}" in table
    assert f"references: {annotations} (coco-captions)" in table
    assert all(f"note: {note}" in table for note in report["notes"])


@needs_java
def test_java_report_names_tokenizer_java_version_and_skipped_spice(java_report):
    assert java_report["tokenizer"] == coco_eval.JAVA_TOKENIZER
    assert java_report["versions"]["java"] and java_report["versions"]["java"][0].isdigit()
    if coco_java.missing_spice_jars():
        assert "SPICE" not in java_report["metrics"]
        assert sum("SPICE skipped" in note for note in java_report["notes"]) == 1


def test_spice_jars_are_looked_for_in_pycocoevalcaps_spice_lib(tmp_path, monkeypatch):
    monkeypatch.setattr(coco_java, "SPICE_LIB", tmp_path)
    assert coco_java.missing_spice_jars() == ["stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"]
    for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (tmp_path / name).touch()
    assert coco_java.missing_spice_jars() == []


# ---------------------------------------------------------------------------- known answers

# Plain lower-case captions without punctuation: both tokenizers give the same tokens.
SIMPLE = {
    1: ["a red circle above a blue square", "a red circle is over a blue square", "a circle and a square"],
    2: ["two green triangles on a white background", "a pair of green triangles", "two triangles side by side"],
    3: ["a yellow star to the left of a purple circle", "a star and a circle", "a small yellow star near a circle"],
    4: ["an orange square below a large red star", "a red star over an orange square", "a square and a star"],
    5: ["three small blue circles", "a few blue circles in a row", "three circles that are blue"],
}


def _simple_reports(java: bool, parallel: bool = False) -> list[dict]:
    """Reports for (first reference as caption, captions shuffled across images)."""
    truth = GroundTruth(SIMPLE, "simple")
    identity = {i: refs[0] for i, refs in SIMPLE.items()}
    ids = sorted(SIMPLE)
    shuffled = {i: SIMPLE[ids[(n + 1) % len(ids)]][0] for n, i in enumerate(ids)}
    if parallel:
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(lambda results: evaluate_captions(truth, results, java=java), [identity, shuffled]))
    return [evaluate_captions(truth, results, java=java) for results in (identity, shuffled)]


@pytest.fixture(scope="module")
def simple_reports():
    """{"java": [...], "python": [...]}: the sequential reports of `_simple_reports`."""
    reports = {"python": _simple_reports(java=False)}
    if shutil.which("java"):
        reports["java"] = _simple_reports(java=True)
    return reports


@pytest.mark.parametrize("tokenizer", ["java", "python"])
def test_reference_captions_beat_shuffled_ones_on_every_metric(simple_reports, tokenizer):
    if tokenizer not in simple_reports:
        pytest.skip("no `java` on PATH: the official PTB tokenizer and METEOR need Java")
    identity, shuffled = simple_reports[tokenizer]
    assert set(identity["metrics"]) == set(OFFICIAL) - (set() if tokenizer == "java" else {"METEOR"})
    for name, value in identity["metrics"].items():
        assert value > shuffled["metrics"][name], name
    assert identity["metrics"]["Bleu_1"] == pytest.approx(1.0)


def test_bleu_of_a_caption_sharing_no_word_is_zero():
    # Python tokens: the words here tokenize alike either way, and this spares a JVM start.
    truth = GroundTruth({7: ["a red circle", "one red circle on grey"], 8: ["a blue square", "the blue square"]}, "t")
    report = evaluate_captions(truth, {7: "zebra xylophone quartz", 8: "a blue square"}, java=False)
    for n in range(1, 5):
        assert report["per_image"][7][f"Bleu_{n}"] <= 1e-9
    assert report["per_image"][7]["CIDEr"] == 0.0
    assert report["per_image"][8]["Bleu_1"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- fallback


@needs_java
def test_python_fallback_matches_java_on_simple_captions_and_says_so(simple_reports):
    for java, python in zip(simple_reports["java"], simple_reports["python"]):
        assert "METEOR" in java["metrics"] and "METEOR" not in python["metrics"]
        for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"):
            assert python["metrics"][name] == pytest.approx(java["metrics"][name], abs=1e-9), name
        assert python["per_image"][1]["CIDEr"] == pytest.approx(java["per_image"][1]["CIDEr"], abs=1e-9)
    python = simple_reports["python"][0]
    assert python["tokenizer"] == PYTHON_TOKENIZER and "approximate" in python["tokenizer"]
    assert any("METEOR" in note and "Java" in note for note in python["notes"])


def test_without_java_on_path_evaluation_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no `java`
    truth = GroundTruth(SIMPLE, "simple")
    report = evaluate_captions(truth, {1: SIMPLE[1][0], 2: SIMPLE[2][1]})
    assert report["tokenizer"] == PYTHON_TOKENIZER and "METEOR" not in report["metrics"]
    with pytest.raises(RuntimeError, match="java=True but no `java` on PATH"):
        evaluate_captions(truth, {1: SIMPLE[1][0]}, java=True)


# ---------------------------------------------------------------------------- concurrency


def _package_files() -> set[Path]:
    root = coco_java.PTB_JAR.parent.parent
    return {path for path in root.rglob("*") if "__pycache__" not in path.parts}


@needs_java
def test_parallel_evaluations_agree_with_sequential_ones_and_write_nothing_into_the_package(simple_reports):
    before = _package_files()
    parallel = _simple_reports(java=True, parallel=True)
    for sequential, concurrent in zip(simple_reports["java"], parallel):
        assert concurrent["metrics"] == sequential["metrics"]
        assert concurrent["per_image"] == sequential["per_image"]
    assert _package_files() == before


# ---------------------------------------------------------------------------- ground truth


def _split_file(path: Path, references: dict[int, list[str]], folder: str | None = "val2014") -> Path:
    """A Karpathy split file of the images of `references`: odd ids in test, even in val. Their
    `raw` sentences are not those references, so that it shows which source was used."""
    images = [
        {"filename": f"COCO_val2014_{i:012d}.jpg", "imgid": n, "cocoid": i, "split": "test" if i % 2 else "val",
         "sentences": [{"raw": f"Image {i}.", "tokens": ["image", str(i)]}], **({"filepath": folder} if folder else {})}
        for n, i in enumerate(sorted(references))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_json(path, {"images": images, "dataset": "coco"})


def _captions_file(root: Path, references: dict[int, list[str]], folder: str = "val2014") -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    return _write_annotations(root / "annotations" / f"captions_{folder}.json", references)


RAW_TEST = {i: [f"Image {i}."] for i in sorted(REFERENCES) if i % 2}


def test_a_split_is_scored_against_the_captions_file_of_its_image_folder(tmp_path):
    from pycocotools.coco import COCO  # noqa: PLC0415 - the reference reader

    annotations = _captions_file(tmp_path, REFERENCES)
    test = load_split_file(_split_file(tmp_path / "dataset_coco.json", REFERENCES), "test")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(annotations))
    # What COCOEvalCap reads for each image (imgToAnns), in the captions file's image order.
    expected = {i: [a["caption"] for a in coco.imgToAnns[i]] for i in coco.getImgIds() if i in RAW_TEST}
    assert list(test.references.items()) == list(expected.items())
    assert list(test.references) == [105, 101, 107, 103]  # cocoid, the test split only, file order
    assert test.describe() == {"source": "annotations/captions_val2014.json", "kind": "coco-captions"}
    assert test.note is None


def test_a_split_file_outside_the_coco_folder_is_matched_under_root(tmp_path):
    _captions_file(tmp_path / "coco", REFERENCES)
    split = _split_file(tmp_path / "splits" / "dataset_coco.json", REFERENCES)
    assert load_split_file(split, "test", tmp_path / "coco").source == "annotations/captions_val2014.json"
    # Without a captions file, the report names the split file, never a machine's folders.
    raw = load_split_file(split, "test", tmp_path / "elsewhere")
    assert raw.describe() == {"source": "dataset_coco.json", "kind": "split-file-raw"}


@pytest.mark.parametrize(("layout", "why"), [
    ("no captions file", "annotations/captions_val2014.json not found"),
    ("an image missing", "has no captions for 1 of the split's 4 images (image id 107)"),
    ("no image folder", "names no COCO image folder"),
])
def test_without_a_captions_file_covering_the_split_its_raw_sentences_are_used(tmp_path, layout, why):
    if layout == "an image missing":
        _captions_file(tmp_path, {i: refs for i, refs in REFERENCES.items() if i != 107})
    elif layout == "no image folder":
        _captions_file(tmp_path, REFERENCES)
    split = _split_file(tmp_path / "dataset_coco.json", REFERENCES, None if layout == "no image folder" else "val2014")
    test = load_split_file(split, "test")
    assert test.references == RAW_TEST
    assert test.describe() == {"source": "dataset_coco.json", "kind": "split-file-raw"}
    assert why in test.note
    report = evaluate_captions(test, {101: "image 101"}, java=False)
    assert report["references"] == test.describe()
    assert any("raw sentences of dataset_coco.json" in note and why in note for note in report["notes"])


def test_a_split_across_two_image_folders_uses_its_raw_sentences(tmp_path):
    images = [
        {"filepath": "train2014", "filename": "a.jpg", "cocoid": 1, "split": "train", "sentences": [{"raw": "A cat."}]},
        {"filepath": "val2014", "filename": "b.jpg", "cocoid": 2, "split": "restval", "sentences": [{"raw": "A dog."}]},
    ]
    split = _write_json(tmp_path / "dataset_coco.json", {"images": images})
    _captions_file(tmp_path, {1: ["a grey cat"]}, "train2014")
    _captions_file(tmp_path, {2: ["a brown dog"]}, "val2014")
    train = load_split_file(split, "train")
    assert train.references == {1: ["A cat."], 2: ["A dog."]} and train.kind == "split-file-raw"
    assert "2 folders (train2014, val2014)" in train.note


def test_split_file_without_cocoid_uses_imgid_and_restval_joins_train(tmp_path):
    images = [
        {"filename": "a.jpg", "imgid": 0, "split": "train", "sentences": [{"raw": "A cat."}]},
        {"filename": "b.jpg", "imgid": 1, "split": "restval", "sentences": [{"raw": "A dog."}]},
        {"filename": "c.jpg", "imgid": 2, "split": "test", "sentences": [{"raw": "A bird."}, {"raw": "Bird."}]},
    ]
    split = _write_json(tmp_path / "dataset_flickr8k.json", {"images": images})
    assert load_split_file(split, "train").references == {0: ["A cat."], 1: ["A dog."]}
    assert load_split_file(split, "test").references == {2: ["A bird.", "Bird."]}


def test_bad_ground_truth_files_raise_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_annotations(tmp_path / "missing.json")
    with pytest.raises(DatasetError, match="no caption annotations"):
        load_annotations(_write_json(tmp_path / "empty.json", {"images": [], "annotations": []}))
    instances = {"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}]}
    with pytest.raises(DatasetError, match="without a caption"):
        load_annotations(_write_json(tmp_path / "instances.json", instances))


# ---------------------------------------------------------------------------- results errors


@pytest.fixture
def truth():
    return GroundTruth(REFERENCES, "captions_val2014.json")


@pytest.mark.parametrize(("content", "message"), [
    ('[{"image_id": 101, "caption": "a"},\n {"image_id": 102 "caption": "b"}]', "line 2, column"),
    ('{"image_id": 101, "caption": "a"}', "expected a JSON list"),
    ("[]", "empty"),
    ('[{"image_id": "101", "caption": "a"}, 5]', "2 entries are not"),
    ('[{"image_id": 101, "caption": null}]', "has caption None"),
    ('[{"image_id": 101.0, "caption": "a"}]', "image_id 101.0"),
    ('[{"image_id": 101, "caption": "a"}, {"image_id": 101, "caption": "b"}]',
     "more than one caption for image id 101"),
    ('[{"image_id": 101, "caption": " "}, {"image_id": 102, "caption": ""}]', "empty captions for image ids 101, 102"),
])
def test_malformed_results_raise_an_error_naming_the_file(tmp_path, truth, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=message) as error:
        load_results(path, truth)
    assert str(path) in str(error.value)


def test_missing_results_file_is_named(tmp_path, truth):
    with pytest.raises(ResultsError, match="results file not found: .*nope.json"):
        load_results(tmp_path / "nope.json", truth)


def test_unknown_image_ids_are_listed_with_their_count(truth):
    results = [{"image_id": i, "caption": "a cat"} for i in [101, 9, 8, 7, 6, 5, 4, 3]]
    with pytest.raises(ResultsError, match=r"7 of 8 captioned images are not in the ground truth") as error:
        check_results(results, truth, "decoded captions")
    message = str(error.value)
    assert "image ids 3, 4, 5, 6, 7 and 2 more" in message
    assert message.startswith("decoded captions:") and "captions_val2014.json" in message


def test_evaluating_captions_of_unknown_images_is_refused(truth):
    with pytest.raises(ResultsError, match="not in the ground truth"):
        evaluate_captions(truth, {101: "a man on a wave", 999: "a cat"}, java=False)


def test_valid_results_keep_only_the_captioned_images(truth):
    captions = check_results(RESULTS, truth, "results.json")
    assert captions == {r["image_id"]: r["caption"] for r in RESULTS}


def test_shapes_style_ids_round_trip_through_a_results_file(tmp_path):
    truth = GroundTruth(SIMPLE, "simple")
    results = _write_json(tmp_path / "r.json", [{"image_id": i, "caption": c[0]} for i, c in SIMPLE.items()])
    assert load_results(results, truth) == {i: c[0] for i, c in SIMPLE.items()}

