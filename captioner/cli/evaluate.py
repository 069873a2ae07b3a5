"""`captioner evaluate` (score captions with the COCO metrics) and `captioner report` (a run's
Markdown report)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from captioner.cli.decoding_options import add_decoding_arguments, decoding_options
from captioner.cli.errors import UsageError

# Where the shapes world goes when a user makes it as docs/shapes-world.md says.
SHAPES_ROOT = "data/shapes"


def add_evaluate_parser(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="score captions with the official COCO metrics",
        description="Score captions with the COCO caption evaluation (PTB tokenizer, BLEU-1..4, METEOR, "
                    "ROUGE-L, CIDEr-D; SPICE only when its CoreNLP jars are installed). Either score a results "
                    "file (--results with --annotations or --split-file), or caption a split with a model and "
                    "score it (--checkpoint, data from --data-root/--split-file, --config, or the checkpoint's "
                    "own config). Without Java, BLEU/ROUGE-L/CIDEr are computed with a Python tokenizer and "
                    "marked approximate. With --split-file, captions are scored against the official captions "
                    "file of the split's images (annotations/captions_val2014.json under --data-root or beside "
                    "the split file), as COCOEvalCap does; the split file's own sentences only when no such file "
                    "covers the split. The scores JSON says which references were used. On a shapes dataset the "
                    "object recall, hallucination rate and attention grounding are reported too. With "
                    "--instances, CHAIR (object hallucination, Rohrbach et al. 2018) is reported.",
    )
    parser.add_argument("--results", help="COCO results JSON [{image_id, caption}] to score")
    parser.add_argument("--annotations", help="COCO captions JSON, e.g. annotations/captions_val2014.json")
    parser.add_argument("--checkpoint", help="model to caption with (default: the bundled shapes model)")
    parser.add_argument("--config", help="recipe YAML whose data section names the dataset")
    parser.add_argument("--data-root", help="COCO-layout folder (annotations/, train2014/, val2014/)")
    parser.add_argument("--split-file", help="Karpathy split JSON, e.g. dataset_coco.json")
    parser.add_argument("--split", default="test", help="split to score (default test)")
    parser.add_argument("--max-images", type=int, help="caption only the first N images of the split")
    parser.add_argument("--instances",
                        help="COCO instances JSON (e.g. annotations/instances_val2014.json): adds CHAIR, the "
                             "object hallucination rates CHAIRi and CHAIRs, to the scores, and, when captioning "
                             "a split, the attention grounding of object words in their boxes and masks")
    add_decoding_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images per batch when captioning the split (default 64)")
    parser.add_argument("--num-workers", type=int, default=2, help="image loading processes (default 2)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--no-java", action="store_true",
                        help="use the Python tokenizer and skip METEOR even when Java is installed")
    parser.add_argument("--output",
                        help="scores JSON. Default: CHECKPOINT_SPLIT_scores.json beside the checkpoint (e.g. "
                             "runs/x/checkpoint_best_test_scores.json, where `captioner report runs/x` finds "
                             "it); for the bundled model shapes_SPLIT_scores.json in the current folder; with "
                             "--results, RESULTS_scores.json beside the results. The decoded captions go "
                             "beside the scores as *_results.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=evaluate)


def evaluate(args: argparse.Namespace) -> int:
    from captioner.coco_eval import format_table  # noqa: PLC0415 - heavy imports: not for `--help`
    from captioner.evaluation import write_scores  # noqa: PLC0415

    if args.instances and not Path(args.instances).is_file():
        # Checked before captioning a split, which may take long, fails at the end.
        raise UsageError(f"--instances: COCO instances file not found: {args.instances}")
    java = False if args.no_java else None
    report, output = _score_results(args, java) if args.results else _decode_and_score(args, java)
    write_scores(report, output)
    print(format_table(report))
    for name, value in report.get("shapes", {}).items():
        print(f"{name:<28} {value:>10.4f}")
    if "chair" in report:
        chair = report["chair"]
        print(f"{'CHAIRi':<28} {chair['CHAIRi']:>10.4f}  ({chair['hallucinated_mentions']} of {chair['mentions']} "
              f"object mentions hallucinated)")
        print(f"{'CHAIRs':<28} {chair['CHAIRs']:>10.4f}  ({chair['hallucinated_captions']} of {chair['captions']} "
              f"captions)")
    for name, value in report.get("object_grounding", {}).items():
        print(f"{'object_' + name:<28} {value:>10.4f}")
    print(f"scores: {output}" + (f"  results: {report['results']}" if "results" in report else ""))
    return 0


def _score_results(args: argparse.Namespace, java: bool | None) -> tuple[dict, Path]:
    """Score a results file against the ground truth named by --annotations or --split-file."""
    from captioner.coco_eval import evaluate_captions, load_annotations, load_results, load_split_file  # noqa: PLC0415

    if args.annotations:
        ground_truth = load_annotations(args.annotations)
    elif args.split_file:
        ground_truth = load_split_file(args.split_file, args.split, args.data_root)
    else:
        raise UsageError("--results needs the ground truth: --annotations captions_val2014.json, "
                         "or --split-file dataset_coco.json --split test")
    texts = load_results(args.results, ground_truth)
    report = {"results": str(args.results), **evaluate_captions(ground_truth, texts, java)}
    if args.instances:
        from captioner.evaluation import chair_scores  # noqa: PLC0415

        report["chair"] = chair_scores(texts, ground_truth, args.instances)
    results = Path(args.results)
    return report, Path(args.output or results.with_name(results.stem + "_scores.json"))


def _decode_and_score(args: argparse.Namespace, java: bool | None) -> tuple[dict, Path]:
    """Caption a split with a model, write the results file, and score it."""
    from captioner.evaluation import decode_and_score  # noqa: PLC0415
    from captioner.inference import Captioner  # noqa: PLC0415

    options = decoding_options(args)
    captioner = Captioner.load(args.checkpoint, args.device)
    data = _data_config(args, captioner)
    output = Path(args.output or default_scores_path(args.checkpoint, args.split))
    report = decode_and_score(captioner, data, args.split, options, output.with_name(output.stem + "_results.json"),
                              java=java, max_images=args.max_images, batch_size=args.batch_size,
                              num_workers=args.num_workers, progress=not args.quiet, instances=args.instances)
    return report, output


def _data_config(args: argparse.Namespace, captioner):
    """The dataset to caption: from --data-root/--split-file, else --config, else the data the
    checkpoint was trained on, which must then be on this machine."""
    from captioner.config import DataConfig, load_config  # noqa: PLC0415

    if args.data_root:
        return DataConfig(root=args.data_root, split_file=args.split_file)
    data = load_config(args.config).data if args.config else captioner.config.data
    if args.split_file:
        return dataclasses.replace(data, split_file=args.split_file)
    if not args.config:
        _require_checkpoint_data(data)
    return data


def _require_checkpoint_data(data) -> None:
    """Without data options the checkpoint's own dataset is used; when it is not on this machine
    (the bundled model's config names the folder it was trained in, elsewhere), a missing-file
    error would not tell the user what to pass, so say it."""
    source = data.split_file or data.root
    if source and Path(source).exists():
        return
    raise UsageError(
        f"captioner evaluate needs data: --data-root DIR --split-file FILE (or --config RECIPE; or "
        f"--results FILE with --annotations FILE to score captions made elsewhere). The checkpoint's own "
        f"data ({source or 'none named'}) is not on this machine. For the shapes world, make it first: "
        f"captioner shapes --out {SHAPES_ROOT}, then captioner evaluate --data-root {SHAPES_ROOT} "
        f"--split-file {SHAPES_ROOT}/dataset_shapes.json"
    )


def default_scores_path(checkpoint: str | None, split: str) -> Path:
    """CHECKPOINT_SPLIT_scores.json beside the checkpoint, where `captioner report` looks for
    scores; the bundled model lives inside the package, so its scores go to the current folder."""
    if checkpoint is None:
        from captioner.checkpoint import BUNDLED_CHECKPOINT  # noqa: PLC0415

        return Path(f"{BUNDLED_CHECKPOINT.stem}_{split}_scores.json")
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}_{split}_scores.json")


def add_report_parser(commands) -> None:
    parser = commands.add_parser(
        "report", help="write a Markdown report of a training run",
        description="Write RUN_DIR/report/index.md: the resolved config, training and validation curves (PNG), "
                    "the test scores beside the published soft-attention figures on COCO (Xu et al. 2015), "
                    "the decoding speed, and a gallery of captions with per-word attention overlays. "
                    "Uses the newest *scores*.json in RUN_DIR unless --scores is given.",
    )
    parser.add_argument("run_dir", help="run folder written by train (config.yaml, metrics.jsonl, checkpoints)")
    parser.add_argument("--scores",
                        help="scores JSON from `captioner evaluate` (default: newest *scores*.json in RUN_DIR)")
    parser.add_argument("--images", nargs="+", help="gallery images (default: the scored test images, "
                                                    "else the first validation images)")
    parser.add_argument("--gallery-size", type=int, default=6, help="images in the gallery; 0 skips it (default 6)")
    parser.add_argument("--checkpoint",
                        help="model for the gallery (default: RUN_DIR/checkpoint_best.pt, else _last)")
    parser.add_argument("--beam-size", type=int,
                        help="beam width for the gallery (default: the scores' beam size, else 3)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.set_defaults(run=report)


def report(args: argparse.Namespace) -> int:
    from captioner.inference import Captioner  # noqa: PLC0415 - imports torch: not for `--help`
    from captioner.report import write_report  # noqa: PLC0415

    captioner = Captioner.load(args.checkpoint, args.device) if args.checkpoint else None
    path = write_report(args.run_dir, scores_path=args.scores, gallery_images=args.images,
                        gallery_size=args.gallery_size, captioner=captioner, device=args.device,
                        beam_size=args.beam_size)
    print(f"report: {path}")
    return 0
