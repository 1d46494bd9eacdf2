"""Training the label auto-encoder on the database labels (METHOD.md §1).

The LAE trains on the distinct label vectors, sampled by frequency, so a step costs the same for
CIFAR-10 (10 vectors) and COCO (tens of thousands): the weighted objective over all database labels is
estimated without bias by a frequency-sampled batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from dsah.methods.code_update import SoftTargets
from dsah.similarity import LabelPatterns, label_similarity
from dsah.evaluation.metrics import bit_balance, mean_absolute_correlation
from dsah.nets.lae import LabelAutoEncoder
from dsah.settings import LAEConfig


def frequency_weighted_targets(patterns: LabelPatterns, graded: bool = False) -> SoftTargets:
    """The soft pairwise targets (dsah.methods.code_update.SoftTargets) over all database pairs."""
    w = patterns.counts / patterns.counts.sum()
    s = float(w @ label_similarity(patterns.patterns, patterns.patterns, graded).to(w.dtype) @ w)
    return SoftTargets.balanced(s, 1 - s)


def lae_terms(model: LabelAutoEncoder, labels: Tensor, weights: Tensor, targets: SoftTargets,
              graded: bool = False) -> dict[str, Tensor]:
    """The LAE loss terms as weighted averages over label vectors (weights sum to 1).

    With all distinct vectors and their frequencies as weights this is the exact per-sample average
    over the database; with a frequency-sampled batch and uniform weights, an unbiased estimate.
    graded: pairwise targets from the label cosine instead of sharing a label (settings.TARGETS).
    """
    c = model.bits
    h, logits = model(labels)
    s = label_similarity(labels, labels, graded).to(labels.dtype)
    t = c * targets.similar * s - c * targets.dissimilar * (1 - s)
    pair_weights = weights[:, None] * weights[None, :]
    mean = weights @ h
    centred = h - mean
    cov = centred.T @ (weights[:, None] * centred)
    std = cov.diagonal().clamp_min(1e-8).sqrt()
    corr = cov / (std[:, None] * std[None, :])
    off_diagonal = corr - torch.diag(corr.diagonal())
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=1)
    return {
        "reconstruction": weights @ bce,
        "pairwise": (pair_weights * (h @ h.T - t) ** 2).sum() / c**2,
        "quantization": weights @ ((h - torch.sign(h).detach()) ** 2).sum(dim=1) / c,
        "balance": (mean**2).sum() / c,
        "decorrelation": (off_diagonal**2).sum() / (c * (c - 1)) if c > 1 else h.new_zeros(()),
    }


def lae_loss(terms: dict[str, Tensor], config: LAEConfig) -> Tensor:
    return (terms["reconstruction"] + config.alpha * terms["pairwise"] + config.beta * terms["quantization"]
            + config.delta_bal * terms["balance"] + config.delta_dec * terms["decorrelation"])


@dataclass
class LAEResult:
    model: LabelAutoEncoder
    label_codes: np.ndarray  # (n, c) int8 in {-1,+1}: H_Y for every database point
    metrics: dict[str, float]
    history: list[dict[str, float]]


def train_lae(labels: np.ndarray, bits: int, config: LAEConfig, seed: int, progress: bool = True,
              targets: str = "binary") -> LAEResult:
    """Train the LAE on database labels (n, C) and return it with the label codes sign(h(y)). targets:
    the pairwise term's, binary or graded (DSAH's setting, dsah.settings.TARGETS)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    patterns = LabelPatterns.from_labels(labels)
    model = LabelAutoEncoder(patterns.patterns.shape[1], bits, config.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    graded = targets == "graded"
    soft = frequency_weighted_targets(patterns, graded)
    frequencies = patterns.counts / patterns.counts.sum()
    exact = len(frequencies) <= config.batch  # few distinct vectors: use them all, weighted exactly
    uniform = torch.full((config.batch,), 1.0 / config.batch)
    history = []
    for step in tqdm(range(config.steps), desc="train LAE", disable=not progress, mininterval=1.0):
        if exact:
            terms = lae_terms(model, patterns.patterns, frequencies, soft, graded)
        else:
            chosen = torch.multinomial(frequencies, config.batch, replacement=True, generator=generator)
            terms = lae_terms(model, patterns.patterns[chosen], uniform, soft, graded)
        loss = lae_loss(terms, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == config.steps - 1:
            history.append({"step": step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}})
    model.eval()
    with torch.no_grad():
        pattern_codes = torch.where(model.encode(patterns.patterns) >= 0, 1.0, -1.0)  # sign(0) = +1
        decoded = model.decode(pattern_codes) > 0
    codes = pattern_codes[patterns.index].to(torch.int8).numpy()
    exact = (decoded == patterns.patterns.bool()).all(dim=1).float()
    per_label = (decoded == patterns.patterns.bool()).float().mean(dim=1)
    weights = patterns.counts / patterns.counts.sum()
    mac, constant = mean_absolute_correlation(codes)
    metrics = {
        "reconstruction_exact": float(weights @ exact),      # label vector recovered from its binary code
        "reconstruction_per_label": float(weights @ per_label),
        "bit_balance": bit_balance(codes),                   # 0 = every bit half +1, half -1
        "mAC": mac,
        "constant_bits": len(constant),
        "distinct_label_vectors": int(len(patterns.counts)),
        "distinct_codes": int(torch.unique(pattern_codes, dim=0).shape[0]),
        "similar_share": soft.similar_share,  # of all pairs of database images
    }
    return LAEResult(model, codes, metrics, history)


def load_decoder(path) -> torch.nn.Module:
    """The trained LAE's decoder, from the file train_lae wrote (refused if it is a skipped-stage marker)."""
    from dsah.errors import DataError

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not state.get("used"):
        raise DataError(f"{path} is a skipped-stage marker; rerun the plan and train_lae stages")
    lae = LabelAutoEncoder(state["num_classes"], state["bits"], state["config"]["hidden"])
    lae.load_state_dict(state["state_dict"])
    return lae.decoder
