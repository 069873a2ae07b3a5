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
         "--split", "test", "--output", str(output), "--quiet", "--num-workers", "0"],
        capture_output=True, text=True, check=True)
    report = json.loads(output.read_text())
    test_ids = {i for i, image in load_objects(shapes_data / "annotations" / "shapes_objects.json").items()
                if image.file_name.startswith("COCO_val2014")}
    results = json.loads((tmp_path / "eval" / "scores_results.json").read_text())
    assert {r["image_id"] for r in results} < test_ids  # the test split only, a subset of val2014
    assert report["num_images"] == len(results) == 6
    assert set(report["metrics"]) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    assert 0.0 <= report["shapes"]["object_recall"] <= 1.0
    assert 0.0 <= report["shapes"]["grounding_baseline"] < 1.0
    assert "object_recall" in result.stdout and "CIDEr" in result.stdout


def test_evaluate_missing_data_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "captioner", "evaluate", "--data-root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "captions_val2014.json" in result.stderr and "Traceback" not in result.stderr
