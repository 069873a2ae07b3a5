"""Reproduce Show, Attend and Tell on COCO with one command: data → train → evaluate → report.

Each stage checks what is already on disk and skips or resumes, so re-running after an
interruption (or after a finished run) only does what is left:

- data: skipped when the caption files, the Karpathy split file and every image it names are
  present; otherwise `coco_download.download_coco` fetches (and resumes) what is missing;
- train: skipped when the last checkpoint says training ended (all epochs, or early stopping);
  resumed exactly from `checkpoint_last.pt` when one exists. Encoder features are cached by
  training itself when the recipe sets `data.cache_features`;
- evaluate: the Karpathy test split with the best checkpoint and beam search, scored against
  annotations/captions_val2014.json as COCOEvalCap scores it (the split file's sentences only
  when that file does not cover the split; the scores say which), skipped when its scores
  file exists;
- report: rewritten whenever it is older than the scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from captioner.checkpoint import load_checkpoint
from captioner.coco_download import SPLIT_FILE, check_coco, download_coco, format_check
from captioner.config import Config, load_config
from captioner.data.coco import DatasetError
from captioner.decoding import DecodingOptions
from captioner.evaluation import decode_and_score, write_scores
from captioner.inference import Captioner
from captioner.report import write_report
from captioner.training import fit

SCORES_FILE = "test_scores.json"
RESULTS_FILE = "test_results.json"


def data_ready(check: dict) -> bool:
    """Whether `check_coco`'s report shows data a run can use: caption files, the split file,
    and every image the split file names (a subset of COCO is fine for a smoke run)."""
    split = check["split_file"]
    return all(check["captions"].values()) and split["present"] and not split["error"] and not split["missing_images"]


def training_finished(config: Config, run_dir: Path) -> bool:
    """Whether `run_dir/checkpoint_last.pt` marks the end of training rather than a pause."""
    path = run_dir / "checkpoint_last.pt"
    if not path.is_file():
        return False
    state = load_checkpoint(path)["training"]
    stopped_early = bool(config.train.early_stopping) and (
        state["epochs_without_improvement"] >= config.train.early_stopping)
    return (state["epoch"] >= config.train.epochs and state["batch_in_epoch"] == 0) or stopped_early


def reproduce(
    root: str | Path,
    config_path: str | Path,
    overrides: Sequence[str] = (),
    beam_size: int = 3,
    mirror: str | None = None,
    download: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Run every stage that is not done yet for the recipe `config_path` on COCO at `root`
    (`overrides` as for `train --set`); returns the run folder holding scores and report."""
    root = Path(root).expanduser()

    # data
    check = check_coco(root)
    if data_ready(check):
        log("data: present, not downloading")
    elif download:
        log("data: fetching what is missing")
        check = download_coco(root, mirror=mirror, progress=progress)["check"]
    else:
        raise DatasetError(f"COCO data incomplete in {root} and downloading is off:\n{format_check(check)}")
    log(format_check(check))

    # train
    config = load_config(config_path, [f"data.root={root}", f"data.split_file={root / SPLIT_FILE}", *overrides])
    run_dir = Path(config.output_dir)
    if training_finished(config, run_dir):
        log(f"train: finished earlier in {run_dir}")
    else:
        resume = run_dir / "checkpoint_last.pt"
        log(f"train: {'resuming ' + str(resume) if resume.is_file() else 'starting'} ({config_path})")
        fit(config, resume=resume if resume.is_file() else None)
        if not training_finished(config, run_dir):
            raise KeyboardInterrupt  # training was stopped (Ctrl-C); the next run resumes it

    # evaluate
    scores = run_dir / SCORES_FILE
    if scores.is_file():
        log(f"evaluate: scored earlier ({scores})")
    else:
        log(f"evaluate: Karpathy test split, beam {beam_size}")
        captioner = Captioner.load(run_dir / "checkpoint_best.pt", config.train.device)
        # CHAIR needs the instances of the test images (val2014), which only a full annotations
        # download holds: scored when the file is there
        instances = Path(root) / "annotations" / "instances_val2014.json"
        report = decode_and_score(captioner, config.data, "test", DecodingOptions(beam_size=beam_size),
                                  run_dir / RESULTS_FILE, num_workers=config.data.num_workers, progress=progress,
                                  instances=instances if instances.is_file() else None)
        write_scores(report, scores)

    # report
    index = run_dir / "report" / "index.md"
    if index.is_file() and index.stat().st_mtime >= scores.stat().st_mtime:
        log(f"report: up to date ({index})")
    else:
        log(f"report: {write_report(run_dir, scores_path=scores, device=config.train.device)}")
    return run_dir
