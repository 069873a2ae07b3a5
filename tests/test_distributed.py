"""torchrun training on CPU processes (gloo): sharded batches, rank-0 outputs, same run for N=1."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from captioner.checkpoint import load_checkpoint
from captioner.data.coco import EpochBatchSampler
from captioner.distributed import Processes
from captioner.inference import Captioner
from test_training import TINY

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(command: list[str]) -> subprocess.CompletedProcess:
    # one thread per process: processes share this machine's cores, and equal thread counts
    # keep float sums in the same order between the runs compared
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def torchrun(processes: int, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args])


def train_args(shapes_data, out, *overrides):
    return [str(REPO / "train.py"), "--config", str(TINY), "--set", f"data.root={shapes_data}",
            f"data.split_file={shapes_data / 'dataset_shapes.json'}", f"output_dir={out}", *overrides]


def test_shards_of_every_batch_cover_it_once():
    plain = list(EpochBatchSampler(23, 4, seed=3))
    shards = [list(EpochBatchSampler(23, 2, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6  # equal step counts, or DDP would hang
    seen = [i for rank in shards for batch in rank for i in batch]
    assert sorted(set(seen)) == list(range(23)) and len(seen) == 24  # one index repeated as padding
    # each global batch of 2 x 2 images is the single-process batch of 4 split in two
    assert [a + b for a, b in zip(*shards)][:5] == plain[:5]
    assert list(EpochBatchSampler(23, 4, seed=3, rank=0, world_size=1)) == plain


def test_shards_concatenate_back_in_order():
    items = list(range(11))
    parts = [Processes(rank=r, world_size=3).shard(items) for r in range(3)]
    assert [len(p) for p in parts] == [3, 4, 4] and sum(parts, []) == items


def test_two_gloo_processes_train_a_model_that_loads_and_captions(shapes_data, tmp_path):
    out = tmp_path / "ddp2"
    result = torchrun(2, *train_args(shapes_data, out, "train.epochs=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]  # rank 0 alone writes the log
    # 12 training images in global batches of 2 x 8: one step per epoch
    assert lines[-1]["step"] == 2
    captioner = Captioner.load(out / "checkpoint_last.pt", "cpu")
    image = sorted((shapes_data / "val2014").iterdir())[0]
    [result] = captioner.caption([image])
    assert result.ok and result.words and result.attention.shape[0] == len(result.words)


def test_one_torchrun_process_gives_the_single_process_run(shapes_data, tmp_path):
    cache = f"data.feature_cache_dir={tmp_path / 'cache'}"
    single = run([sys.executable, *train_args(shapes_data, tmp_path / "single", cache)])
    assert single.returncode == 0, single.stderr[-3000:]
    launched = torchrun(1, *train_args(shapes_data, tmp_path / "torchrun", cache))
    assert launched.returncode == 0, launched.stderr[-3000:]
    single = load_checkpoint(tmp_path / "single" / "checkpoint_last.pt")
    launched = load_checkpoint(tmp_path / "torchrun" / "checkpoint_last.pt")
    for name, weights in single["model"].items():
        torch.testing.assert_close(launched["model"][name], weights, rtol=0, atol=0, msg=name)
    assert launched["scores"] == single["scores"]


def test_two_processes_caption_a_folder_into_one_ordered_output(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for example in sorted((REPO / "examples").glob("*.jpg"))[:5]:
        (folder / example.name).write_bytes(example.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    arguments = ["caption", str(folder), "--device", "cpu", "--num-workers", "0", "--quiet"]
    single = run([sys.executable, "-m", "captioner", *arguments, "--output", str(tmp_path / "single.jsonl")])
    launched = torchrun(2, "-m", "captioner", *arguments, "--output", str(tmp_path / "merged.jsonl"))
    assert single.returncode == launched.returncode == 1  # the broken file fails in both
    single_records = [json.loads(line) for line in (tmp_path / "single.jsonl").read_text().splitlines()]
    merged_records = [json.loads(line) for line in (tmp_path / "merged.jsonl").read_text().splitlines()]
    assert len(merged_records) == 6 and [r["path"] for r in merged_records] == [r["path"] for r in single_records]
    assert [r.get("caption") for r in merged_records] == [r.get("caption") for r in single_records]
    assert "captioned 5 of 6 inputs, 1 failed" in launched.stderr
