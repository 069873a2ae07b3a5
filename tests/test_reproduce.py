"""`captioner coco reproduce` end to end on a tiny COCO-layout dataset, then again to show it skips."""

import json
import shutil
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from captioner.cli import main
from captioner.coco_download import SPLIT_FILE
from stand_ins import hand_tokens

REPO = Path(__file__).resolve().parents[1]


def other_references(root: Path) -> dict[int, list[str]]:
    """Rewrite root's captions_val2014.json so that it differs from the split file's raw sentences
    (each image keeps its 2nd and 4th, in reverse order, plus a new one); returns its references."""
    raw = {image["cocoid"]: [s["raw"] for s in image["sentences"]]
           for image in json.loads((root / SPLIT_FILE).read_text())["images"]}
    path = root / "annotations" / "captions_val2014.json"
    data = json.loads(path.read_text())
    references = {image["id"]: [raw[image["id"]][3], raw[image["id"]][1], "Some shapes drawn on a background."]
                  for image in data["images"]}
    data["annotations"] = [{"id": 10 * i + k, "image_id": i, "caption": caption}
                           for i, captions in references.items() for k, caption in enumerate(captions)]
    path.write_text(json.dumps(data))
    return references


def test_reproduce_runs_every_stage_then_skips_them(shapes_data, tmp_path, capsys):
    root = tmp_path / "coco"
    shutil.copytree(shapes_data, root)
    shutil.copy(root / "dataset_shapes.json", root / SPLIT_FILE)  # the shapes world is written in COCO's layout
    references = other_references(root)
    run = tmp_path / "run"
    command = ["coco", "reproduce", "--root", str(root), "--config", str(REPO / "configs" / "tiny.yaml"),
               "--no-download", "--quiet", "--beam-size", "2", "--set", f"output_dir={run}", "train.epochs=1"]

    assert main(command) == 0
    first = capsys.readouterr().out
    assert "data: present" in first and "train: starting" in first
    for name in ("checkpoint_best.pt", "test_scores.json", "test_results.json", "report/index.md"):
        assert (run / name).is_file(), name
    report = (run / "report" / "index.md").read_text()
    assert "BLEU-4" in report or "Bleu_4" in report
    # The test split is scored against the captions file, as COCOEvalCap scores it, not the split file.
    scores = json.loads((run / "test_scores.json").read_text())
    assert scores["references"] == {"source": "annotations/captions_val2014.json", "kind": "coco-captions"}
    texts = {r["image_id"]: r["caption"] for r in json.loads((run / "test_results.json").read_text())}
    gts = {i: [hand_tokens(c) for c in references[i]] for i in texts}
    res = {i: [hand_tokens(c)] for i, c in texts.items()}
    assert scores["metrics"]["Bleu_4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3], abs=1e-9)
    assert scores["metrics"]["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-9)
    # the folder holds instances_val2014.json, so CHAIR is scored over every test caption
    assert scores["chair"]["captions"] == len(texts) and "CHAIR" in report
    stamps = {p: p.stat().st_mtime_ns for p in (run / "checkpoint_last.pt", run / "test_scores.json",
                                                  run / "report" / "index.md")}

    assert main(command) == 0
    second = capsys.readouterr().out
    assert "train: finished earlier" in second and "evaluate: scored earlier" in second
    assert "report: up to date" in second
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}  # nothing was redone


def test_reproduce_resumes_an_unfinished_training(shapes_data, tmp_path, capsys):
    root = tmp_path / "coco"
    shutil.copytree(shapes_data, root)
    shutil.copy(root / "dataset_shapes.json", root / SPLIT_FILE)
    run = tmp_path / "run"
    base = ["coco", "reproduce", "--root", str(root), "--config", str(REPO / "configs" / "tiny.yaml"),
            "--no-download", "--quiet", "--set", f"output_dir={run}"]
    assert main(["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--set", f"output_dir={run}",
                 f"data.root={root}", f"data.split_file={root / SPLIT_FILE}", "train.epochs=1"]) == 0
    capsys.readouterr()
    assert main([*base, "train.epochs=2"]) == 0  # the recipe asks for more epochs than were trained
    out = capsys.readouterr().out
    assert "train: resuming" in out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_missing_data_without_download_is_one_clear_line(tmp_path, capsys):
    assert main(["coco", "reproduce", "--root", str(tmp_path), "--no-download", "--quiet"]) == 2
    assert "incomplete" in capsys.readouterr().err
