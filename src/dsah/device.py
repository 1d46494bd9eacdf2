"""Which device to compute on: the GPU when asked for (or `auto`) and present, else the CPU, saying so."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from dsah.config import DEVICES
from dsah.errors import ConfigError


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def select_device(requested: str, log: Callable[[str], None] = _warn, key: str = "device") -> torch.device:
    """cuda when asked for (or `auto`) and present; otherwise the CPU, saying so (on stderr: stdout may
    be data, as `dsah search --json`'s is). key: the param that asked, for the error message."""
    if requested not in DEVICES:
        raise ConfigError(f"{key}: {requested!r}; choose auto, cpu or cuda")
    if requested != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if requested != "cpu":
        log(f"device: no GPU available ({requested!r} requested): running on the CPU "
            f"with {torch.get_num_threads()} threads")
    return torch.device("cpu")
