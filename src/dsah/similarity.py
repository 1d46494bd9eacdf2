"""Label patterns: the distinct label vectors of a set of points, and which one each point has.

Similarity from labels (S_ij = [y_i . y_j > 0]) depends on j only through y_j's pattern, and distinct
patterns are few (10 for CIFAR-10, thousands for COCO): the code update, the loss and the metrics all
work per pattern instead of over dense n x n similarity matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def share_a_label(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """(n, C) and (k, C) 0/1 labels (both tensors or both arrays) -> (n, k) bool: the pair shares at least
    one label. The one definition of relevance every metric uses, and of similarity every loss and code
    update uses by default."""
    return (a @ b.T) > 0


def label_similarity(a: Tensor, b: Tensor, graded: bool = False) -> Tensor:
    """(n, C) and (k, C) 0/1 labels -> (n, k) float in [0, 1]: 1 where the pair shares a label (binary), or
    the cosine of the two label vectors (graded: 1 for equal label sets, 0 for disjoint ones). On one-hot
    labels the two are equal to the last bit (a shared label gives 1 / (1 * 1))."""
    if not graded:
        return share_a_label(a, b).to(a.dtype)
    inner = a @ b.T
    norms = a.square().sum(dim=1).sqrt()[:, None] * b.square().sum(dim=1).sqrt()[None, :]
    return torch.where(inner > 0, inner / norms.clamp_min(1e-12), torch.zeros_like(inner))


@dataclass
class LabelPatterns:
    """The distinct label vectors of a set of points, and which one each point has."""

    patterns: Tensor  # (g, C) float32, 0/1
    index: Tensor  # (n,) int64: pattern of each point
    counts: Tensor  # (g,) float32: points per pattern

    @classmethod
    def from_labels(cls, labels: Tensor | np.ndarray) -> LabelPatterns:
        labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
        patterns, index, counts = torch.unique(labels.to(torch.float32), dim=0, return_inverse=True,
                                               return_counts=True)
        return cls(patterns, index, counts.to(torch.float32))

    def to(self, device: torch.device | str) -> LabelPatterns:
        return LabelPatterns(self.patterns.to(device), self.index.to(device), self.counts.to(device))

    def similarity(self, labels: Tensor, graded: bool = False) -> Tensor:
        """(k, C) labels -> (k, g) float: label_similarity of each to each pattern (binary: 1 where the two share
        at least one label)."""
        return label_similarity(labels.to(self.patterns.dtype), self.patterns, graded).to(torch.float32)
