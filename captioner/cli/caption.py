"""`captioner caption`: caption image files, folders, glob patterns and lists in batches."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

from captioner.cli.decoding_options import add_decoding_arguments, decoding_options
from captioner.cli.errors import UsageError

UNFINISHED_NOTE = "stopped at --max-len without <end>; raise --max-len"


def add_caption_parser(commands) -> None:
    parser = commands.add_parser(
        "caption", help="caption image files, folders and lists in batches",
        description="Caption images with batched beam search. Inputs are files, folders (--recursive for "
                    "subfolders), glob patterns ('photos/*.jpg') and @list.txt files (one path per line). "
                    "Unreadable inputs become records with an 'error' field and the run goes on. "
                    "A caption that reached --max-len without <end> is kept but marked unfinished "
                    "('finished': false in JSONL, the finished column in CSV) and counted in the closing line. "
                    "Exit code: 0 all captioned, 1 some inputs failed, 2 bad usage, 130 interrupted "
                    "(the output then holds the records finished so far).",
    )
    parser.add_argument("images", nargs="+", help="image files, folders, glob patterns or @list.txt")
    parser.add_argument("--checkpoint",
                        help="a checkpoint written by train or export (default: the bundled shapes model)")
    add_decoding_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    parser.add_argument("--num-workers", type=int, default=2, help="image loading processes (default 2)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--quantize", action="store_true",
                        help="int8 decoder weights on a CPU: about 4x faster decoding of a COCO-size model; "
                             "captions can change (bundled model: 83%% of test captions unchanged)")
    parser.add_argument("--format", choices=("jsonl", "csv", "coco"),
                        help="jsonl: one record per line (default); csv (default for an --output ending in "
                             ".csv); coco: [{image_id, caption}] for `captioner evaluate` (ids from COCO file "
                             "names or --ids)")
    parser.add_argument("--output", help="output file, written atomically (default: stdout)")
    parser.add_argument("--ids",
                        help="COCO annotations JSON or {file name: id} JSON giving image ids for --format coco")
    parser.add_argument("--attention-dir", help="save a grid of per-word attention overlays per image here")
    parser.add_argument("--recursive", action="store_true", help="include images in subfolders of folder inputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=caption)


@dataclasses.dataclass
class Tally:
    """What became of the inputs: the closing line and the exit code are made from it."""

    captioned: int = 0
    unfinished: int = 0  # captioned, but the caption ran into --max-len before <end>
    failed: int = 0

    def add(self, result, problem: str | None) -> None:
        """Count one result; `problem` is why the output could not take it (None: written)."""
        if problem:
            self.failed += 1
            return
        self.captioned += 1
        self.unfinished += not result.finished

    def summary(self, output: str | None) -> str:
        unfinished = f" ({self.unfinished:,} unfinished: {UNFINISHED_NOTE})" if self.unfinished else ""
        return (f"captioned {self.captioned:,} of {self.captioned + self.failed:,} inputs{unfinished}, "
                f"{self.failed:,} failed" + (f"; wrote {output}" if output else ""))


class _Outputs:
    """Where each result goes. Rank 0 (the only process without torchrun) writes it at once;
    another process holds it, without its attention maps, for rank 0 to write after its own."""

    def __init__(self, writer, attention_dir: str | None):
        self.writer, self.attention_dir = writer, Path(attention_dir) if attention_dir else None
        self.tally = Tally()
        self.held: list[tuple] = []
        self._overlay_names: set[str] = set()

    def take(self, result) -> None:
        overlay = self._save_overlay(result)
        if self.writer is None:
            self.held.append((dataclasses.replace(result, attention=None), overlay))
        else:
            self.write(result, overlay)

    def write(self, result, overlay: str | None) -> None:
        from tqdm import tqdm  # noqa: PLC0415

        problem = self.writer.write(result, overlay)
        if problem:
            tqdm.write(f"error: {problem}", file=sys.stderr)
        self.tally.add(result, problem)

    def _save_overlay(self, result) -> str | None:
        if self.attention_dir is None or not result.ok:
            return None
        from captioner.images import load_image  # noqa: PLC0415
        from captioner.visualize import save_overlays  # noqa: PLC0415

        path = overlay_path(self.attention_dir, result.source, self._overlay_names)
        save_overlays(load_image(result.source), result.words, result.attention, path)
        return str(path)


def overlay_path(folder: Path, source: str, taken: set[str]) -> Path:
    """A PNG name in `folder` for the overlays of `source`: its file stem, numbered on clashes."""
    stem, number = Path(source).stem, 1
    name = f"{stem}.png"
    while name in taken:
        number += 1
        name = f"{stem}_{number}.png"
    taken.add(name)
    return folder / name


def caption(args: argparse.Namespace) -> int:
    from captioner.distributed import start_processes  # noqa: PLC0415 - imports torch: not for `--help`

    processes, device = start_processes(args.device)
    try:
        return _caption_share(args, processes, device)
    finally:
        processes.close()


def _caption_share(args: argparse.Namespace, processes, device) -> int:
    """Caption this process's share of the inputs. Under torchrun every process captions a
    contiguous share and rank 0 writes them all, in input order, to the one output."""
    from tqdm import tqdm  # noqa: PLC0415

    from captioner.batch import ResultWriter, expand_inputs  # noqa: PLC0415
    from captioner.inference import CaptionResult, Captioner  # noqa: PLC0415

    options = decoding_options(args)
    ids = _image_ids(args.ids)
    paths, problems = expand_inputs(args.images, args.recursive)
    paths, problems = processes.shard(paths), problems if processes.main else []
    output_format = args.format or ("csv" if str(args.output).endswith(".csv") else "jsonl")
    captioner = Captioner.load(args.checkpoint, device, quantize=args.quantize)
    writer = ResultWriter(args.output, output_format, ids, alternatives=args.top_n > 1) if processes.main else None
    outputs = _Outputs(writer, args.attention_dir)
    progress = tqdm(total=len(paths), unit="img", desc="captioning", disable=args.quiet or not processes.main,
                    file=sys.stderr)
    unmatched = (CaptionResult(source=item, error=f"{item}: {problem}") for item, problem in problems)
    captioned = captioner.caption_files(paths, options, args.batch_size, args.num_workers)
    try:
        for index, result in enumerate(itertools.chain(unmatched, captioned)):
            outputs.take(result)
            progress.update(index >= len(problems))  # the bar counts files; the unmatched inputs come first
    except KeyboardInterrupt:
        if writer is not None:
            writer.close()
        progress.close()
        tally = outputs.tally
        print(f"interrupted: {tally.captioned} captioned, {tally.failed} failed, the rest not started; "
              f"{args.output or 'stdout'} holds the records so far", file=sys.stderr)
        return 130
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    progress.close()
    shares = processes.gather(outputs.held)
    if writer is None:
        return 0  # rank 0 reports for everyone
    for result, overlay in itertools.chain.from_iterable(shares[1:]):
        outputs.write(result, overlay)
    writer.close()
    print(outputs.tally.summary(args.output), file=sys.stderr)
    return 1 if outputs.tally.failed else 0


def _image_ids(path: str | None) -> dict[str, int] | None:
    """The --ids file as {file name: COCO id}; None without one."""
    from captioner.batch import load_image_ids  # noqa: PLC0415

    try:
        return load_image_ids(path) if path else None
    except ValueError as error:
        raise UsageError(str(error)) from None
