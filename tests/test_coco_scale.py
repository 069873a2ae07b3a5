"""bench/coco_scale.py --quick: every stage of the COCO pipeline runs on a small shapes world in
its own process and reports its time, memory and disk, with counts that match the world."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from PIL import Image

BENCH = Path(__file__).resolve().parent.parent / "bench"
STAGES = ["generate", "index", "features", "train", "validate", "evaluate", "report"]
QUICK_IMAGES = 200
CAPTIONS_PER_IMAGE = 5


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_coco_scale_quick(tmp_path):
    output = tmp_path / "coco_scale.json"
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(BENCH / "coco_scale.py"), "--quick", "--output", str(output),
                           "--work-dir", str(work)],
                          check=False, capture_output=True, text=True, timeout=300, cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert json.loads(output.read_text()) == report
    assert report["benchmark"] == "coco_scale" and report["quick"] is True
    assert str(tmp_path) not in done.stdout  # no machine paths in the report

    (size,) = report["sizes"]
    splits = size["splits"]
    assert size["images"] == QUICK_IMAGES == sum(splits.values())
    assert splits["val"] == splits["test"] > 0 and splits["train"] > 10 * splits["val"]  # Karpathy's proportions
    stages = {row["stage"]: row for row in size["stages"]}
    assert list(stages) == STAGES
    for name, row in stages.items():
        for key in ("wall_seconds", "work_seconds", "images_per_s", "peak_tree_pss_mib", "peak_tree_rss_mib",
                    "disk_bytes_added", "peak_processes"):
            assert positive(row[key]), (name, key, row[key])
        assert row["work_seconds"] <= row["wall_seconds"], name

    assert stages["generate"]["images"] == QUICK_IMAGES and stages["generate"]["splits"] == splits
    assert stages["index"]["splits"] == splits
    assert stages["index"]["captions"] == QUICK_IMAGES * CAPTIONS_PER_IMAGE
    assert stages["features"]["images"] == splits["train"] + splits["val"]
    assert stages["train"]["captions"] == splits["train"] * CAPTIONS_PER_IMAGE and stages["train"]["epochs"] == 1
    assert stages["train"]["validation_images"] == stages["validate"]["images"] == splits["val"]
    assert stages["evaluate"]["images"] == splits["test"]
    assert stages["evaluate"]["tokenizer"]  # --quick scores with the Python tokenizer, and says so
    # loader workers are part of the measured tree: the feature stage's, which live long enough to be
    # sampled (every 0.25 s); the evaluation's decode 10 test images and can come and go between samples
    assert stages["features"]["peak_processes"] > 1
    assert size["disk_bytes"] == sum(row["disk_bytes_added"] for row in stages.values())
    assert not (work / f"size_{QUICK_IMAGES}").exists()  # the world and run are deleted without --keep

    # the docs' figure is drawn from such a result: one PNG of the figure's size
    figure = tmp_path / "coco_scale.png"
    plotted = subprocess.run([sys.executable, str(BENCH / "plot_coco_scale.py"), str(output), "--out", str(figure)],
                             check=False, capture_output=True, text=True, timeout=120, cwd=BENCH.parent)
    assert plotted.returncode == 0, plotted.stderr[-3000:]
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.size == (1100, 420)


def test_plot_refuses_other_results(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "train_throughput"}))
    done = subprocess.run([sys.executable, str(BENCH / "plot_coco_scale.py"), str(other), "--out",
                           str(tmp_path / "x.png")], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "not a bench/coco_scale.py result" in done.stderr
    assert not (tmp_path / "x.png").exists()
