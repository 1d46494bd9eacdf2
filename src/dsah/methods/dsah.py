"""DSAH (METHOD.md §2-3): its loss and its step of the database code update. ADSH is its zero-weight case
(eta = mu = lam = 0, initial codes zero as in ADSH's reference code); DAPH (methods/daph.py) reuses both with two networks.

DAPH trains two networks, F for queries
and G for the database: F's outputs meet the database codes B in the pairwise term, and G is tied to B
by the quantization term (in ADSH both roles fall to F).

The pairwise term sums over all n database codes for every image in a batch. Expanding the square,
    sum_j (u.b_j - t_ij)^2 = u^T (B^T B) u - 2 u . sum_j t_ij b_j + sum_j t_ij^2,
and sum_j t_ij b_j depends on labels only through label patterns, so a batch costs O(|I| (c^2 + g c)),
independent of n, and the result is exactly the dense sum.

The semantic and decoder terms are scaled (TermScales; a deviation from METHOD.md, docs/training.md): the
pairwise term's gradient grows about as c^2 times the share of similar pairs, so unscaled eta and mu would
lose most of their weight at long codes and on multi-label data. Scaled, eta and mu are each term's share
of the pairwise term's gradient at initialisation, at every code length, on any labels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dsah.methods.code_update import SoftTargets, block_targets, update_codes
from dsah.similarity import LabelPatterns
from dsah.methods.base import Batch, DeepMethod
from dsah.settings import ADSHConfig, AsymmetricConfig


@dataclass
class IterationContext:
    """What the loss needs about the current database codes B and the sampled block, per outer iteration."""

    bits: int
    n: int
    targets: SoftTargets  # the block's soft pairwise targets
    similar: Tensor      # (m, g) similarity of the sampled points to the database label patterns (binary or graded)
    counts: Tensor       # (g,) database points per pattern
    gram: Tensor         # (c, c) B^T B
    pattern_sums: Tensor  # (g, c) sum of b_j over each pattern's points
    code_sum: Tensor     # (c,) sum of all b_j
    has_codes: bool = True  # False while B is all zero (init: zeros, before the first code update)

    @classmethod
    def build(cls, B: Tensor, patterns: LabelPatterns, similar: Tensor) -> IterationContext:
        pattern_sums = torch.zeros(len(patterns.counts), B.shape[1], device=B.device).index_add_(
            0, patterns.index, B)
        return cls(bits=B.shape[1], n=B.shape[0], targets=block_targets(similar, patterns), similar=similar,
                   counts=patterns.counts, gram=B.T @ B, pattern_sums=pattern_sums, code_sum=B.sum(dim=0),
                   has_codes=bool(B.any()))


@dataclass(frozen=True)
class TermScales:
    """What the semantic and decoder terms are multiplied by, besides eta and mu (1: unscaled). 0-dim
    tensors on the training device once measured: reading them back would make a GPU step wait."""

    semantic: Tensor | float = 1.0
    decoder: Tensor | float = 1.0


def measure_scales(u: Tensor, positions: Tensor, codes: Tensor, labels: Tensor, label_codes: Tensor | None,
                   decoder, ctx: IterationContext, config: AsymmetricConfig,
                   anchor: Tensor | None = None) -> TermScales:
    """Scales that make eta and mu each term's share of the pairwise term's gradient with respect to the
    network outputs u, on this batch (the first one trained: the network at initialisation):
    ||grad_u eta*semantic|| = eta ||grad_u pairwise||, likewise mu. In a process group, the norms are
    those of the whole batch, so every process scales alike. Terms switched off keep 1."""
    if not (config.eta or config.mu):
        return TermScales()
    u = u.detach().float().requires_grad_(True)
    unit = dataclasses.replace(config, eta=1.0 if config.eta else 0.0, mu=1.0 if config.mu else 0.0)
    with torch.enable_grad():
        terms = dsah_terms(u, positions, codes, labels, label_codes, decoder, ctx, unit,
                                 None if anchor is None else anchor.detach())
        names = [k for k in ("pairwise", "semantic", "decoder") if k in terms]
        squares = torch.stack([torch.autograd.grad(terms[k], u, retain_graph=True)[0].square().sum()
                               for k in names])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(squares)
    norms = dict(zip(names, squares.sqrt()))
    return TermScales(semantic=norms["pairwise"] / norms["semantic"] if config.eta else 1.0,
                      decoder=norms["pairwise"] / norms["decoder"] if config.mu else 1.0)


def dsah_terms(u: Tensor, positions: Tensor, codes: Tensor, labels: Tensor, label_codes: Tensor | None,
                     decoder, ctx: IterationContext, config: AsymmetricConfig,
                     anchor: Tensor | None = None, scales: TermScales = TermScales()) -> dict[str, Tensor]:
    """The weighted loss terms for a batch; their sum is the loss.

    u: (b, c) network outputs; positions: (b,) rows of the sampled block; codes: (b, c) their B rows;
    labels: (b, C); label_codes: (b, c) their H_Y rows (eta > 0); decoder: the frozen LAE decoder (mu > 0);
    anchor: the outputs the quantization term ties to B (DAPH's database network; default u); scales: the
    semantic and decoder terms' (term_scales).
    """
    u = u.float()
    anchor = u if anchor is None else anchor.float()
    c, b = ctx.bits, len(u)
    similar = ctx.similar[positions]
    s, d = ctx.targets.similar, ctx.targets.dissimilar
    t_codes = c * (s + d) * (similar @ ctx.pattern_sums) - c * d * ctx.code_sum  # sum_j t_ij b_j
    n_similar, n_squares = similar @ ctx.counts, similar.square() @ ctx.counts
    # sum_j t_ij^2, t_ij = c ((s + d) S_ij - d); for binary S (S^2 = S) it is c^2 (s^2 n_similar + d^2 (n - n_similar))
    t_squares = c**2 * ((s + d) ** 2 * n_squares - 2 * d * (s + d) * n_similar + d**2 * ctx.n)
    pairwise = ((u @ ctx.gram) * u).sum(dim=1) - 2 * (u * t_codes).sum(dim=1) + t_squares
    terms = {
        "pairwise": pairwise.sum() / (b * ctx.n),
        "quantization": config.gamma * ((codes - anchor) ** 2).sum() / (b * ctx.n),
    }
    if config.eta:
        terms["semantic"] = config.eta * scales.semantic * ((u - label_codes) ** 2).sum() / (b * c)
    if config.mu:
        terms["decoder"] = config.mu * scales.decoder * F.binary_cross_entropy_with_logits(decoder(u), labels)
    return terms


def dsah_code_update(B: Tensor, U: Tensor, omega: Tensor, patterns: LabelPatterns, ctx: IterationContext,
                           label_codes: Tensor | None, config: AsymmetricConfig,
                           anchor: Tensor | None = None, rows: tuple[int, int] | None = None) -> Tensor:
    m, c = U.shape
    return update_codes(B, U, omega, ctx.similar, patterns, ctx.targets, config.gamma, config.lam * m * c,
                        label_codes, config.sweeps, anchor, rows)


class DSAH(DeepMethod):
    """DSAH; ADSH is the same method through its settings (eta = mu = lam = 0, no label auto-encoder)."""

    keeps_codes = True

    @property
    def config(self) -> AsymmetricConfig:
        return self.settings.asymmetric() if isinstance(self.settings, ADSHConfig) else self.settings

    scales: TermScales | None = None  # measured on the first batch trained (measure_scales)

    def initial_codes(self, n: int, generator: torch.Generator) -> Tensor:
        """B before the first update: zeros (ADSH's reference code: the first update decides every bit from
        the network's outputs and the targets alone), H_Y, or random +-1."""
        device = self.res.labels.device
        if self.config.init == "label_codes":
            if self.res.label_codes is None:
                raise ValueError("initial codes from the label auto-encoder were asked for, but none were given")
            return self.res.label_codes.clone()
        if self.config.init == "zeros":
            return torch.zeros(n, self.bits, device=device)
        return torch.where(torch.randn(n, self.bits, generator=generator) >= 0, 1.0, -1.0).to(device)

    def state(self) -> dict[str, Any]:
        return {} if self.scales is None else {"term_scales": torch.stack([
            torch.as_tensor(v, dtype=torch.float32).cpu() for v in (self.scales.semantic, self.scales.decoder)])}

    def load_state(self, state: dict[str, Any]) -> None:
        if "term_scales" in state:
            semantic, decoder = state["term_scales"].to(self.res.labels.device)
            self.scales = TermScales(semantic, decoder)

    def summary(self) -> dict[str, float]:
        if self.scales is None or not (self.config.eta or self.config.mu):
            return {}
        return {"semantic_scale": float(self.scales.semantic), "decoder_scale": float(self.scales.decoder)}

    def begin_iteration(self, B: Tensor, omega: Tensor) -> IterationContext:
        similar = self.res.patterns.similarity(self.res.labels[omega], graded=self.config.targets == "graded")
        return IterationContext.build(B, self.res.patterns, similar)

    def split(self, outputs: Tensor) -> tuple[Tensor, Tensor | None]:
        """-> (outputs meeting B in the pairwise term, outputs tied to B by quantization or None)."""
        return outputs, None

    def terms(self, outputs: Tensor, batch: Batch, state: IterationContext) -> dict[str, Tensor]:
        u, anchor = self.split(outputs)
        label_codes = None if self.res.label_codes is None else self.res.label_codes[batch.rows]
        if self.scales is None:
            if not state.has_codes:  # B still zero: the pairwise term has no gradient to measure against
                pairwise_only = dataclasses.replace(self.config, eta=0.0, mu=0.0)
                return dsah_terms(u, batch.positions, batch.codes, batch.labels, label_codes, self.res.decoder,
                                  state, pairwise_only, anchor)
            self.scales = measure_scales(u, batch.positions, batch.codes, batch.labels, label_codes,
                                         self.res.decoder, state, self.config, anchor)
        return dsah_terms(u, batch.positions, batch.codes, batch.labels, label_codes, self.res.decoder,
                                state, self.config, anchor, self.scales)

    def update_codes(self, B: Tensor, outputs: Tensor, omega: Tensor, state: IterationContext,
                     rows: tuple[int, int] | None = None) -> Tensor:
        u, anchor = self.split(outputs)
        return dsah_code_update(B, u, omega, self.res.patterns, state, self.res.label_codes, self.config,
                                      anchor, rows)
