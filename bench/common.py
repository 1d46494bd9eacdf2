"""Shared by the benchmark scripts: where results go and what they record about the machine."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, TypeVar

import torch

from dsah.config import load_params

T = TypeVar("T")
# The project's params.yaml: the one place defaults live, for the benchmarks too.
PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")


def project_config(dotted: str, kind: type[T], **changes: Any) -> T:
    """A section of the project's params.yaml as its config type, with some fields changed."""
    return dataclasses.replace(PARAMS.section(dotted, kind), **changes)


def machine() -> dict[str, Any]:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"device": device, "cuda": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "commit": COMMIT}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                              text=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("DSAH_COMMIT", "unknown")


# The commit whose code this benchmark loaded: read at start, since a long run may outlive HEAD.
COMMIT = commit()


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {path}")
