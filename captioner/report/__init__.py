"""A run report: one Markdown page in `RUN_DIR/report/` that says how a training run went.

    from captioner.report import write_report
    write_report("runs/shapes")            # -> runs/shapes/report/index.md

The page (`index.md`, Markdown; images are linked relative to it, so it renders on GitHub,
in editors and in any Markdown viewer) holds:

- a summary and a per-epoch table from `metrics.jsonl`, with PNG curves of the training loss,
  the validation metrics, the learning rate and the training speed (one point per epoch);
- the test scores from a `*scores*.json` written by `captioner evaluate`, ×100 as papers print
  them, beside the published soft-attention figures on COCO (Xu et al., 2015, Table 1);
- the decoding speed measured on the gallery images, and the gallery itself: each image with
  its caption and one attention overlay per word (`report/gallery/*.png`);
- the resolved `config.yaml`.

Every file is written atomically and `index.md` last, so the page never links to a half-written
image and a crash leaves the previous report intact. Missing pieces (no scores yet, no
checkpoint, images not found) become a note on the page, never an error.

This module puts the report together; `run_folder` reads the run's files, `curves` draws the
PNG curves, `gallery` captions the gallery images and times it, `markdown` writes the page.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from captioner.atomic import AtomicFile
from captioner.inference import Captioner
from captioner.report.curves import CURVES, Plot, curve_series, plot_curves
from captioner.report.gallery import (
    DecodingSpeed,
    GalleryItem,
    caption_gallery,
    gallery_sources,
    load_captioner,
    measure_decoding,
)
from captioner.report.markdown import REFERENCE_NAME, REFERENCE_SOFT_ATTENTION_COCO, render_markdown
from captioner.report.run_folder import (
    CONFIG_FILE,
    GALLERY_DIR,
    INDEX,
    METRICS_FILE,
    REPORT_DIR,
    ReportError,
    dataset_name,
    find_scores,
    read_config,
    read_metrics,
    read_scores,
)

__all__ = ["CURVES", "REFERENCE_NAME", "REFERENCE_SOFT_ATTENTION_COCO", "DecodingSpeed", "GalleryItem", "Plot",
           "ReportError", "curve_series", "dataset_name", "find_scores", "measure_decoding", "plot_curves",
           "read_metrics", "render_markdown", "report_after_fit", "write_report"]

DEFAULT_BEAM_SIZE = 3


def write_report(
    run_dir: str | Path,
    scores_path: str | Path | None = None,
    gallery_images: Sequence[str | Path] | None = None,
    gallery_size: int = 6,
    captioner: Captioner | None = None,
    device: str | torch.device = "cpu",
    beam_size: int | None = None,
) -> Path:
    """Write `run_dir/report/index.md` (and its PNGs) and return its path.

    `scores_path`: a scores JSON from `captioner evaluate` (default: the newest `*scores*.json`
    in the run folder, if any). `gallery_images`: image paths to caption (default: the images of
    the scores file's results, else the first images of the config's validation split), at most
    `gallery_size` of them. `captioner`: the model for the gallery (default: the run's
    `checkpoint_best.pt`, else `checkpoint_last.pt`, loaded on `device`). `beam_size`: for the
    gallery and the speed figure (default: the scores file's beam size, else 3).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"run folder not found: {run_dir}")
    if gallery_size < 0:
        raise ReportError(f"gallery_size must be 0 or more, got {gallery_size}")
    out_dir = run_dir / REPORT_DIR
    notes: list[str] = []

    config_text, config = read_config(run_dir / CONFIG_FILE, notes)
    records, skipped = read_metrics(run_dir / METRICS_FILE)
    if skipped:
        notes.append(f"{skipped} unreadable line(s) of {METRICS_FILE} were skipped.")
    plots = plot_curves(records, out_dir)

    if scores_path is not None:
        scores_path = Path(scores_path)
        scores = read_scores(scores_path)
        if scores is None:
            raise ReportError(f"{scores_path} is not a scores JSON from `captioner evaluate` (no 'metrics')")
    else:
        scores_path, scores = find_scores(run_dir)
    if beam_size is None:
        decoding = (scores or {}).get("decoding")
        beam_size = DEFAULT_BEAM_SIZE
        if isinstance(decoding, dict) and decoding.get("beam_size"):
            beam_size = int(decoding["beam_size"])  # the setting the test scores were measured with

    sources = gallery_sources(gallery_images, gallery_size, scores, scores_path, config, notes)
    speed, gallery = None, []
    if sources:
        captioner = captioner or load_captioner(run_dir, device, notes)
        if captioner is not None:
            speed, gallery = caption_gallery(captioner, sources, beam_size, out_dir / GALLERY_DIR, notes)

    page = render_markdown(run_dir, config_text, config, records, plots, scores, scores_path, speed, gallery, notes)
    index = out_dir / INDEX
    with AtomicFile(index) as handle:
        handle.write(page)
    _remove_stale(out_dir, plots, gallery)
    return index


def report_after_fit(run_dir: str | Path, device: str | torch.device = "cpu") -> Path | None:
    """`write_report(run_dir)` for the end of training: prints where the report is, and turns
    any failure into a warning, because a report must never fail a run whose checkpoints are saved."""
    try:
        path = write_report(run_dir, device=device)
    except Exception as error:  # noqa: BLE001 - the training result matters more than its report
        print(f"warning: no run report written for {run_dir}: {type(error).__name__}: {error}", file=sys.stderr)
        return None
    print(f"report: {path}", file=sys.stderr)
    return path


def _remove_stale(out_dir: Path, plots: dict[str, Plot], gallery: list[GalleryItem]) -> None:
    """Delete images of an earlier report that this one no longer links (fewer images, a curve
    without data); only names this package writes are touched."""
    keep = {p.path for p in plots.values()} | {g.path for g in gallery}
    owned = [out_dir / f"{name}.png" for name, *_ in CURVES] + list((out_dir / GALLERY_DIR).glob("*.png"))
    for path in owned:
        if path not in keep:
            path.unlink(missing_ok=True)
