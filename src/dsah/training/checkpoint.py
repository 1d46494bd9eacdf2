"""Checkpoints of the training loop: what identifies a run (its fingerprint), why a saved state cannot be
continued, and writing one atomically."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from dsah.io import atomic_path
from dsah.settings import TrainConfig


def fingerprint(config: TrainConfig, bits: int, method: str, settings: Any, seed: int, data_signature: str,
                processes: int = 1) -> str:
    text = json.dumps({"config": asdict(config), "bits": bits, "method": method, "settings": asdict(settings),
                       "seed": seed, "data": data_signature, "processes": processes}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def why_not_resume(saved: dict[str, Any], state_id: str, code: dict[str, str]) -> str | None:
    """Why a checkpoint cannot be continued (None: it can): another configuration, or other code."""
    if saved.get("fingerprint") != state_id:
        return "belongs to another configuration"
    written_by = saved.get("code", {})
    changed = sorted(name for name in set(written_by) | set(code) if written_by.get(name) != code.get(name))
    if changed:
        return f"was written by other code (changed since: {', '.join(changed)})"
    return None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
