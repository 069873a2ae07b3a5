"""Where tensors live and in which precision: the device is chosen once, from the user's
choice, and passed down; nothing else in the library picks a device."""

from __future__ import annotations

import contextlib
import ctypes

import torch


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto` → CUDA when present, else CPU; anything else as torch understands it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available here; use auto or cpu")
    return device


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA; CPU runs in fp32, where bf16 is slower, not faster."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def keep_freed_memory() -> None:
    """Let this process's C allocator keep freed blocks of up to 32 MB for reuse.

    glibc's malloc serves large blocks from fresh mmap'ed pages and gives them back on free, so
    a training step, which allocates and frees many (N, P, A) tensors of a few MB, pays for
    zero-filling new pages every time. Keeping them (and up to 1 GB of free heap) made the
    shapes recipe's CPU training step about 20 % faster. Does nothing without glibc's mallopt.
    """
    try:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    except (OSError, TypeError):  # no C library to open by that name (Windows)
        return
    if mallopt is None:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value
    mallopt(m_trim_threshold, 1 << 30)
