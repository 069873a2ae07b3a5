"""`captioner evaluate` and `decode_and_score`: every figure is checked against an answer known
without this code, from pycocoevalcap's scorers called directly on hand-tokenized captions or
from how the shapes world is built.

The references are those COCOEvalCap would use: the official captions file of the split's
images, not the split file's `raw` sentences. To tell the two apart, `edited_copy` writes a
dataset whose captions file holds other references than its split file.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from captioner.config import DataConfig, load_config
from captioner.data.shapes import PLURALS, SHAPES, load_objects
from captioner.decoding import DecodingOptions
from captioner.evaluation import decode_and_score
from captioner.inference import Captioner
from captioner.training import fit
from stand_ins import FixedCaptioner, hand_tokens

REPO = Path(__file__).resolve().parents[1]
PYTHON_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")
VAL_CAPTIONS = {"source": "annotations/captions_val2014.json", "kind": "coco-captions"}
# Replaces the references of every image in `edited_copy`'s captions file.
NEW_REFERENCE = "Some shapes drawn on a background."


def pycocoevalcap_scores(references: dict[int, list[str]], captions: dict[int, str]) -> dict[str, float]:
    """Corpus BLEU-1..4, ROUGE-L and CIDEr from pycocoevalcap's scorers, on the captioned images."""
    gts = {i: [hand_tokens(r) for r in references[i]] for i in captions}
    res = {i: [hand_tokens(c)] for i, c in captions.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"Bleu_{n + 1}": bleu[n] for n in range(4)}
    scores["ROUGE_L"], _ = Rouge().compute_score(gts, res)
    scores["CIDEr"], _ = Cider().compute_score(gts, res)
    return scores


def assert_scores(report: dict, expected: dict[str, float]) -> None:
    assert set(report["metrics"]) >= set(PYTHON_METRICS)
    for name in PYTHON_METRICS:
        assert report["metrics"][name] == pytest.approx(expected[name], abs=1e-9), name


def raw_sentences(root: Path, split_file: str, split: str) -> dict[int, list[str]]:
    images = json.loads((root / split_file).read_text())["images"]
    return {image["cocoid"]: [s["raw"] for s in image["sentences"]] for image in images if image["split"] == split}


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def edited_copy(shapes_data: Path, folder: Path) -> tuple[Path, dict[int, list[str]]]:
    """A copy of the shapes world whose captions_val2014.json differs from its split file:
    each image keeps its 2nd and 4th raw sentence, in reverse order, plus NEW_REFERENCE.
    Returns the copy and its captions file's references."""
    root = folder / "shapes"
    shutil.copytree(shapes_data, root)
    path = root / "annotations" / "captions_val2014.json"
    data = json.loads(path.read_text())
    raw = {**raw_sentences(root, "dataset_shapes.json", "val"), **raw_sentences(root, "dataset_shapes.json", "test")}
    references = {image["id"]: [raw[image["id"]][3], raw[image["id"]][1], NEW_REFERENCE] for image in data["images"]}
    data["annotations"] = [{"id": 10 * i + k, "image_id": i, "caption": caption}
                           for i, captions in references.items() for k, caption in enumerate(captions)]
    write_json(path, data)
    return root, references


# ---------------------------------------------------------------------------- a known captioner


def first_references(root: Path, split: str) -> dict[str, str]:
    """{file name: first raw sentence} of a split of the shapes split file."""
    images = json.loads((root / "dataset_shapes.json").read_text())["images"]
    return {image["filename"]: image["sentences"][0]["raw"] for image in images if image["split"] == split}


def test_a_split_is_scored_against_the_captions_file_not_the_split_files_sentences(shapes_data, tmp_path):
    root, references = edited_copy(shapes_data, tmp_path)
    captions = first_references(root, "test")
    data = DataConfig(root=str(root), split_file=str(root / "dataset_shapes.json"))
    report = decode_and_score(FixedCaptioner(captions), data, "test", DecodingOptions(), tmp_path / "r.json",
                              java=False, num_workers=0)
    texts = {r["image_id"]: r["caption"] for r in json.loads((tmp_path / "r.json").read_text())}
    assert report["references"] == VAL_CAPTIONS
    assert_scores(report, pycocoevalcap_scores(references, texts))
    # Against the split file's sentences, which hold every caption, BLEU would be 1.
    raw = pycocoevalcap_scores(raw_sentences(root, "dataset_shapes.json", "test"), texts)
    assert raw["Bleu_4"] == pytest.approx(1.0, abs=1e-9)
    assert report["metrics"]["Bleu_4"] != pytest.approx(1.0)
    assert report["metrics"]["CIDEr"] != pytest.approx(raw["CIDEr"])


def test_without_a_captions_file_the_split_files_sentences_are_used_and_named(shapes_data, tmp_path):
    root, _ = edited_copy(shapes_data, tmp_path)
    (root / "annotations" / "captions_val2014.json").unlink()
    data = DataConfig(root=str(root), split_file=str(root / "dataset_shapes.json"))
    report = decode_and_score(FixedCaptioner(first_references(root, "test")), data, "test", DecodingOptions(),
                              tmp_path / "r.json", java=False, num_workers=0)
    assert report["references"] == {"source": "dataset_shapes.json", "kind": "split-file-raw"}
    assert any("annotations/captions_val2014.json not found" in note for note in report["notes"])
    # Each caption is one of its image's references: every n-gram matches and the closest
    # reference length is its own, so there is no brevity penalty.
    for n in range(1, 5):
        assert report["metrics"][f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-9)
    assert all(scores["Bleu_1"] == pytest.approx(1.0, abs=1e-9) for scores in report["per_image"].values())
    assert report["metrics"]["ROUGE_L"] == pytest.approx(1.0, abs=1e-12)


def test_shapes_figures_of_reference_captions_with_uniform_attention(shapes_data, tmp_path):
    captions = first_references(shapes_data, "test")
    data = DataConfig(root=str(shapes_data), split_file=str(shapes_data / "dataset_shapes.json"))
    report = decode_and_score(FixedCaptioner(captions), data, "test", DecodingOptions(), tmp_path / "r.json",
                              java=False, num_workers=0)
    shapes = report["shapes"]
    # A shapes reference names every object of its image by colour and shape, and nothing else.
    assert shapes["object_recall"] == 1.0 and shapes["hallucination_rate"] == 0.0
    # Every shape word names an object; uniform attention puts a box's area share inside it,
    # which is the uniform baseline itself.
    shape_words = set(SHAPES) | set(PLURALS.values())
    assert shapes["grounding_count"] == sum(w in shape_words for c in captions.values() for w in hand_tokens(c).split())
    assert shapes["grounding_mass_over_baseline"] == pytest.approx(1.0, abs=1e-12)
    assert shapes["grounding_mass"] == pytest.approx(shapes["grounding_baseline"], abs=1e-12)
    assert report["num_images"] == len(captions) == 6 and report["checkpoint"] == "fixed captions"


# ---------------------------------------------------------------------------- the command, with a trained model


@pytest.fixture(scope="module")
def tiny_checkpoint(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    config = load_config(REPO / "configs" / "tiny.yaml", [
        f"data.root={shapes_data}", f"data.split_file={shapes_data / 'dataset_shapes.json'}",
        f"output_dir={out}", "train.epochs=1"])
    return fit(config) / "checkpoint_last.pt"


def test_evaluate_scores_a_shapes_split_against_its_captions_file(shapes_data, tiny_checkpoint, tmp_path):
    root, references = edited_copy(shapes_data, tmp_path)
    output = tmp_path / "eval" / "scores.json"
    result = subprocess.run(
        [sys.executable, "-m", "captioner", "evaluate", "--checkpoint", str(tiny_checkpoint),
         "--data-root", str(root), "--split-file", str(root / "dataset_shapes.json"),
         "--split", "test", "--output", str(output), "--quiet", "--num-workers", "0", "--no-java"],
        capture_output=True, text=True, check=True)
    report = json.loads(output.read_text())
    results = json.loads((tmp_path / "eval" / "scores_results.json").read_text())
    texts = {r["image_id"]: r["caption"] for r in results}
    test_ids = {i for i, image in load_objects(root / "annotations" / "shapes_objects.json").items()
                if image.file_name.startswith("COCO_val2014")}
    assert set(texts) < test_ids and len(texts) == report["num_images"] == 6  # the test split of val2014
    assert report["references"] == VAL_CAPTIONS
    assert set(report["metrics"]) == set(PYTHON_METRICS)
    assert_scores(report, pycocoevalcap_scores(references, texts))
    assert report["tokenizer"].startswith("python") and report["decoding"]["beam_size"] == 3
    assert set(report["per_image"]) == {str(i) for i in texts}
    assert {"object_recall", "hallucination_rate", "grounding_mass_over_baseline"} <= set(report["shapes"])
    assert "object_recall" in result.stdout and "references: annotations/captions_val2014.json" in result.stdout


def test_evaluate_missing_data_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--data-root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "captions_val2014.json" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- the command, on a results file


COCO_REFERENCES = {1: ["a red circle", "one red circle"], 2: ["two blue stars", "blue stars"],
                   3: ["a green square", "a square that is green"]}


def coco_ground_truth(folder: Path, references: dict[int, list[str]] = COCO_REFERENCES) -> Path:
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in references]
    annotations = [{"id": 10 * i + k, "image_id": i, "caption": caption}
                   for i, captions in references.items() for k, caption in enumerate(captions)]
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    return write_json(folder / "annotations" / "captions_val2014.json", {"images": images, "annotations": annotations})


def test_evaluate_a_results_file_scores_only_its_images(tmp_path):
    annotations = coco_ground_truth(tmp_path)
    captions = {1: "a red circle", 2: "blue stars in rows"}
    results = write_json(tmp_path / "results.json", [{"image_id": i, "caption": c} for i, c in captions.items()])
    subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--results", str(results), "--annotations",
                    str(annotations), "--no-java"], capture_output=True, text=True, check=True)
    report = json.loads((tmp_path / "results_scores.json").read_text())
    assert report["num_images"] == 2 and set(report["per_image"]) == {"1", "2"}
    assert report["per_image"]["1"]["Bleu_1"] == pytest.approx(1.0)  # equal to a reference
    # Image 2: 2 of its 4 words ("blue stars") are in a reference.
    assert report["per_image"]["2"]["Bleu_1"] == pytest.approx(0.5)
    assert_scores(report, pycocoevalcap_scores(COCO_REFERENCES, captions))


def test_evaluate_a_results_file_with_a_split_file_uses_the_captions_file(tmp_path):
    # The split file's sentences are not the captions file's: other text, other counts.
    raw = {1: ["A red circle.", "A circle."], 2: ["Two blue stars."], 3: ["A green square."]}
    images = [{"filepath": "val2014", "filename": f"COCO_val2014_{i:012d}.jpg", "cocoid": i, "imgid": i,
               "split": "test", "sentences": [{"raw": s} for s in sentences]} for i, sentences in raw.items()]
    split_file = write_json(tmp_path / "dataset_coco.json", {"images": images})
    coco_ground_truth(tmp_path)
    captions = {1: "a circle", 2: "two blue stars"}
    results = write_json(tmp_path / "results.json", [{"image_id": i, "caption": c} for i, c in captions.items()])
    subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--results", str(results), "--split-file",
                    str(split_file), "--split", "test", "--no-java"], capture_output=True, text=True, check=True)
    report = json.loads((tmp_path / "results_scores.json").read_text())
    assert report["references"] == VAL_CAPTIONS
    assert_scores(report, pycocoevalcap_scores(COCO_REFERENCES, captions))
    assert report["metrics"]["Bleu_1"] != pytest.approx(pycocoevalcap_scores(raw, captions)["Bleu_1"])


@pytest.mark.parametrize(("results", "message"), [
    ([{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}], "more than one caption"),
    ([{"image_id": 99, "caption": "a red circle"}], "99"),
    ([{"image_id": 1, "caption": "  "}], "empty"),
])
def test_evaluate_bad_results_are_one_clear_line(tmp_path, results, message):
    annotations = coco_ground_truth(tmp_path)
    path = write_json(tmp_path / "results.json", results)
    result = subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--results", str(path), "--annotations",
                             str(annotations), "--no-java"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr and "results.json" in result.stderr


def test_unfinished_captions_are_counted(shapes_data, tiny_checkpoint, tmp_path):
    # A decoder that can never say <end> stops every caption at max_len: all are unfinished,
    # and each is exactly max_len words long.
    captioner = Captioner.load(tiny_checkpoint, "cpu")
    with torch.no_grad():
        captioner.model.decoder.out.bias[captioner.vocab.end_id] = -1e4
    data = load_config(REPO / "configs" / "tiny.yaml", [
        f"data.root={shapes_data}", f"data.split_file={shapes_data / 'dataset_shapes.json'}"]).data
    report = decode_and_score(captioner, data, "test", DecodingOptions(beam_size=2, max_len=3),
                              tmp_path / "results.json", java=False, num_workers=0)
    captions = json.loads((tmp_path / "results.json").read_text())
    assert report["unfinished"] == report["num_images"] == len(captions) > 0
    assert all(len(c["caption"].split()) == 3 for c in captions)
