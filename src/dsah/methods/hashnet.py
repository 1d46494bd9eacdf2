"""HashNet: deep hashing from the pairs within a batch. It keeps no database codes of its own; after training the database is encoded with the network, as queries are.

Reference: Cao et al., "HashNet: Deep Learning to Hash by Continuation" (ICCV 2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsah.methods.base import Batch, DeepMethod
from dsah.nets.backbones import set_activation_scale
from dsah.similarity import share_a_label
from dsah.settings import HashNetConfig


# params.yaml's methods.hashnet and methods.dnnh sections (values and their reasons live there only).


def continuation(step: int, config: HashNetConfig) -> float:
    """HashNet's schedule: beta grows from 1 with the optimizer step, so tanh(beta z) tends to sign(z)."""
    return (1.0 + config.step_rate * step) ** config.power


def hashnet_loss(h: Tensor, labels: Tensor, alpha: float) -> Tensor:
    """Weighted pairwise cross-entropy over the batch's distinct pairs i != j:
    l_ij = log(1 + exp(a_ij)) - s_ij a_ij, a_ij = (alpha / c) h_i . h_j, with HashNet's class-balance
    weights (similar and dissimilar pairs weigh |S|/|S_1| and |S|/|S_0|), normalized by |S|."""
    b, c = h.shape
    a = (alpha / c) * (h @ h.T)
    s = share_a_label(labels, labels)
    off_diagonal = ~torch.eye(b, dtype=torch.bool, device=h.device)
    per_pair = F.softplus(a) - s.to(a.dtype) * a
    total = float(b * (b - 1))
    # Counted on the device (no host sync per step); a kind of pair that is absent weighs nothing anyway.
    similar_count = (s & off_diagonal).sum().clamp(min=1).to(a.dtype)
    dissimilar_count = (~s & off_diagonal).sum().clamp(min=1).to(a.dtype)
    weights = torch.where(s, total / similar_count, total / dissimilar_count) * off_diagonal
    return (weights * per_pair).sum() / total


class HashNet(DeepMethod):
    def before_step(self, model: nn.Module, step: int, total: int) -> None:
        set_activation_scale(model, continuation(step, self.settings))

    def terms(self, outputs: Tensor, batch: Batch, state: None) -> dict[str, Tensor]:
        return {"pairwise": hashnet_loss(outputs.float(), batch.labels, self.settings.alpha)}
