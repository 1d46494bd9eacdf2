"""The codes a network gives images: sign(F(x)), in eval mode, batch by batch on the chosen device."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def to_float(images: Tensor) -> Tensor:
    """uint8 images -> float in [0, 1], the networks' input."""
    return images.float() / 255.0


def outputs(network: nn.Module, x: Tensor, flips: bool) -> Tensor:
    """The network's continuous outputs; with flips, the mean of those of x and of x mirrored left-right."""
    u = network(x).float()
    return (u + network(x.flip(-1)).float()) / 2 if flips else u


@torch.no_grad()
def encode(model: nn.Module, images: Tensor, device: torch.device, batch: int = 512, side: str = "query") -> Tensor:
    """sign(F(x)) for uint8 images, in eval mode; sign(0) = +1. side: "query", or "database" for the
    database network of a two-network method (the same network otherwise). A network whose spec has
    test_flips (dsah.nets.spec) is encoded from the mean outputs of each image and its mirror image: this
    is the one place codes come from (validation, the encode stage, search, add and serve alike)."""
    was_training = model.training
    model.eval()
    network = model.query if side == "query" else getattr(model, "database_net", model.query)
    flips = model.spec is not None and model.spec.test_flips
    rows = []
    for start in range(0, len(images), batch):
        x = to_float(images[start:start + batch].to(device))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            rows.append(outputs(network, x, flips))
    model.train(was_training)
    u = torch.cat(rows)
    return torch.where(u >= 0, 1.0, -1.0)
