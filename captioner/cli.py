"""The `captioner` command: train, caption, shapes, evaluate, coco, features, report, demo, export.

Exit codes: 0 success; 1 some inputs failed (each reported); 2 bad usage or configuration;
130 interrupted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path


class UsageError(ValueError):
    """A bad option value or input list, reported in one line."""


def _train(args: argparse.Namespace) -> int:
    from captioner.config import load_config  # noqa: PLC0415 - keep `--help` fast
    from captioner.training import fit  # noqa: PLC0415

    config = load_config(args.config, args.set)
    run_dir = fit(config, resume=args.resume)
    print(f"run folder: {run_dir}")
    return 0


def _caption(args: argparse.Namespace) -> int:
    from captioner.distributed import start_processes  # noqa: PLC0415

    processes, device = start_processes(args.device)
    try:
        return _caption_share(args, processes, device)
    finally:
        processes.close()


def _caption_share(args: argparse.Namespace, processes, device) -> int:
    """Caption this process's share of the inputs. Under torchrun every process captions a
    contiguous share and rank 0 writes them all, in input order, to the one output."""
    import dataclasses  # noqa: PLC0415

    from tqdm import tqdm  # noqa: PLC0415

    from captioner.batch import ResultWriter, expand_inputs, load_image_ids  # noqa: PLC0415
    from captioner.images import load_image  # noqa: PLC0415
    from captioner.inference import CaptionResult, Captioner  # noqa: PLC0415
    from captioner.visualize import save_overlays  # noqa: PLC0415

    options = _decoding_options(args)
    try:
        ids = load_image_ids(args.ids) if args.ids else None
    except ValueError as error:
        raise UsageError(str(error)) from None
    paths, problems = expand_inputs(args.images, args.recursive)
    paths, problems = processes.shard(paths), problems if processes.main else []
    output_format = args.format or ("csv" if str(args.output).endswith(".csv") else "jsonl")
    captioner = Captioner.load(args.checkpoint, device, quantize=args.quantize)
    writer = ResultWriter(args.output, output_format, ids, alternatives=args.top_n > 1) if processes.main else None
    held: list[tuple[CaptionResult, str | None]] = []  # a non-main process's results, for rank 0 to write
    overlay_names: set[str] = set()
    failed = succeeded = 0

    def record(result: CaptionResult, overlay: Path | None) -> None:
        nonlocal failed, succeeded
        problem = writer.write(result, str(overlay) if overlay else None)
        if problem:
            failed += 1
            tqdm.write(f"error: {problem}", file=sys.stderr)
        else:
            succeeded += 1

    progress = tqdm(total=len(paths), unit="img", desc="captioning", disable=args.quiet or not processes.main,
                    file=sys.stderr)
    try:
        unmatched = (CaptionResult(source=item, error=f"{item}: {problem}") for item, problem in problems)
        captioned = captioner.caption_files(paths, options, args.batch_size, args.num_workers)
        for result in itertools.chain(unmatched, captioned):
            overlay = None
            if args.attention_dir and result.ok:
                overlay = _overlay_path(Path(args.attention_dir), result.source, overlay_names)
                save_overlays(load_image(result.source), result.words, result.attention, overlay)
            if writer is None:
                held.append((dataclasses.replace(result, attention=None), str(overlay) if overlay else None))
            else:
                record(result, overlay)
            progress.update(len(held) + succeeded + failed > len(problems))  # the bar counts files; problems come first
    except KeyboardInterrupt:
        if writer is not None:
            writer.close()
        progress.close()
        print(f"interrupted: {succeeded} captioned, {failed} failed, the rest not started; "
              f"{args.output or 'stdout'} holds the records so far", file=sys.stderr)
        return 130
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    progress.close()
    shares = processes.gather(held)
    if writer is None:
        return 0  # rank 0 reports for everyone
    for result, overlay in itertools.chain.from_iterable(shares[1:]):
        record(result, overlay)
    writer.close()
    total = succeeded + failed
    print(f"captioned {succeeded} of {total} inputs, {failed} failed"
          + (f"; wrote {args.output}" if args.output else ""), file=sys.stderr)
    return 1 if failed else 0


def _decoding_options(args: argparse.Namespace):
    """The decoding options of `caption` and `evaluate`; a bad value is a usage error."""
    from captioner.decoding import DecodingOptions  # noqa: PLC0415

    try:
        return DecodingOptions(beam_size=args.beam_size, max_len=args.max_len, min_len=args.min_len,
                               length_penalty=args.length_penalty, top_n=args.top_n)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """Beam search options shared by `caption` and `evaluate`."""
    parser.add_argument("--beam-size", type=int, default=3, help="beam width; 1 is greedy decoding (default 3)")
    parser.add_argument("--max-len", type=int, default=20, help="maximum words per caption (default 20)")
    parser.add_argument("--min-len", type=int, default=1, help="minimum words per caption (default 1)")
    parser.add_argument("--length-penalty", type=float, default=0.0,
                        help="alpha of the ((5+n)/6)^alpha length normalisation; 0 ranks by log-probability "
                             "(default 0)")
    parser.add_argument("--top-n", type=int, default=1, help="also report the next best captions (default 1)")


def _overlay_path(folder: Path, source: str, taken: set[str]) -> Path:
    """A PNG name in `folder` for the overlays of `source`: its file stem, numbered on clashes."""
    stem, number = Path(source).stem, 1
    name = f"{stem}.png"
    while name in taken:
        number += 1
        name = f"{stem}_{number}.png"
    taken.add(name)
    return folder / name


def _shapes(args: argparse.Namespace) -> int:
    from captioner.data.shapes import generate  # noqa: PLC0415

    splits = {}
    for part in args.splits.split(","):
        name, _, share = part.partition("=")
        try:
            splits[name.strip()] = float(share)
        except ValueError:
            print(f"error: --splits {args.splits!r}: expected name=share,... e.g. train=0.8,val=0.1,test=0.1",
                  file=sys.stderr)
            return 2
    summary = generate(args.out, args.num_images, args.seed, splits=splits, image_size=args.image_size,
                       workers=args.workers, progress=not args.quiet)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from captioner.coco_eval import evaluate_captions, format_table, load_annotations, load_results, load_split_file  # noqa: PLC0415
    from captioner.evaluation import write_scores  # noqa: PLC0415

    java = False if args.no_java else None
    if args.results:
        if args.annotations:
            ground_truth = load_annotations(args.annotations)
        elif args.split_file:
            ground_truth = load_split_file(args.split_file, args.split)
        else:
            raise UsageError("--results needs the ground truth: --annotations captions_val2014.json, "
                             "or --split-file dataset_coco.json --split test")
        texts = load_results(args.results, ground_truth)
        report = {"results": str(args.results), "ground_truth": ground_truth.source,
                  **evaluate_captions(ground_truth, texts, java)}
        output = Path(args.output or Path(args.results).with_name(Path(args.results).stem + "_scores.json"))
    else:
        report, output = _decode_and_score(args, java)
    write_scores(report, output)
    print(format_table(report))
    for name, value in report.get("shapes", {}).items():
        print(f"{name:<28} {value:>10.4f}")
    print(f"scores: {output}" + (f"  results: {report['results']}" if "results" in report else ""))
    return 0


def _decode_and_score(args: argparse.Namespace, java: bool | None) -> tuple[dict, Path]:
    """Caption a split with a model, write the results file, and score it."""
    import dataclasses  # noqa: PLC0415

    from captioner.config import DataConfig, load_config  # noqa: PLC0415
    from captioner.evaluation import decode_and_score  # noqa: PLC0415
    from captioner.inference import Captioner  # noqa: PLC0415

    options = _decoding_options(args)
    captioner = Captioner.load(args.checkpoint, args.device)
    if args.data_root:
        data = DataConfig(root=args.data_root, split_file=args.split_file)
    else:
        data = load_config(args.config).data if args.config else captioner.config.data
        if args.split_file:
            data = dataclasses.replace(data, split_file=args.split_file)
    output = Path(args.output or "scores.json")
    report = decode_and_score(captioner, data, args.split, options, output.with_name(output.stem + "_results.json"),
                              java=java, max_images=args.max_images, batch_size=args.batch_size,
                              num_workers=args.num_workers, progress=not args.quiet)
    return report, output


def _coco(args: argparse.Namespace) -> int:
    from captioner.coco_download import check_coco, download_coco, format_check  # noqa: PLC0415

    if args.coco_command == "check":
        report = check_coco(args.root)
        print(format_check(report))
        return 0 if report["complete"] else 1
    if args.coco_command == "download":
        report = download_coco(args.root, mirror=args.mirror, files=args.files, progress=not args.quiet)
        print(format_check(report["check"]))
        return 0
    from captioner.reproduce import reproduce  # noqa: PLC0415

    run_dir = reproduce(args.root, args.config, args.set, beam_size=args.beam_size, mirror=args.mirror,
                        download=not args.no_download, progress=not args.quiet)
    print(f"run folder: {run_dir}  report: {run_dir / 'report' / 'index.md'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from captioner.inference import Captioner  # noqa: PLC0415
    from captioner.report import write_report  # noqa: PLC0415

    captioner = Captioner.load(args.checkpoint, args.device) if args.checkpoint else None
    path = write_report(args.run_dir, scores_path=args.scores, gallery_images=args.images,
                        gallery_size=args.gallery_size, captioner=captioner, device=args.device,
                        beam_size=args.beam_size)
    print(f"report: {path}")
    return 0


def _demo(argv: list[str]) -> int:
    """Run demo/app.py of this source checkout with its own options (`captioner demo --help`)."""
    import importlib.util  # noqa: PLC0415

    path = Path(__file__).resolve().parent.parent / "demo" / "app.py"
    if not path.is_file():
        print(f"error: the demo needs a source checkout of captioner ({path} not found)", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("captioner_demo_app", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module.main(argv)


def _features(args: argparse.Namespace) -> int:
    from captioner import feature_cache  # noqa: PLC0415
    from captioner.config import load_config  # noqa: PLC0415
    from captioner.device import resolve_device  # noqa: PLC0415
    from captioner.model import Encoder  # noqa: PLC0415

    config = load_config(args.config, args.set)
    if config.model.encoder.fine_tune:
        raise UsageError(f"model.encoder.fine_tune is {config.model.encoder.fine_tune}: an encoder that trains "
                         "changes its features at every step, so they cannot be cached; use a frozen encoder "
                         "(--set model.encoder.fine_tune=0) or train from images (data.cache_features=false)")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = resolve_device(args.device)
    encoder = Encoder(config.model.encoder).to(device)  # no vocabulary needed: the decoder is not built
    num_workers = config.data.num_workers if args.num_workers is None else args.num_workers
    out = Path(args.out).resolve()
    try:
        for name, records in _feature_splits(config, args.splits):
            features = feature_cache.open_or_build(
                encoder, config.model.encoder, records, out, name, device, batch_size=args.batch_size,
                num_workers=num_workers, amp=config.train.amp, overwrite=args.overwrite, progress=not args.quiet)
            N, P, D = features.shape
            folder = feature_cache.cache_folder(out, name, config.model.encoder, records)
            print(f"{name}: {folder} ({N} images x {P} cells x {D} features, "
                  f"{feature_cache.human_size(feature_cache.size_estimate(N, P, D))})")
    except KeyboardInterrupt:
        print("interrupted: the images encoded so far are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    print(f"to train on these features, pass the same --config and --set options to train, plus:\n"
          f"  --set data.feature_cache_dir={out} data.cache_features=true")
    return 0


def _feature_splits(config, splits: list[str] | None):
    """(cache name, records) of each split, named and cut as fit() does for its own caches, so
    that training finds them: the config's val split is capped at data.val_max_images."""
    from captioner.data.coco import load_split  # noqa: PLC0415

    if not splits:
        splits = [config.data.train_split, config.data.val_split]
    for split in dict.fromkeys(splits):  # a split named twice is encoded once
        if split == config.data.train_split:
            yield "train", load_split(config.data, split)
        elif split == config.data.val_split:
            yield "val", load_split(config.data, split)[: config.data.val_max_images]
        else:
            yield split, load_split(config.data, split)


def _export(args: argparse.Namespace) -> int:
    from captioner.checkpoint import export_checkpoint  # noqa: PLC0415

    evaluation = json.loads(Path(args.scores).read_text()) if args.scores else None
    path = export_checkpoint(args.checkpoint, args.output, evaluation)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by what the user passed: reported in one line, without a traceback."""
    from captioner.backbones import WeightsUnavailableError  # noqa: PLC0415
    from captioner.checkpoint import CheckpointError  # noqa: PLC0415
    from captioner.coco_download import DownloadError  # noqa: PLC0415
    from captioner.coco_eval import ResultsError  # noqa: PLC0415
    from captioner.config import ConfigError  # noqa: PLC0415
    from captioner.data.coco import DatasetError  # noqa: PLC0415
    from captioner.device import DeviceError  # noqa: PLC0415
    from captioner.feature_cache import FeatureCacheError  # noqa: PLC0415
    from captioner.images import ImageLoadError  # noqa: PLC0415
    from captioner.report import ReportError  # noqa: PLC0415

    return (ConfigError, CheckpointError, DatasetError, DownloadError, DeviceError, FeatureCacheError, ImageLoadError,
            ReportError, ResultsError, UsageError, WeightsUnavailableError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captioner", description="Show, Attend and Tell image captioning.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a model from a config",
        description="Train with teacher forcing; checkpoints, metrics.jsonl and config.yaml go to output_dir.",
    )
    train.add_argument("--config", required=True, help="recipe YAML, e.g. configs/shapes.yaml")
    train.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="override config keys, e.g. --set train.epochs=3 data.root=/data/coco")
    train.add_argument("--resume", help="checkpoint_last.pt of an interrupted run to continue exactly")
    train.set_defaults(run=_train)

    caption = commands.add_parser(
        "caption", help="caption image files, folders and lists in batches",
        description="Caption images with batched beam search. Inputs are files, folders (--recursive for "
                    "subfolders), glob patterns ('photos/*.jpg') and @list.txt files (one path per line). "
                    "Unreadable inputs become records with an 'error' field and the run goes on. "
                    "Exit code: 0 all captioned, 1 some inputs failed, 2 bad usage, 130 interrupted "
                    "(the output then holds the records finished so far).",
    )
    caption.add_argument("images", nargs="+", help="image files, folders, glob patterns or @list.txt")
    caption.add_argument("--checkpoint", help="a checkpoint written by train or export (default: the bundled shapes model)")
    _add_decoding_arguments(caption)
    caption.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    caption.add_argument("--num-workers", type=int, default=2, help="image loading processes (default 2)")
    caption.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    caption.add_argument("--quantize", action="store_true",
                         help="int8 decoder weights on a CPU: about 4x faster decoding of a COCO-size model; "
                              "captions can change (bundled model: 83%% of test captions unchanged)")
    caption.add_argument("--format", choices=("jsonl", "csv", "coco"),
                         help="jsonl: one record per line (default); csv; coco: [{image_id, caption}] for "
                              "`captioner evaluate` (ids from COCO file names or --ids)")
    caption.add_argument("--output", help="output file, written atomically (default: stdout)")
    caption.add_argument("--ids", help="COCO annotations JSON or {file name: id} JSON giving image ids for --format coco")
    caption.add_argument("--attention-dir", help="save a grid of per-word attention overlays per image here")
    caption.add_argument("--recursive", action="store_true", help="include images in subfolders of folder inputs")
    caption.add_argument("--quiet", action="store_true", help="no progress bar")
    caption.set_defaults(run=_caption)

    shapes = commands.add_parser(
        "shapes", help="generate the synthetic shapes world",
        description="Write a shapes dataset in the official COCO layout (images, annotations/captions_*.json, "
                    "annotations/shapes_objects.json) plus a Karpathy-style dataset_shapes.json. "
                    "The same seed gives byte-identical files.",
    )
    shapes.add_argument("--out", required=True, help="output folder")
    shapes.add_argument("--num-images", type=int, default=10_000, help="number of images (default 10000)")
    shapes.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    shapes.add_argument("--splits", default="train=0.8,val=0.1,test=0.1",
                        help="shares of each split (default train=0.8,val=0.1,test=0.1; a test-only set: test=1)")
    shapes.add_argument("--image-size", type=int, default=224, help="image side in pixels (default 224)")
    shapes.add_argument("--workers", type=int, default=2, help="processes drawing images (default 2)")
    shapes.add_argument("--quiet", action="store_true", help="no progress bar")
    shapes.set_defaults(run=_shapes)

    evaluate = commands.add_parser(
        "evaluate", help="score captions with the official COCO metrics",
        description="Score captions with the COCO caption evaluation (PTB tokenizer, BLEU-1..4, METEOR, "
                    "ROUGE-L, CIDEr-D; SPICE only when its CoreNLP jars are installed). Either score a results "
                    "file (--results with --annotations or --split-file), or caption a split with a model and "
                    "score it (--checkpoint, data from --data-root/--split-file, --config, or the checkpoint's "
                    "own config). Without Java, BLEU/ROUGE-L/CIDEr are computed with a Python tokenizer and "
                    "marked approximate. On a shapes dataset the object recall, hallucination rate and "
                    "attention grounding are reported too.",
    )
    evaluate.add_argument("--results", help="COCO results JSON [{image_id, caption}] to score")
    evaluate.add_argument("--annotations", help="COCO captions JSON, e.g. annotations/captions_val2014.json")
    evaluate.add_argument("--checkpoint", help="model to caption with (default: the bundled shapes model)")
    evaluate.add_argument("--config", help="recipe YAML whose data section names the dataset")
    evaluate.add_argument("--data-root", help="COCO-layout folder (annotations/, train2014/, val2014/)")
    evaluate.add_argument("--split-file", help="Karpathy split JSON, e.g. dataset_coco.json")
    evaluate.add_argument("--split", default="test", help="split to score (default test)")
    evaluate.add_argument("--max-images", type=int, help="caption only the first N images of the split")
    _add_decoding_arguments(evaluate)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--num-workers", type=int, default=2, help="image loading processes (default 2)")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    evaluate.add_argument("--no-java", action="store_true",
                          help="use the Python tokenizer and skip METEOR even when Java is installed")
    evaluate.add_argument("--output", help="scores JSON (default: scores.json, or RESULTS_scores.json with "
                                           "--results); decoded captions go beside it as *_results.json")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=_evaluate)

    coco = commands.add_parser(
        "coco", help="download COCO 2014 and reproduce the paper",
        description="COCO 2014 for users who are online: download (resumable, checksummed), check what is "
                    "present, or reproduce: download if missing → train the recipe → evaluate the Karpathy test "
                    "split with beam search → write the run report. Every stage skips what is already done.",
    )
    coco_commands = coco.add_subparsers(dest="coco_command", required=True)
    coco_download = coco_commands.add_parser("download", help="fetch and unpack COCO 2014 + Karpathy's split file")
    coco_check = coco_commands.add_parser("check", help="say what COCO data a folder holds (exit 1 if incomplete)")
    coco_reproduce = coco_commands.add_parser("reproduce", help="data → train → evaluate → report, resumable")
    for sub in (coco_download, coco_check, coco_reproduce):
        sub.add_argument("--root", required=True, help="COCO folder (gets annotations/, train2014/, val2014/, "
                                                       "dataset_coco.json; downloads/ keeps the archives)")
    for sub in (coco_download, coco_reproduce):
        sub.add_argument("--mirror", help="base URL or local folder holding the archives, instead of the "
                                          "official hosts")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
    coco_download.add_argument("--files", nargs="+", help="only these archives (e.g. annotations_trainval2014.zip)")
    coco_reproduce.add_argument("--config", default="configs/coco_resnet101.yaml",
                                help="recipe to train (default configs/coco_resnet101.yaml)")
    coco_reproduce.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    coco_reproduce.add_argument("--beam-size", type=int, default=3, help="beam width for the test scores (default 3)")
    coco_reproduce.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    coco.set_defaults(run=_coco)

    report = commands.add_parser(
        "report", help="write a Markdown report of a training run",
        description="Write RUN_DIR/report/index.md: the resolved config, training and validation curves (PNG), "
                    "the test scores beside the published soft-attention figures on COCO (Xu et al. 2015), "
                    "the decoding speed, and a gallery of captions with per-word attention overlays. "
                    "Uses the newest *scores*.json in RUN_DIR unless --scores is given.",
    )
    report.add_argument("run_dir", help="run folder written by train (config.yaml, metrics.jsonl, checkpoints)")
    report.add_argument("--scores", help="scores JSON from `captioner evaluate` (default: newest *scores*.json in RUN_DIR)")
    report.add_argument("--images", nargs="+", help="gallery images (default: the scored test images, "
                                                    "else the first validation images)")
    report.add_argument("--gallery-size", type=int, default=6, help="images in the gallery; 0 skips it (default 6)")
    report.add_argument("--checkpoint", help="model for the gallery (default: RUN_DIR/checkpoint_best.pt, else _last)")
    report.add_argument("--beam-size", type=int, help="beam width for the gallery (default: the scores' beam size, else 3)")
    report.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    report.set_defaults(run=_report)

    features = commands.add_parser(
        "features", help="encode a dataset's images once into a feature cache for training",
        description="Encode every image of the given splits with the config's frozen encoder and store the "
                    "features as float16 in DIR/<split>_<key>/: features.f16 (raw (N, P, D) float16, "
                    "memory-mapped by training, never loaded whole) and index.json (encoder config, image "
                    "list, shape, images completed). The key is a hash of the encoder config and the image "
                    "list, so training with the same config finds the cache: pass --set "
                    "data.feature_cache_dir=DIR data.cache_features=true to train. The disk size is printed "
                    "before encoding starts, and the command stops at once if the disk is too small. An "
                    "interrupted run resumes where it stopped when run again; a cache of another encoder "
                    "config or image list is never mixed in (--overwrite replaces it).",
    )
    features.add_argument("--config", required=True, help="recipe YAML, e.g. configs/coco_resnet101.yaml")
    features.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                          help="config overrides, as for train (the model.encoder keys decide the features)")
    features.add_argument("--out", required=True, metavar="DIR", help="cache root folder")
    features.add_argument("--splits", nargs="+", metavar="SPLIT",
                          help="splits to encode (default: the config's data.train_split and data.val_split; "
                               "the val split is capped at data.val_max_images, as in training)")
    features.add_argument("--batch-size", type=int, default=64, help="images per encoder batch (default 64)")
    features.add_argument("--num-workers", type=int,
                          help="image loading processes (default: the config's data.num_workers)")
    features.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    features.add_argument("--overwrite", action="store_true",
                          help="delete existing caches of these splits and encode again")
    features.add_argument("--quiet", action="store_true", help="no progress bar")
    features.set_defaults(run=_features)

    commands.add_parser("demo", help="web demo: caption uploads, show per-word attention (captioner demo --help)",
                        add_help=False)

    export = commands.add_parser(
        "export", help="strip a training checkpoint down to what captioning needs",
        description="Copy a checkpoint without optimizer/scheduler/RNG state, optionally attaching the "
                    "scores JSON written by `captioner evaluate` so that the model carries its measured figures.",
    )
    export.add_argument("checkpoint", help="checkpoint written by train")
    export.add_argument("output", help="where to write the captioning-only checkpoint")
    export.add_argument("--scores", help="scores JSON from `captioner evaluate` to attach")
    export.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:  # the demo parses its own options
        return _demo(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as error:
        if not isinstance(error, _user_errors()):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
