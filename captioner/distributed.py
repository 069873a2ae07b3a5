"""Several processes, one job: `torchrun --nproc_per_node=N` training and batch captioning.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE for each process; without them everything here
describes a single process and does nothing, so one code path serves both. NCCL joins CUDA
processes, gloo joins CPU ones (which is how the tests run two processes on a laptop).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from captioner.device import resolve_device


@dataclass(frozen=True)
class Processes:
    """Which process this is among `world_size` (rank 0 writes checkpoints, logs and outputs)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, value):
        """Rank 0's `value` (any picklable object) on every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every process's `value`, in rank order, on every process."""
        if not self.distributed:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of `tensor` over the processes (a new tensor; the input is left alone)."""
        tensor = tensor.clone()
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` is set on any process (NCCL only reduces tensors on the GPU)."""
        if not self.distributed:
            return flag
        return bool(self.sum(torch.tensor(float(flag), device=device)) > 0)

    def shard(self, items: list) -> list:
        """This process's contiguous share of `items` (shares differ in size by at most one), so
        rank-ordered shares concatenate back to the original order."""
        bounds = [len(items) * r // self.world_size for r in range(self.world_size + 1)]
        return items[bounds[self.rank]: bounds[self.rank + 1]]

    def close(self) -> None:
        if self.distributed:
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def start_processes(device_name: str) -> tuple[Processes, torch.device]:
    """Join the process group torchrun set up, if any, and pick this process's device:
    `cuda:LOCAL_RANK` for `auto`/`cuda` on a GPU machine, the requested device otherwise."""
    device = resolve_device(device_name)
    if not launched_by_torchrun():
        return Processes(), device
    processes = Processes(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=processes.rank,
                                world_size=processes.world_size)
    return processes, device
