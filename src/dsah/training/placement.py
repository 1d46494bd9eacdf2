"""Where the database images live while a network trains: on the GPU when they fit, else read per outer
iteration from the memory-mapped store; and a guard that makes a hidden host-GPU sync an error."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor



def on_device(images: Any, device: torch.device, budget: float = 0.25) -> Any:
    """The database images on the GPU when they fit in `budget` of its free memory (CIFAR-10: 184 MB),
    copied once in slices; otherwise (and on the CPU) as they are: each outer iteration then reads its
    block from the memory-mapped store."""
    if device.type != "cuda" or isinstance(images, Tensor) and images.device == device:
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if len(images) * math.prod(images.shape[1:]) > budget * free:
        return images
    resident = torch.empty(tuple(images.shape), dtype=torch.uint8, device=device,
                           memory_format=torch.channels_last)
    for start in range(0, len(images), 8192):
        resident[start:start + 8192] = images[start:start + 8192].to(device)
    return resident


def read_block(images: Any, rows: Tensor, device: torch.device) -> Tensor:
    """An outer iteration's sampled rows (CPU indices), on the training device: indexed in place when the
    images live there, else read from the store into pinned memory and copied without waiting."""
    if isinstance(images, Tensor) and images.device == device:
        return images[rows.to(device)]
    block = images[rows]
    if device.type == "cuda":
        block = block.pin_memory()
    return block.to(device, non_blocking=True)


@contextmanager
def no_host_sync(enabled: bool) -> Iterator[None]:
    """Inside, an operation that makes the host wait for the GPU raises (torch.cuda.set_sync_debug_mode)."""
    if not enabled:
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)
