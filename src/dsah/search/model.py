"""A trained model file (models/model.pt) read back: the network or a classic method's hash function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dsah.methods import build_network, deep_method, settings_from_dict
from dsah.methods.classic import HashFunction


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[Any, dict]:
    """The trained model and its saved description (tensors and plain types only): a network (ImgNet,
    or TwinNet for DAPH) in eval mode, or a classic method's HashFunction."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("kind") == "classic":
        return HashFunction.from_state(state["hash_function"]), state
    config, method = state["config"], state["method"]
    hashing = deep_method(method, settings_from_dict(method, state["settings"]), state["bits"])
    # Architecture only: the trained weights below replace any ImageNet initialization.
    model = build_network(hashing, config["backbone"], config["width"], "", state["bits"],
                          config.get("input_size", 0), pretrained=False)
    model.load_state_dict(state["state_dict"])
    model.test_flips = config.get("test_flips", False)  # models saved before test-time flips had none
    return model.to(device).eval(), state
