"""How the benchmarks measure: the machine a run is on, its peak memory, and timings that wait
for the device, so that every bench script reports the same fields the same way.

Imported by the scripts in this folder (they run as `python bench/<script>.py`, which puts
bench/ on sys.path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels: without it a CUDA timing measures only the launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def add_common_arguments(parser: argparse.ArgumentParser, quick_help: str) -> None:
    """--threads, --quick and --output, which every benchmark script takes."""
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--output", help="also write the JSON here")


def set_threads(threads: int | None, quick: bool) -> None:
    """Use `threads` torch CPU threads; --quick runs take one, because on a machine busy with
    other work two spinning OpenMP threads made tiny steps ten times slower."""
    if threads or quick:
        torch.set_num_threads(threads or 1)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' or 'CPU AMD EPYC, 2 cores, 2 torch threads'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def device_slug(device: torch.device) -> str:
    """Short name for result files: 'cpu-2core', 'nvidia-h100-80gb-hbm3'."""
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"cpu-{os.cpu_count()}core"


def machine(device: torch.device) -> dict:
    """Fields every report starts with: what ran, where, when, and how busy the machine was
    (call it before the run, so that the load average is other work's, not the run's)."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # other work on the machine skews CPU timings; the reader can judge from this
        "load_average_1min": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
    }


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for `peak_memory_mib` (CUDA only: a process's max RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: the most memory tensors held since the last reset (torch.cuda.max_memory_allocated).
    CPU: the process's peak resident set size since it started (ru_maxrss, KiB on Linux)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def peak_memory_kind(device: torch.device) -> str:
    return ("torch.cuda.max_memory_allocated" if device.type == "cuda"
            else "process peak resident set size (ru_maxrss), whole run")


def timed_seconds(run: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Wall-clock seconds of `repeats` calls of `run` after `warmup` untimed ones (lazy
    initialisation, allocator growth, cuDNN autotuning), each waiting for the device."""
    for _ in range(warmup):
        run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1000, 1)


def write_report(report: dict, output: str | None, name: str, device: torch.device, save: bool) -> list[str]:
    """Print `report` as JSON and write it to `output` and, when `save`, to
    bench/results/<name>_<device>_<date>.json. Returns the paths written."""
    text = json.dumps(report, indent=1)
    print(text)
    paths = [Path(output)] if output else []
    if save:
        day = report["date"][:10]
        paths.append(RESULTS_DIR / f"{name}_{device_slug(device)}_{day}.json")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return [str(p) for p in paths]
