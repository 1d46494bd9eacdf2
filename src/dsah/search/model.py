"""A trained model file (models/model.pt) read back: the network or a classic method's hash function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dsah.errors import DataError
from dsah.methods import build_network, deep_method, settings_from_dict
from dsah.methods.classic import HashFunction
from dsah.nets.spec import NetworkSpec


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[Any, dict]:
    """The trained model and its saved description (tensors and plain types only): a network (ImgNet,
    or TwinNet for DAPH) in eval mode, or a classic method's HashFunction."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("kind") == "classic":
        return HashFunction.from_state(state["hash_function"]), state
    method, spec = state["method"], NetworkSpec.from_model_file(state, path)
    hashing = deep_method(method, settings_from_dict(method, state["settings"]), state["bits"])
    # Architecture only: the trained weights below replace any ImageNet initialization.
    model = build_network(hashing, spec, state["bits"], pretrained=False)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as error:  # missing, unexpected or misshapen tensors
        raise DataError(f"{path}: its weights do not fit the network it describes ({spec}): "
                        f"{str(error).splitlines()[0]}") from error
    return model.to(device).eval(), state
