"""Codes of images: loading a trained ImgNet, encoding, and bit-packed code files with their ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dsah.codes import pack_bits, unpack_bits
from dsah.io import atomic_path
from dsah.nets.backbones import ImgNet, build_backbone


def load_imgnet(path: str | Path, device: torch.device | str = "cpu") -> tuple[ImgNet, dict]:
    """The trained network and its saved description (tensors and plain types only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = state["config"]
    # Architecture only: the trained weights below replace any ImageNet initialization.
    model = ImgNet(build_backbone(config["backbone"], config["width"], ""), state["bits"])
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
