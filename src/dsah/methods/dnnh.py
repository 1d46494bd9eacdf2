"""DNNH: deep hashing from the triplets within a batch, with a divide-and-encode head. It keeps no database
codes of its own; after training the database is encoded with the network, as queries are.

Reference: Lai et al., "Simultaneous Feature Learning and Hash Coding with Deep Neural Networks" (CVPR 2015).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dsah.methods.base import Batch, DeepMethod
from dsah.nets.backbones import DivideAndEncode
from dsah.similarity import share_a_label


def triplet_loss(h: Tensor, labels: Tensor, margin: float) -> Tensor:
    """DNNH's triplet ranking loss over every valid triplet of the batch: query q, a similar p != q and a
    dissimilar n, max(0, margin - (||h_q - h_n||^2 - ||h_q - h_p||^2)) on codes in [0, 1]^c; the mean."""
    codes = (h + 1) / 2
    distances = torch.cdist(codes, codes) ** 2
    similar = share_a_label(labels, labels)
    positive = similar & ~torch.eye(len(h), dtype=torch.bool, device=h.device)
    valid = positive[:, :, None] & ~similar[:, None, :]  # (q, p, n)
    losses = torch.relu(margin - distances[:, None, :] + distances[:, :, None])
    # The mean over valid triplets as a masked sum (no host sync per step); none valid gives 0.
    return (losses * valid).sum() / valid.sum().clamp(min=1)


class DNNH(DeepMethod):
    def head(self, in_features: int) -> nn.Module:
        return DivideAndEncode(in_features, self.bits, self.settings.slice_size, self.settings.epsilon)

    def terms(self, outputs: Tensor, batch: Batch, state: None) -> dict[str, Tensor]:
        return {"triplet": triplet_loss(outputs.float(), batch.labels, self.settings.margin)}
