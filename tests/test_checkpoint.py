"""Exported checkpoints: training state dropped, and no path of the machine that built them."""

import sys
from pathlib import Path

import torch

from captioner.checkpoint import export_checkpoint, load_checkpoint, save_checkpoint


def strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def test_export_keeps_what_captions_and_drops_machine_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    installed = Path(sys.prefix) / "lib" / "site-packages" / "pycocoevalcap" / "spice" / "lib"
    elsewhere = Path("/srv/builder/experiments/world_7")
    config = {"data": {"root": str(tmp_path / "data" / "shapes"), "split_file": str(elsewhere / "split.json")},
              "output_dir": str(tmp_path / "runs" / "shapes")}
    weights = {"decoder.out.weight": torch.arange(6.0).view(2, 3)}
    save_checkpoint({"config": config, "vocab": {"itos": ["<pad>"]}, "model": weights,
                     "training": {"step": 7}}, tmp_path / "runs" / "last.pt")
    evaluation = {"results": str(tmp_path / "runs" / "results.json"),
                  "notes": [f"SPICE skipped: copy its jars to {installed}, then rerun"]}

    export_checkpoint(tmp_path / "runs" / "last.pt", tmp_path / "model.pt", evaluation,
                      data_origin="captioner shapes --out data/shapes --num-images 10000 --seed 0")

    exported = load_checkpoint(tmp_path / "model.pt")
    assert "training" not in exported
    torch.testing.assert_close(exported["model"]["decoder.out.weight"], weights["decoder.out.weight"])
    assert exported["config"]["data"] == {"root": "data/shapes", "split_file": "…/world_7/split.json"}
    assert exported["config"]["output_dir"] == "runs/shapes"
    assert exported["evaluation"]["results"] == "runs/results.json"
    assert exported["evaluation"]["notes"] == [
        "SPICE skipped: copy its jars to site-packages/pycocoevalcap/spice/lib, then rerun"]
    assert exported["data_origin"] == "captioner shapes --out data/shapes --num-images 10000 --seed 0"
    for text in strings(exported):
        assert str(tmp_path) not in text and sys.prefix not in text and "/srv/" not in text, text
