import json
import subprocess
import sys
from pathlib import Path

import pytest

from captioner.config import load_config
from captioner.data.shapes import load_objects
from captioner.training import fit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_checkpoint(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    config = load_config(REPO / "configs" / "tiny.yaml", [
        f"data.root={shapes_data}", f"data.split_file={shapes_data / 'dataset_shapes.json'}",
        f"output_dir={out}", "train.epochs=1"])
    return fit(config) / "checkpoint_last.pt"


def test_evaluate_scores_a_shapes_split_with_grounding(shapes_data, tiny_checkpoint, tmp_path):
    output = tmp_path / "eval" / "scores.json"
    result = subprocess.run(
        [sys.executable, "-m", "captioner", "evaluate", "--checkpoint", str(tiny_checkpoint),
         "--data-root", str(shapes_data), "--split-file", str(shapes_data / "dataset_shapes.json"),
         "--split", "test", "--output", str(output), "--quiet", "--num-workers", "0", "--no-java"],
        capture_output=True, text=True, check=True)
    report = json.loads(output.read_text())
    test_ids = {i for i, image in load_objects(shapes_data / "annotations" / "shapes_objects.json").items()
                if image.file_name.startswith("COCO_val2014")}
    results = json.loads((tmp_path / "eval" / "scores_results.json").read_text())
    assert {r["image_id"] for r in results} < test_ids  # the test split only, a subset of val2014
    assert report["num_images"] == len(results) == 6
    assert set(report["metrics"]) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    assert report["tokenizer"].startswith("python") and report["decoding"]["beam_size"] == 3
    assert set(report["per_image"]) == {str(r["image_id"]) for r in results}
    assert 0.0 <= report["shapes"]["object_recall"] <= 1.0
    assert 0.0 <= report["shapes"]["grounding_baseline"] < 1.0
    assert "object_recall" in result.stdout and "CIDEr" in result.stdout


def test_evaluate_missing_data_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--data-root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "captions_val2014.json" in result.stderr and "Traceback" not in result.stderr


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def coco_ground_truth(tmp_path):
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in (1, 2, 3)]
    annotations = [{"id": 10 * i + k, "image_id": i, "caption": caption}
                   for i, captions in {1: ["a red circle", "one red circle"], 2: ["two blue stars", "blue stars"],
                                       3: ["a green square", "a square that is green"]}.items()
                   for k, caption in enumerate(captions)]
    return write_json(tmp_path / "captions_val2014.json", {"images": images, "annotations": annotations})


def test_evaluate_a_results_file_scores_only_its_images(tmp_path):
    annotations = coco_ground_truth(tmp_path)
    results = write_json(tmp_path / "results.json", [{"image_id": 1, "caption": "a red circle"},
                                                     {"image_id": 2, "caption": "two blue stars"}])
    subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--results", str(results), "--annotations",
                    str(annotations), "--no-java"], capture_output=True, text=True, check=True)
    report = json.loads((tmp_path / "results_scores.json").read_text())
    assert report["num_images"] == 2 and set(report["per_image"]) == {"1", "2"}
    assert report["metrics"]["Bleu_1"] == pytest.approx(1.0)  # both captions equal a reference


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
