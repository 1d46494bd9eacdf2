"""The label auto-encoder (LAE): labels -> continuous codes h in (-1, 1)^c -> label logits."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LabelAutoEncoder(nn.Module):
    def __init__(self, num_classes: int, bits: int, hidden: int = 256):
        super().__init__()
        self.num_classes, self.bits, self.hidden = num_classes, bits, hidden
        self.encoder = nn.Sequential(nn.Linear(num_classes, hidden), nn.ReLU(), nn.Linear(hidden, bits))
        self.decoder = nn.Sequential(nn.Linear(bits, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def encode(self, labels: Tensor) -> Tensor:
        """h(y) = tanh(E(y))."""
        return torch.tanh(self.encoder(labels))

    def decode(self, codes: Tensor) -> Tensor:
        """Label logits D(h); used frozen by ImgNet's decoder constraint (mu)."""
        return self.decoder(codes)

    def forward(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encode(labels)
        return h, self.decode(h)
