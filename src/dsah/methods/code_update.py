"""Database codes: the discrete code update (METHOD.md §3), through label patterns (dsah.similarity).

Labels make the pairwise similarity cheap: S_ij = [y_i . y_j > 0] depends on j only through y_j's
label pattern, and distinct patterns are few (10 for CIFAR-10, thousands for COCO). Every product with
the m x n similarity or target matrix is computed per pattern (m x g) and gathered, never materialized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dsah.similarity import LabelPatterns


@dataclass(frozen=True)
class SoftTargets:
    """The pairwise targets t_ij: c * similar on similar pairs, -c * dissimilar on dissimilar ones.

    ADSH's soft targets (METHOD.md) make them sum to zero over a block: where dissimilar pairs are the
    majority (single-label data), similar = 1 and dissimilar = r = #similar / #dissimilar. Where similar
    pairs are the majority (multi-label data: 80 % on the 2 x 2 mosaic) METHOD.md clamps r to 1, and the
    targets then sum to c (#similar - #dissimilar) per image: every image is pulled towards one common
    code, and the network learned to give all queries the same code. There the similar target is lowered
    to #dissimilar / #similar instead, which keeps every target reachable and the sum zero (a deviation
    from METHOD.md, docs/training.md). No dissimilar pair: dissimilar = 0, as METHOD.md says.
    """

    similar: float
    dissimilar: float
    similar_share: float  # #similar / all pairs of the block (logged: how multi-label the data is)

    @classmethod
    def balanced(cls, similar: float, dissimilar: float) -> SoftTargets:
        """From the block's numbers (or shares) of similar and dissimilar pairs."""
        share = similar / (similar + dissimilar) if similar + dissimilar > 0 else 0.0
        if dissimilar <= 0:
            return cls(1.0, 0.0, share)
        if similar <= dissimilar:
            return cls(1.0, similar / dissimilar, share)
        return cls(dissimilar / similar, 1.0, share)


def block_targets(similar_to_patterns: Tensor, patterns: LabelPatterns) -> SoftTargets:
    """The soft targets over a block (rows: sampled points, columns: all n points)."""
    similar = float((similar_to_patterns @ patterns.counts).sum())
    total = similar_to_patterns.shape[0] * float(patterns.counts.sum())
    return SoftTargets.balanced(similar, total - similar)


def target_products(similar_to_patterns: Tensor, patterns: LabelPatterns, X: Tensor, bits: int,
                    targets: SoftTargets, rows: tuple[int, int] | None = None) -> Tensor:
    """T^T X for the (m, n) targets T (c s on similar pairs, -c d on dissimilar ones), X (m, k) -> (n, k),
    or only its rows start:stop given `rows`.

    T = c (s + d) S - c d 11^T, so T^T X = c (s + d) S^T X - c d 1 (1^T X); S^T X is computed per pattern.
    """
    per_pattern = similar_to_patterns.T @ X  # (g, k)
    index = patterns.index if rows is None else patterns.index[rows[0]:rows[1]]
    s, d = targets.similar, targets.dissimilar
    return bits * (s + d) * per_pattern[index] - bits * d * X.sum(dim=0, keepdim=True)


def update_codes(
    B: Tensor,
    U: Tensor,
    omega: Tensor,
    similar_to_patterns: Tensor,
    patterns: LabelPatterns,
    targets: SoftTargets,
    gamma: float,
    lam: float = 0.0,
    label_codes: Tensor | None = None,
    sweeps: int = 1,
    anchor: Tensor | None = None,
    rows: tuple[int, int] | None = None,
) -> Tensor:
    """One or more bit-wise sweeps of the closed-form database-code update (METHOD.md §3).

    Minimizes ||U B^T - T||^2 + gamma ||B_omega - V||^2 + lam ||B - H||^2 over B in {-1,+1}^(n x c), one
    column at a time: B_k = -sign(2 B_hat U_hat^T U_k + Q_k), Q = -2 T^T U - 2 gamma V_bar - 2 lam H.
    V is `anchor` (DAPH's database network) and U itself by default.
    A zero argument keeps the previous bit, so no sweep ever increases the objective; a bit that is still 0
    (zero initial codes) takes +1 there (METHOD.md's sign rule), so B leaves every update in {-1,+1}. Runs in float32
    on B's device; returns a new tensor.
    Each row's update reads only its own row of B, Q and H, and the c x c matrix U^T U: `rows`
    (start, stop) updates just those rows (a data-parallel process's share) and leaves the others as
    they were, with exactly the values the whole update gives them.
    B: (n, c) +-1; U: (m, c) network outputs on the sampled points omega (m,) int64;
    similar_to_patterns: (m, g) similarity of the sampled points to the label patterns of the database.
    """
    B = B.to(torch.float32).clone()
    start, stop = rows if rows is not None else (0, B.shape[0])
    part = B[start:stop]  # a view: updating it updates B
    U = U.to(device=B.device, dtype=torch.float32)
    bits = B.shape[1]
    Q = -2.0 * target_products(similar_to_patterns.to(B.device), patterns.to(B.device), U, bits, targets, rows)
    V = U if anchor is None else anchor.to(device=B.device, dtype=torch.float32)
    omega = omega.to(B.device)
    inside = (omega >= start) & (omega < stop)
    Q.index_add_(0, omega[inside] - start, -2.0 * gamma * V[inside])
    if lam:
        Q.add_(label_codes[start:stop].to(device=B.device, dtype=torch.float32), alpha=-2.0 * lam)
    W = U.T @ U  # (c, c)
    for _ in range(sweeps):
        for k in range(bits):
            # B_hat U_hat^T U_k: all columns but k, without copying B.
            field = 2.0 * (part @ W[:, k] - part[:, k] * W[k, k]) + Q[:, k]
            undecided = torch.where(part[:, k] == 0, 1.0, part[:, k])
            part[:, k] = torch.where(field > 0, -1.0, torch.where(field < 0, 1.0, undecided))
    return B


def code_objective(B: Tensor, U: Tensor, omega: Tensor, T: Tensor, gamma: float, lam: float = 0.0,
                   label_codes: Tensor | None = None, anchor: Tensor | None = None) -> float:
    """The objective update_codes minimizes, computed directly from a dense T (for tests, small n)."""
    V = U if anchor is None else anchor
    value = ((U @ B.T - T) ** 2).sum() + gamma * ((B[omega] - V) ** 2).sum()
    if lam:
        value = value + lam * ((B - label_codes) ** 2).sum()
    return float(value)
