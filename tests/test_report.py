import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from captioner import report
from captioner.checkpoint import BUNDLED_CHECKPOINT
from captioner.config import load_config, save_config
from captioner.data.coco import load_split
from captioner.inference import Captioner
from captioner.report import (
    CURVES,
    REFERENCE_SOFT_ATTENTION_COCO,
    ReportError,
    find_scores,
    plot_curves,
    read_metrics,
    report_after_fit,
    write_report,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))
VAL_KEYS = ["val_Bleu_1", "val_Bleu_2", "val_Bleu_3", "val_Bleu_4", "val_ROUGE_L", "val_CIDEr"]


@pytest.fixture(scope="module")
def captioner():
    return Captioner.load(None, "cpu")


def metrics_lines(epochs: int) -> list[dict]:
    """Synthetic metrics.jsonl records shaped like those `fit` writes."""
    return [
        {
            "epoch": epoch, "step": 10 * epoch, "train_loss": 3.0 / epoch, "train_cross_entropy": 2.9 / epoch,
            "captions_per_s": 100.0 + epoch, "lr": 1e-3 * 0.8 ** epoch,
            **{key: 0.1 * epoch for key in VAL_KEYS},
        }
        for epoch in range(1, epochs + 1)
    ]


def make_run(folder: Path, epochs: int = 3, overrides: tuple[str, ...] = ()) -> Path:
    """A run folder as `fit` leaves it, without checkpoints: config.yaml and metrics.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    config = load_config(ROOT / "configs" / "tiny.yaml", [f"output_dir={folder}", *overrides])
    save_config(config, folder / "config.yaml")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics_lines(epochs)))
    return folder


def write_scores(folder: Path, name: str = "test_scores.json", results: list[dict] | None = None,
                 **extra) -> Path:
    """A scores JSON as `captioner evaluate` writes it, with its results file beside it."""
    path = folder / name
    results_path = path.with_name(path.stem + "_results.json")
    results_path.write_text(json.dumps(results or [{"image_id": 1, "caption": "a red circle"}]))
    scores = {
        "checkpoint": "x.pt", "split": "test", "num_images": len(results or [1]), "results": str(results_path),
        "decoding": {"beam_size": 2, "max_len": 20},
        "metrics": {"Bleu_1": 0.72, "Bleu_2": 0.5, "Bleu_3": 0.35, "Bleu_4": 0.25, "METEOR": 0.22,
                    "ROUGE_L": 0.5, "CIDEr": 0.8},
        **extra,
    }
    path.write_text(json.dumps(scores))
    return path


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()


def test_full_report(tmp_path, captioner):
    run = make_run(tmp_path / "run")
    write_scores(run)
    index = write_report(run, gallery_images=EXAMPLES[:2], captioner=captioner)

    assert index == run / "report" / "index.md"
    page = index.read_text()
    # the resolved config, verbatim, in a YAML block
    assert "```yaml\n" + (run / "config.yaml").read_text().rstrip() + "\n```" in page
    # the metric table: this run ×100 beside the paper's figures, with "—" where it reports none
    assert "| Bleu_4 | 25.0 | 24.3 |" in page
    assert "| METEOR | 22.0 | 23.9 |" in page
    assert "| CIDEr | 80.0 | — |" in page
    for value in REFERENCE_SOFT_ATTENTION_COCO.values():
        assert f"{value:.1f}" in page
    assert "Xu et al. 2015" in page
    # tiny.yaml names no dataset: the page must not claim the columns compare
    assert "may **not be comparable**" in page

    for name, *_ in CURVES:
        if name == "reward":  # self-critical training only; this run logged cross-entropy
            assert not (run / "report" / "reward.png").exists() and "](reward.png)" not in page
            continue
        assert_png(run / "report" / f"{name}.png")
        assert f"]({name}.png)" in page

    gallery = sorted((run / "report" / "gallery").glob("*.png"))
    assert [p.name for p in gallery] == ["01_shapes_1.png", "02_shapes_2.png"]
    for path in gallery:
        assert_png(path)
        assert f"](gallery/{path.name})" in page
    expected = captioner.caption(EXAMPLES[:2], beam_size=2)  # the scores file's beam size
    for result in expected:
        assert result.text in page
    assert "## Decoding speed" in page
    assert "| 2 | 2 | `cpu` |" in page  # images, beam size, device
    # every file was committed: no temporary file is left in the report folders
    assert not list((run / "report").rglob("*.partial"))


def test_plotted_series_have_one_point_per_epoch(tmp_path):
    records, skipped = read_metrics(make_run(tmp_path, epochs=3) / "metrics.jsonl")
    plots = plot_curves(records, tmp_path / "out")

    assert skipped == 0
    assert set(plots) == {"loss", "validation", "lr", "speed"}
    assert set(plots["validation"].series) == set(VAL_KEYS)
    assert set(plots["loss"].series) == {"train_loss", "train_cross_entropy"}
    for plot in plots.values():
        assert_png(plot.path)
        for epochs, values in plot.series.values():
            assert epochs == [1, 2, 3]
            assert len(values) == 3
    assert plots["lr"].series["lr"][1] == pytest.approx([1e-3 * 0.8 ** e for e in (1, 2, 3)])


def test_one_epoch_and_no_scores(tmp_path):
    run = make_run(tmp_path, epochs=1)
    page = write_report(run, gallery_size=0).read_text()

    assert "No scores file yet" in page
    assert "Xu et al." not in page
    assert "Epochs logged: 1" in page
    for name, *_ in CURVES:
        if name != "reward":  # drawn for self-critical runs only
            assert_png(run / "report" / f"{name}.png")
    records, _ = read_metrics(run / "metrics.jsonl")
    assert all(len(values) == 1 for plot in plot_curves(records, tmp_path / "p").values()
               for _, values in plot.series.values())


def test_run_with_no_epoch_yet(tmp_path):
    run = make_run(tmp_path, epochs=0)
    page = write_report(run, gallery_size=0).read_text()
    assert "No epoch finished yet" in page
    assert not list((run / "report").glob("*.png"))


def test_coco_run_compares_with_the_paper(tmp_path):
    run = make_run(tmp_path, overrides=("data.root=/coco", "data.split_file=/coco/dataset_coco.json"))
    write_scores(run)
    page = write_report(run, gallery_size=0).read_text()
    assert "| Bleu_1 | 72.0 | 70.7 | +1.3 |" in page
    assert "| METEOR | 22.0 | 23.9 | -1.9 |" in page
    assert "| ROUGE_L | 50.0 | — | — |" in page
    assert "not comparable" not in page


def test_shapes_run_is_not_compared(tmp_path):
    run = make_run(tmp_path)
    write_scores(run, shapes={"object_recall": 0.9, "grounding_count": 12})
    page = write_report(run, gallery_size=0).read_text()
    assert "data are shapes, so the two columns are **not comparable**" in page
    assert "difference" not in page
    assert "| `object_recall` | 0.9000 |" in page
    assert "| `grounding_count` | 12 |" in page


def test_gallery_from_scored_results(tmp_path, shapes_data, captioner):
    """Without gallery_images, the images come from the results file's ids via the run's data."""
    run = make_run(tmp_path, overrides=(f"data.root={shapes_data}",
                                        f"data.split_file={shapes_data / 'dataset_shapes.json'}"))
    config = load_config(run / "config.yaml")
    records = load_split(config.data, "test")[:3]
    write_scores(run, results=[{"image_id": r.image_id, "caption": "x"} for r in reversed(records)])

    page = write_report(run, gallery_size=2, captioner=captioner).read_text()

    gallery = sorted((run / "report" / "gallery").glob("*.png"))
    assert [p.name for p in gallery] == [f"01_{records[2].path.stem}.png", f"02_{records[1].path.stem}.png"]
    assert "the first 2 images of the scored results" in page


def test_gallery_from_validation_images_without_scores(tmp_path, shapes_data, captioner):
    run = make_run(tmp_path, overrides=(f"data.root={shapes_data}",
                                        f"data.split_file={shapes_data / 'dataset_shapes.json'}"))
    page = write_report(run, gallery_size=2, captioner=captioner).read_text()
    assert len(list((run / "report" / "gallery").glob("*.png"))) == 2
    assert "images of the 'val' split" in page


def test_gallery_skipped_with_a_note_when_images_cannot_be_found(tmp_path):
    run = make_run(tmp_path, overrides=("data.root=/nowhere", "data.split_file=/nowhere/dataset_shapes.json"))
    write_scores(run)
    page = write_report(run).read_text()  # no captioner and no checkpoint: must not be needed
    assert "Gallery skipped" in page
    assert "## Gallery" not in page
    assert not (run / "report" / "gallery").exists()


def test_gallery_uses_the_runs_checkpoint(tmp_path):
    run = make_run(tmp_path)
    page = write_report(run, gallery_images=EXAMPLES[:1]).read_text()
    assert "Gallery skipped: no checkpoint_best.pt or checkpoint_last.pt" in page

    shutil.copy(BUNDLED_CHECKPOINT, run / "checkpoint_best.pt")
    page = write_report(run, gallery_images=EXAMPLES[:1]).read_text()
    assert_png(run / "report" / "gallery" / "01_shapes_1.png")
    assert "| 1 | 3 | `cpu` |" in page  # no scores file: the default beam of 3


def test_unreadable_gallery_image_is_noted_and_skipped(tmp_path, captioner):
    run = make_run(tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    page = write_report(run, gallery_images=[broken, EXAMPLES[0]], captioner=captioner).read_text()
    assert [p.name for p in (run / "report" / "gallery").glob("*.png")] == ["01_shapes_1.png"]
    assert "broken.jpg" in page


def test_a_new_report_replaces_the_old_gallery(tmp_path, captioner):
    run = make_run(tmp_path)
    write_report(run, gallery_images=EXAMPLES[:3], captioner=captioner)
    write_report(run, gallery_images=EXAMPLES[3:4], captioner=captioner)
    assert [p.name for p in (run / "report" / "gallery").glob("*.png")] == ["01_shapes_4.png"]


def test_a_failure_mid_report_leaves_the_previous_report(tmp_path, captioner, monkeypatch):
    run = make_run(tmp_path)
    before = write_report(run, gallery_size=0).read_text()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report.gallery, "save_overlays", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(run, gallery_images=EXAMPLES[:1], captioner=captioner)
    assert (run / "report" / "index.md").read_text() == before
    assert not list((run / "report").rglob("*.partial"))


def test_metrics_log_from_a_resumed_or_crashed_run(tmp_path):
    lines = metrics_lines(3)
    resumed = {**lines[1], "train_loss": 0.123}  # epoch 2 trained again after a resume
    text = "".join(json.dumps(r) + "\n" for r in [*lines[:2], resumed, lines[2]]) + '{"epoch": 4, "train_lo'
    (tmp_path / "metrics.jsonl").write_text(text)

    records, skipped = read_metrics(tmp_path / "metrics.jsonl")

    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[1]["train_loss"] == 0.123
    assert skipped == 1


def test_find_scores_skips_results_files(tmp_path):
    assert find_scores(tmp_path) == (None, None)
    path = write_scores(tmp_path, "val_scores.json")  # also writes val_scores_results.json, a list
    found, scores = find_scores(tmp_path)
    assert found == path
    assert scores["metrics"]["Bleu_4"] == 0.25


def test_explicit_scores_file_must_exist_and_be_scores(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(ReportError, match="not found"):
        write_report(run, scores_path=tmp_path / "missing.json", gallery_size=0)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ReportError, match="not a scores JSON"):
        write_report(run, scores_path=tmp_path / "list.json", gallery_size=0)
    with pytest.raises(ReportError, match="run folder not found"):
        write_report(tmp_path / "nope")


def test_report_after_fit_never_raises(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert report_after_fit(run) == run / "report" / "index.md"
    assert "report:" in capsys.readouterr().err

    assert report_after_fit(tmp_path / "missing") is None
    assert "warning: no run report written" in capsys.readouterr().err
