"""Codes of images: loading a trained model, encoding, and bit-packed code files with their ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsah.codes import pack_bits, unpack_bits
from dsah.io import atomic_path


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[Any, dict]:
    """The trained model and its saved description (tensors and plain types only): a network (ImgNet,
    or TwinNet for DAPH) in eval mode, or a classic method's HashFunction."""
    from dsah.methods import build_network, deep_method, settings_from_dict
    from dsah.methods.classic import HashFunction

    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("kind") == "classic":
        return HashFunction.from_state(state["hash_function"]), state
    config, method = state["config"], state["method"]
    hashing = deep_method(method, settings_from_dict(method, state["settings"]), state["bits"])
    # Architecture only: the trained weights below replace any ImageNet initialization.
    model = build_network(hashing, config["backbone"], config["width"], "", state["bits"])
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), state


def save_codes(path: str | Path, ids: list[str], codes: np.ndarray) -> None:
    """ids + codes packed 8 bits per byte (bit set where the code is +1), in one .npz (no pickles)."""
    codes = np.asarray(codes)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.asarray(ids, dtype=str), packed=pack_bits(codes), bits=np.int64(codes.shape[1]))


def load_codes(path: str | Path) -> tuple[list[str], np.ndarray]:
    """-> (ids, (n, c) int8 codes in {-1,+1})."""
    with np.load(path, allow_pickle=False) as data:
        return data["ids"].tolist(), unpack_bits(data["packed"], int(data["bits"]))
