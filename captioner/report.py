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
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from captioner.atomic import AtomicFile
from captioner.backbones import WeightsUnavailableError
from captioner.checkpoint import CheckpointError
from captioner.config import Config, ConfigError, load_config
from captioner.data.coco import DatasetError, load_split
from captioner.images import ImageLoadError, load_image
from captioner.inference import Captioner, CaptionResult
from captioner.visualize import save_overlays

REPORT_DIR = "report"
INDEX = "index.md"
GALLERY_DIR = "gallery"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
SCORES_PATTERN = "*scores*.json"
# Preferred first: the best model is the one a user would deploy.
CHECKPOINTS = ("checkpoint_best.pt", "checkpoint_last.pt")
DEFAULT_BEAM_SIZE = 3
# Pixels per overlay tile: a 20-word caption still fits a page, and the report stays a few MB.
GALLERY_TILE = 160

# Xu et al. 2015, "Show, Attend and Tell", Table 1, COCO, "Soft-Attention" row (×100).
# The paper reports no ROUGE-L, CIDEr or SPICE for it.
REFERENCE_NAME = "Xu et al. 2015, soft attention (COCO)"
REFERENCE_SOFT_ATTENTION_COCO = {
    "Bleu_1": 70.7,
    "Bleu_2": 49.2,
    "Bleu_3": 34.4,
    "Bleu_4": 24.3,
    "METEOR": 23.90,
}
# Row order of the score table; metrics the scores file adds beyond these follow in its order.
METRIC_ORDER = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")

# One curve image per entry: (file stem, title, y label, metrics.jsonl keys).
# "val_*" stands for every validation metric the log holds.
CURVES = (
    ("loss", "Training loss", "loss per word", ("train_loss", "train_cross_entropy")),
    ("validation", "Validation metrics (decoded captions)", "score", ("val_*",)),
    ("lr", "Learning rate (decoder)", "learning rate", ("lr",)),
    ("speed", "Training speed", "captions / s", ("captions_per_s",)),
)
# CIDEr runs up to 10 while BLEU, METEOR and ROUGE-L stay within 1: its own axis keeps them readable.
SECONDARY_AXIS = frozenset({"val_CIDEr"})
# The cross-entropy equals the loss when the attention penalty λ is 0: dashed, it stays visible on top.
DASHED = frozenset({"train_cross_entropy"})
FIGURE_SIZE = (6.4, 3.6)
FIGURE_DPI = 100


class ReportError(ValueError):
    """The run folder or a file named explicitly cannot be used; the message names it."""


@dataclass(frozen=True)
class Plot:
    """One curve image: `series` maps a metrics key to its (epochs, values), as plotted."""

    name: str
    title: str
    path: Path
    series: dict[str, tuple[list[int], list[float]]]


@dataclass(frozen=True)
class DecodingSpeed:
    """Wall time to caption `images` already-decoded images in one `Captioner.caption` call."""

    images: int
    beam_size: int
    device: str
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class GalleryItem:
    source: str
    result: CaptionResult
    path: Path


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

    config_text, config = _read_config(run_dir / CONFIG_FILE, notes)
    records, skipped = read_metrics(run_dir / METRICS_FILE)
    if skipped:
        notes.append(f"{skipped} unreadable line(s) of {METRICS_FILE} were skipped.")
    plots = plot_curves(records, out_dir)

    if scores_path is not None:
        scores_path = Path(scores_path)
        scores = _read_scores(scores_path)
        if scores is None:
            raise ReportError(f"{scores_path} is not a scores JSON from `captioner evaluate` (no 'metrics')")
    else:
        scores_path, scores = find_scores(run_dir)
    if beam_size is None:
        decoding = (scores or {}).get("decoding")
        beam_size = DEFAULT_BEAM_SIZE
        if isinstance(decoding, dict) and decoding.get("beam_size"):
            beam_size = int(decoding["beam_size"])  # the setting the test scores were measured with

    sources = _gallery_sources(gallery_images, gallery_size, scores, scores_path, config, notes)
    speed, gallery = None, []
    if sources:
        captioner = captioner or _load_captioner(run_dir, device, notes)
        if captioner is not None:
            speed, gallery = _caption_gallery(captioner, sources, beam_size, out_dir / GALLERY_DIR, notes)

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


# ---------------------------------------------------------------------------------------------
# metrics.jsonl and curves


def read_metrics(path: str | Path) -> tuple[list[dict], int]:
    """(one record per epoch in epoch order, number of unreadable lines) from `metrics.jsonl`.

    A run resumed from an older checkpoint logs some epochs twice: the later line wins, since it
    belongs to the run that produced the final checkpoints. A line cut short by a crash is
    skipped and counted. A missing file gives no records.
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    by_epoch: dict[int, dict] = {}
    skipped = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            epoch = int(record["epoch"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            skipped += 1
            continue
        by_epoch[epoch] = record
    return [by_epoch[epoch] for epoch in sorted(by_epoch)], skipped


def curve_series(records: Sequence[dict], keys: Sequence[str]) -> dict[str, tuple[list[int], list[float]]]:
    """{key: (epochs, values)} for each key with at least one numeric value; "val_*" expands to
    every validation key in order of first appearance. Epochs lacking a key are left out."""
    expanded: list[str] = []
    for key in keys:
        if key == "val_*":
            expanded += [k for k in dict.fromkeys(k for r in records for k in r) if k.startswith("val_")]
        else:
            expanded.append(key)
    series = {}
    for key in expanded:
        points = [(int(r["epoch"]), float(r[key])) for r in records if _is_number(r.get(key))]
        if points:
            epochs, values = zip(*points)
            series[key] = (list(epochs), list(values))
    return series


def plot_curves(records: Sequence[dict], out_dir: str | Path) -> dict[str, Plot]:
    """Write one PNG per entry of `CURVES` that has data into `out_dir`; returns them by name,
    each with the series it plotted (so callers can check the points without reading pixels)."""
    out_dir = Path(out_dir)
    plots = {}
    for name, title, ylabel, keys in CURVES:
        series = curve_series(records, keys)
        if not series:
            continue
        path = out_dir / f"{name}.png"
        _save_figure(_curve_figure(title, ylabel, series), path)
        plots[name] = Plot(name, title, path, series)
    return plots


def _curve_figure(title: str, ylabel: str, series: dict[str, tuple[list[int], list[float]]]) -> Figure:
    """Lines with a marker per epoch (so a 1-epoch run still shows its point), CIDEr on a right axis."""
    figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)  # Agg renders without a display and without pyplot's global state
    axes = figure.add_subplot()
    right = axes.twinx() if SECONDARY_AXIS & series.keys() and len(series) > 1 else None
    for index, (key, (epochs, values)) in enumerate(series.items()):
        target = right if right is not None and key in SECONDARY_AXIS else axes
        # Explicit colours: the twin axis has a colour cycle of its own and would repeat C0.
        target.plot(epochs, values, marker="o", markersize=4, color=f"C{index % 10}",
                    linestyle="--" if key in DASHED else "-",
                    label=f"{key} (right axis)" if target is right else key)
    axes.set_title(title)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, alpha=0.3)
    if right is not None:
        right.set_ylabel("CIDEr")
    handles = axes.get_legend_handles_labels()
    if right is not None:
        extra = right.get_legend_handles_labels()
        handles = (handles[0] + extra[0], handles[1] + extra[1])
    if len(handles[0]) > 1:
        axes.legend(*handles, fontsize="small", loc="best")
    return figure


def _save_figure(figure: Figure, path: Path) -> None:
    with AtomicFile(path, "wb") as handle:
        figure.savefig(handle, format="png")


# ---------------------------------------------------------------------------------------------
# config and scores


def _read_config(path: Path, notes: list[str]) -> tuple[str | None, Config | None]:
    """The YAML text as written by `fit`, and the parsed config when it still validates."""
    if not path.is_file():
        notes.append(f"{CONFIG_FILE} not found: config, dataset and gallery images unknown.")
        return None, None
    text = path.read_text()
    try:
        return text, load_config(path)
    except ConfigError as error:
        notes.append(f"{CONFIG_FILE} does not load with this version of captioner ({error}).")
        return text, None


def _read_scores(path: Path) -> dict | None:
    """A scores JSON's contents, or None when the file is not one (e.g. a `*_results.json` list)."""
    try:
        scores = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"scores file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return scores if isinstance(scores, dict) and isinstance(scores.get("metrics"), dict) else None


def find_scores(run_dir: str | Path) -> tuple[Path | None, dict | None]:
    """The newest `*scores*.json` in `run_dir` that holds metrics, with its contents.

    `captioner evaluate` writes the captions beside the scores as `*_scores_results.json`,
    which matches the pattern too; such files hold no 'metrics' and are passed over.
    """
    found = []
    for path in Path(run_dir).glob(SCORES_PATTERN):
        scores = _read_scores(path) if path.is_file() else None
        if scores is not None:
            found.append((path, scores))
    if not found:
        return None, None
    return max(found, key=lambda item: (item[0].stat().st_mtime, item[0].name))


def dataset_name(config: Config | None, scores: dict | None) -> str | None:
    """"COCO", "shapes", another split file's dataset name, or None when unknown.

    Only COCO runs are comparable with the published figures; a scores file with shapes
    grounding figures is a shapes run whatever the split file is called.
    """
    if scores and "shapes" in scores:
        return "shapes"
    if config is None:
        return None
    if config.data.split_file:
        stem = Path(config.data.split_file).stem
        name = stem.removeprefix("dataset_")
        return "COCO" if name.lower() == "coco" else name
    # Without a split file the data are the official captions_{train,val}2014.json.
    return "COCO" if config.data.root else None


# ---------------------------------------------------------------------------------------------
# gallery and decoding speed


def _gallery_sources(
    gallery_images: Sequence[str | Path] | None,
    size: int,
    scores: dict | None,
    scores_path: Path | None,
    config: Config | None,
    notes: list[str],
) -> list[Path]:
    """Up to `size` image files for the gallery: given paths, else the scored test images,
    else the first validation images; a note says where they came from or why there are none."""
    if size == 0:
        notes.append("Gallery skipped: gallery size 0.")
        return []
    if gallery_images is not None:
        return [Path(p) for p in gallery_images][:size]
    found: list[Path] = []
    if scores is not None and config is not None:
        found = _scored_images(scores, scores_path, config, size, notes)
        if found:
            notes.append(f"Gallery: the first {len(found)} images of the scored results.")
    if not found and config is not None and config.data.root:
        try:
            records = load_split(config.data, config.data.val_split)
        except (DatasetError, OSError) as error:
            notes.append(f"Gallery skipped: the validation images cannot be listed ({error}).")
            return []
        found = [r.path for r in records if r.path.is_file()][:size]
        if found:
            notes.append(f"Gallery: the first {len(found)} images of the '{config.data.val_split}' split.")
    if not found:
        notes.append("Gallery skipped: no image files found (pass gallery_images / --images).")
    return found


def _scored_images(scores: dict, scores_path: Path, config: Config, size: int, notes: list[str]) -> list[Path]:
    """Files of the first `size` image ids of the scores' results, looked up in the config's data."""
    results = _results_file(scores, scores_path)
    if results is None:
        return []
    try:
        ids = list(dict.fromkeys(int(item["image_id"]) for item in json.loads(results.read_text())))
        records = load_split(config.data, scores.get("split", "test"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as error:
        # DatasetError is a ValueError: the data may live on another machine than the report.
        notes.append(f"Images of {results.name} not found ({error}).")
        return []
    paths = {r.image_id: r.path for r in records}
    found = [paths[i] for i in ids if i in paths and paths[i].is_file()][:size]
    if not found:
        notes.append(f"None of the images of {results.name} is a file of the config's "
                     f"'{scores.get('split', 'test')}' split: the scores may come from other data.")
    return found


def _results_file(scores: dict, scores_path: Path) -> Path | None:
    """The captions file the scores were computed from: as recorded (relative to where evaluate
    ran), else by name beside the scores file, which also covers a copied or moved run folder."""
    candidates = []
    if scores.get("results"):
        recorded = Path(scores["results"])
        candidates += [recorded, scores_path.parent / recorded.name]
    candidates.append(scores_path.with_name(scores_path.stem + "_results.json"))
    return next((c for c in candidates if c.is_file()), None)


def _load_captioner(run_dir: Path, device: str | torch.device, notes: list[str]) -> Captioner | None:
    """The run's best (else last) checkpoint, or None with a note: a report without a gallery
    still says how training went."""
    for name in CHECKPOINTS:
        if (run_dir / name).is_file():
            try:
                return Captioner.load(run_dir / name, device)
            except (CheckpointError, WeightsUnavailableError, OSError) as error:
                notes.append(f"Gallery skipped: cannot load {name} ({error}).")
                return None
    notes.append(f"Gallery skipped: no {' or '.join(CHECKPOINTS)} in the run folder.")
    return None


def measure_decoding(
    captioner: Captioner, images: Sequence, beam_size: int
) -> tuple[list[CaptionResult], DecodingSpeed]:
    """Caption `images` (decoded PIL images) in one batch and time it: preprocessing, encoder and
    beam search, after one warm-up image so one-time costs (allocator, kernel selection) are excluded."""
    captioner.caption(images[:1], beam_size=beam_size)
    _synchronize(captioner.device)
    started = time.perf_counter()
    results = captioner.caption(images, beam_size=beam_size)
    _synchronize(captioner.device)
    seconds = time.perf_counter() - started
    return results, DecodingSpeed(len(images), beam_size, str(captioner.device), seconds)


def _synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, which would otherwise finish after the clock stops."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _caption_gallery(
    captioner: Captioner, sources: Sequence[Path], beam_size: int, gallery_dir: Path, notes: list[str]
) -> tuple[DecodingSpeed | None, list[GalleryItem]]:
    """Caption the readable `sources`, time it, and save one overlay grid per image."""
    images, readable = [], []
    for source in sources:
        try:
            images.append(load_image(source))
            readable.append(source)
        except ImageLoadError as error:
            notes.append(f"Gallery: {error}")
    if not images:
        return None, []
    results, speed = measure_decoding(captioner, images, beam_size)
    gallery = []
    for index, (source, image, result) in enumerate(zip(readable, images, results), start=1):
        path = gallery_dir / f"{index:02d}_{_safe_stem(source)}.png"
        save_overlays(image, result.words, result.attention, path, tile=GALLERY_TILE)
        gallery.append(GalleryItem(str(source), result, path))
    return speed, gallery


def _safe_stem(path: Path) -> str:
    """A file-name stem that needs no escaping in a Markdown link."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:60] or "image"


def _remove_stale(out_dir: Path, plots: dict[str, Plot], gallery: list[GalleryItem]) -> None:
    """Delete images of an earlier report that this one no longer links (fewer images, a curve
    without data); only names this module writes are touched."""
    keep = {p.path for p in plots.values()} | {g.path for g in gallery}
    owned = [out_dir / f"{name}.png" for name, *_ in CURVES] + list((out_dir / GALLERY_DIR).glob("*.png"))
    for path in owned:
        if path not in keep:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Markdown


def render_markdown(
    run_dir: Path,
    config_text: str | None,
    config: Config | None,
    records: Sequence[dict],
    plots: dict[str, Plot],
    scores: dict | None,
    scores_path: Path | None,
    speed: DecodingSpeed | None,
    gallery: Sequence[GalleryItem],
    notes: Sequence[str],
) -> str:
    """The whole page; image links are relative to `run_dir/report/`."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f"# Run report: `{run_dir}`\n\nGenerated {generated}.",
        _summary_section(config, records, scores_path),
        _scores_section(config, scores, scores_path),
        _curves_section(records, plots),
        _speed_section(speed),
        _gallery_section(gallery, run_dir / REPORT_DIR),
        _config_section(config_text),
    ]
    if notes:
        sections.append("## Notes\n\n" + "\n".join(f"- {_escape(note)}" for note in notes))
    return "\n\n".join(s for s in sections if s) + "\n"


def _summary_section(config: Config | None, records: Sequence[dict], scores_path: Path | None) -> str:
    lines = ["## Summary", ""]
    if not records:
        lines.append(f"- No epoch finished yet ({METRICS_FILE} has no records).")
    else:
        last = records[-1]
        lines.append(f"- Epochs logged: {len(records)} (last epoch {last['epoch']}, step {last.get('step', '?')}).")
        if _is_number(last.get("train_loss")):
            lines.append(f"- Final training loss: {last['train_loss']:.4f}.")
        metric = config.train.val_metric if config else "CIDEr"
        logged = [r for r in records if _is_number(r.get(f"val_{metric}"))]
        if logged:
            best = max(logged, key=lambda r: r[f"val_{metric}"])
            lines.append(f"- Best validation {metric}: {best[f'val_{metric}']:.4f} at epoch {best['epoch']} "
                         "(the epoch of `checkpoint_best.pt`).")
    lines.append(f"- Test scores: `{scores_path.name}`." if scores_path else
                 "- Test scores: none yet (run `captioner evaluate --checkpoint RUN/checkpoint_best.pt "
                 "--output RUN/test_scores.json`, then report again).")
    return "\n".join(lines)


def _scores_section(config: Config | None, scores: dict | None, scores_path: Path | None) -> str:
    """Test metrics ×100 beside the paper's soft-attention row, with the difference for COCO only."""
    if scores is None:
        return "## Test scores\n\nNo scores file yet: this report shows training only."
    name = dataset_name(config, scores)
    comparable = name == "COCO"
    metrics = scores["metrics"]
    names = [m for m in METRIC_ORDER if m in metrics or m in REFERENCE_SOFT_ATTENTION_COCO]
    names += [m for m in metrics if m not in names]
    header = ["metric", "this run (×100)", REFERENCE_NAME] + (["difference"] if comparable else [])
    rows = []
    for metric in names:
        ours = metrics.get(metric)
        ours = float(ours) * 100 if _is_number(ours) else None
        reference = REFERENCE_SOFT_ATTENTION_COCO.get(metric)
        row = [metric, _number(ours), _number(reference)]
        if comparable:
            row.append(f"{ours - reference:+.1f}" if ours is not None and reference is not None else "—")
        rows.append(row)
    details = [_scores_origin(scores, scores_path)]
    if comparable:
        details.append("The reference is the paper's COCO test split (Karpathy split, 5000 images); "
                       "— marks a figure it does not report.")
    elif name is None:
        details.append("The reference figures are for COCO; this run's dataset is unknown, so the two "
                       "columns may **not be comparable**.")
    else:
        details.append(f"The reference figures are for COCO; this run's data are {_escape(name)}, "
                       "so the two columns are **not comparable**.")
    details += [f"Note from the evaluation: {_escape(note)}" for note in scores.get("notes", [])]
    parts = ["## Test scores", _table(header, rows), "\n\n".join(details)]
    if isinstance(scores.get("shapes"), dict):
        shapes = [[f"`{key}`", _number(value, 4)] for key, value in scores["shapes"].items()]
        parts += ["### Shapes-world figures (object naming and attention grounding)",
                  _table(["figure", "value"], shapes)]
    return "\n\n".join(parts)


def _scores_origin(scores: dict, scores_path: Path) -> str:
    """One sentence: which file, how many images, which split, decoding and tokenizer."""
    facts = [f"From `{scores_path.name}`"]
    if "num_images" in scores:
        facts.append(f"{scores['num_images']} images")
    if "split" in scores:
        facts.append(f"split `{scores['split']}`")
    if isinstance(scores.get("decoding"), dict):
        facts.append(f"decoding: {_decoding_text(scores['decoding'])}")
    if "tokenizer" in scores:
        facts.append(f"tokenizer: {_escape(scores['tokenizer'])}")
    return ", ".join(facts) + "."


def _curves_section(records: Sequence[dict], plots: dict[str, Plot]) -> str:
    if not plots:
        return "## Training curves\n\nNo epoch logged yet."
    parts = ["## Training curves"]
    parts += [f"![{plot.title}]({plot.path.name})" for plot in plots.values()]
    keys = [k for k in ("train_loss", "captions_per_s", "lr") if any(k in r for r in records)]
    keys += [k for k in dict.fromkeys(k for r in records for k in r) if k.startswith("val_")]
    rows = [[str(r["epoch"])] + [_number(r.get(k), 4, scientific=k == "lr") for k in keys] for r in records]
    parts += ["### Per epoch", _table(["epoch", *keys], rows)]
    return "\n\n".join(parts)


def _speed_section(speed: DecodingSpeed | None) -> str:
    if speed is None:
        return ""
    table = _table(
        ["images", "beam size", "device", "seconds", "images / s"],
        [[str(speed.images), str(speed.beam_size), f"`{speed.device}`", f"{speed.seconds:.3f}",
          f"{speed.images_per_s:.1f}"]],
    )
    return ("## Decoding speed\n\n" + table + "\n\nOne batched `Captioner.caption` call on the gallery images "
            "(already read from disk): preprocessing, encoder and beam search, after one warm-up image. "
            "A small batch: throughput on a full split is higher.")


def _gallery_section(gallery: Sequence[GalleryItem], report_dir: Path) -> str:
    if not gallery:
        return ""
    parts = ["## Gallery", "Each grid shows the image, then where the model looked for each word of its caption."]
    for index, item in enumerate(gallery, start=1):
        link = item.path.relative_to(report_dir).as_posix()
        caption = _escape(item.result.text) or "(empty caption)"
        parts.append(f"**{index}.** `{item.source}`: *{caption}* (log-probability {item.result.log_prob:.2f})"
                     f"\n\n![attention for image {index}]({link})")
    return "\n\n".join(parts)


def _config_section(config_text: str | None) -> str:
    if config_text is None:
        return ""
    return f"## Config\n\nThe resolved config (`{CONFIG_FILE}`):\n\n```yaml\n{config_text.rstrip()}\n```"


def _decoding_text(decoding: dict) -> str:
    if "beam_size" in decoding:
        return f"beam {decoding['beam_size']}" + (f", max {decoding['max_len']} words" if "max_len" in decoding else "")
    return ", ".join(f"{key} {value}" for key, value in decoding.items())


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _number(value, digits: int = 1, scientific: bool = False) -> str:
    if not _is_number(value):
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits - 1 if scientific else digits}{'e' if scientific else 'f'}}"


def _is_number(value) -> bool:
    """An int or float but not a bool; NaN counts, so a diverged epoch shows as a gap, not a missing row."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _escape(text: str) -> str:
    """`text` with the characters that Markdown or a table cell would interpret backslash-escaped.

    Underscores stay: inside words (file and metric names) Markdown leaves them alone, and
    escaped they would spoil the page for anyone reading the raw text.
    """
    return re.sub(r"([\\`*\[\]<>|])", r"\\\1", str(text))
