"""The page of a run report, `index.md`: summary, test scores beside the paper's, curves,
decoding speed, gallery and config, as Markdown whose image links are relative to the page."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from captioner.config import Config
from captioner.report.curves import Plot
from captioner.report.gallery import DecodingSpeed, GalleryItem
from captioner.report.run_folder import CONFIG_FILE, METRICS_FILE, REPORT_DIR, dataset_name, is_number

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
        if is_number(last.get("train_loss")):
            lines.append(f"- Final training loss: {last['train_loss']:.4f}.")
        metric = config.train.val_metric if config else "CIDEr"
        logged = [r for r in records if is_number(r.get(f"val_{metric}"))]
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
        ours = float(ours) * 100 if is_number(ours) else None
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
    if isinstance(scores.get("chair"), dict):
        parts.append(_chair_subsection(scores["chair"], scores.get("object_grounding")))
    return "\n\n".join(parts)


def _chair_subsection(chair: dict, grounding: dict | None) -> str:
    """CHAIR (×100, as the paper prints it) with its counts, then the object grounding figures."""
    rows = [["CHAIRi", _number(chair["CHAIRi"] * 100 if is_number(chair.get("CHAIRi")) else None),
             f"{chair.get('hallucinated_mentions', '?')} of {chair.get('mentions', '?')} object mentions"],
            ["CHAIRs", _number(chair["CHAIRs"] * 100 if is_number(chair.get("CHAIRs")) else None),
             f"{chair.get('hallucinated_captions', '?')} of {chair.get('captions', '?')} captions"]]
    parts = ["### Object hallucination (CHAIR, Rohrbach et al. 2018; lower is better)",
             _table(["figure", "×100", "counts"], rows),
             f"Objects of each image: `{_escape(Path(str(chair.get('instances', '?'))).name)}` and the objects its "
             "reference captions name."]
    if isinstance(grounding, dict):
        figures = [[f"`{key}`", _number(value, 4)] for key, value in grounding.items()]
        parts += ["Attention grounding of the words naming an object in the image (boxes and segmentation masks):",
                  _table(["figure", "value"], figures)]
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
    keys = [k for k in ("train_loss", "train_reward", "captions_per_s", "lr") if any(k in r for r in records)]
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
    if not is_number(value):
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits - 1 if scientific else digits}{'e' if scientific else 'f'}}"


def _escape(text: str) -> str:
    """`text` with the characters that Markdown or a table cell would interpret backslash-escaped.

    Underscores stay: inside words (file and metric names) Markdown leaves them alone, and
    escaped they would spoil the page for anyone reading the raw text.
    """
    return re.sub(r"([\\`*\[\]<>|])", r"\\\1", str(text))
