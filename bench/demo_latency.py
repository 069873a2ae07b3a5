"""Demo latency: how long the web demo's prediction function takes to answer one upload.

Times `demo/app.predict` (load the file, caption with beam search, draw one overlay per word)
on a bundled example, with the torch thread count the demo itself uses. The baseline, measured
in the same run on the same image, is the model alone (`Captioner.caption` on the decoded
image), so the difference is what the demo adds. A second figure uses a 12-megapixel JPEG
(a phone photo's size), where loading and downscaling dominate. A third one is what a visitor
waits for: the same upload through a local server and `gradio_client` (file upload, queue and
the encoding of the output images included, their download not).

    python bench/demo_latency.py                    # bundled model, examples/shapes_5.jpg, beam 3
    python bench/demo_latency.py --runs 50 --image photo.jpg --checkpoint runs/coco/checkpoint_best.pt
    python bench/demo_latency.py --quick            # two runs, no large image, no server: for CI

Prints one JSON object (the server's own log lines go to stderr); without --quick it is also
saved as bench/results/demo_latency_<device>_<date>.json. The budget is a median under 300 ms
on 2 CPU cores at beam 3.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "demo"))
import app  # noqa: E402 - the demo is a script folder, not a package
import measure  # noqa: E402 - bench/ is on sys.path when run as a script

from captioner.images import load_image  # noqa: E402
from captioner.inference import Captioner  # noqa: E402

LARGE_SIZE = (4032, 3024)


def timings_ms(call: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    """Wall-clock milliseconds of `runs` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def large_jpeg(source: Path, folder: Path) -> Path:
    """`source` enlarged to a 12-megapixel JPEG in `folder`."""
    path = folder / "large.jpg"
    load_image(source).resize(LARGE_SIZE).save(path, quality=90)
    return path


def served_timings_ms(captioner: Captioner, image: Path, args: argparse.Namespace) -> list[float]:
    """Milliseconds per `caption` call through gradio_client against the demo on a free local port."""
    from gradio_client import Client, handle_file  # noqa: PLC0415 - only this figure needs them

    demo = app.build_demo(captioner)
    # gradio prints its own messages on stdout, which must hold only the JSON report
    with contextlib.redirect_stdout(sys.stderr):
        return _served_timings_ms(demo, image, args, Client, handle_file)


def _served_timings_ms(demo, image: Path, args: argparse.Namespace, Client, handle_file) -> list[float]:
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **app.launch_options())
    try:
        # A browser fetches output images as it shows them; downloading all of them here would
        # time the client's disk, not the demo.
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        return timings_ms(lambda: client.predict(handle_file(str(image)), args.beam_size, app.DEFAULT_MAX_LEN,
                                                 args.top_n, api_name="/caption"), args.runs)
    finally:
        demo.close()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint to serve (default: the bundled shapes model)")
    parser.add_argument("--image", default=str(app.EXAMPLES_DIR / "shapes_5.jpg"), help="upload to time")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per figure (default 20)")
    parser.add_argument("--beam-size", type=int, default=app.DEFAULT_BEAM_SIZE, help="beam width")
    parser.add_argument("--top-n", type=int, default=app.DEFAULT_TOP_N, help="captions shown per upload")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--no-large", action="store_true", help="skip the 12-megapixel figure")
    parser.add_argument("--no-server", action="store_true", help="skip the end-to-end figure through a local server")
    measure.add_common_arguments(parser, "two runs, no large image, no server: checks the script runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.quick:
        args.runs, args.no_large, args.no_server = 2, True, True
    torch.set_num_threads(args.threads or app.default_threads())
    captioner = Captioner.load(args.checkpoint, args.device)
    image = Path(args.image).resolve()
    report = measure.machine(captioner.device)  # before the run: its load average is other work's

    def demo_call(path: Path) -> Callable[[], object]:
        return lambda: app.predict(captioner, str(path), args.beam_size, app.DEFAULT_MAX_LEN, args.top_n)

    warmup = 1 if args.quick else 3
    decoded = load_image(image)
    model_only = timings_ms(lambda: captioner.caption(decoded, beam_size=args.beam_size, top_n=args.top_n),
                            args.runs, warmup)
    demo = timings_ms(demo_call(image), args.runs, warmup)
    prediction = app.predict(captioner, str(image), args.beam_size, app.DEFAULT_MAX_LEN, args.top_n)
    report |= {
        "benchmark": "demo_latency",
        "quick": args.quick,
        "median_ms": round(statistics.median(demo), 1),
        "p90_ms": round(percentile(demo, 0.9), 1),
        "runs": args.runs,
        "beam_size": args.beam_size,
        "checkpoint": args.checkpoint or "bundled",
        "image": str(image.relative_to(REPO)) if image.is_relative_to(REPO) else image.name,
        "image_size": list(decoded.size),
        "caption": prediction.text,
        "words": len(prediction.words),
        "baseline_model_only_median_ms": round(statistics.median(model_only), 1),
    }
    if not args.no_large:
        with tempfile.TemporaryDirectory() as folder:
            large = timings_ms(demo_call(large_jpeg(image, Path(folder))), args.runs, warmup)
        report["large_12mp_median_ms"] = round(statistics.median(large), 1)
        report["large_12mp_p90_ms"] = round(percentile(large, 0.9), 1)
    if not args.no_server:
        end_to_end = served_timings_ms(captioner, image, args)
        report["end_to_end_median_ms"] = round(statistics.median(end_to_end), 1)
    report["peak_memory_mib"] = measure.peak_memory_mib(captioner.device)
    report["peak_memory_kind"] = measure.peak_memory_kind(captioner.device)
    measure.write_report(report, args.output, "demo_latency", captioner.device, save=not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
