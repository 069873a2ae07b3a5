"""The training curves of a run report: one PNG per figure, one point per epoch of metrics.jsonl."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from captioner.atomic import AtomicFile
from captioner.report.run_folder import is_number

# One curve image per entry: (file stem, title, y label, metrics.jsonl keys).
# "val_*" stands for every validation metric the log holds.
CURVES = (
    ("loss", "Training loss", "loss per word", ("train_loss", "train_cross_entropy")),
    # self-critical training (train.objective=scst): mean CIDEr-D of the sampled captions and of
    # the baseline they are compared with
    ("reward", "Self-critical reward (CIDEr-D of sampled captions)", "CIDEr-D", ("train_reward", "train_baseline")),
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


@dataclass(frozen=True)
class Plot:
    """One curve image: `series` maps a metrics key to its (epochs, values), as plotted."""

    name: str
    title: str
    path: Path
    series: dict[str, tuple[list[int], list[float]]]


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
        points = [(int(r["epoch"]), float(r[key])) for r in records if is_number(r.get(key))]
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
