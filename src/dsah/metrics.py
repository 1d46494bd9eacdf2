"""Retrieval metrics (METHOD.md §5).

Ranking: by Hamming distance, ties broken by database index (ascending). Distances take only c + 1
values, so a stable counting sort per query (numpy's radix sort on uint8/uint16) ranks n items in O(n).
Relevance: a database item is relevant to a query when they share at least one label; it is computed
per distinct label pattern and gathered, never as a dense label product.
"""

from __future__ import annotations

import numpy as np
import torch

from dsah.codes import LabelPatterns


def hamming_distances(query_codes: np.ndarray, db_codes: np.ndarray) -> np.ndarray:
    """(q, c) and (n, c) codes in {-1,+1} -> (q, n) Hamming distances (uint8 up to 255 bits, else uint16)."""
    bits = query_codes.shape[1]
    inner = torch.as_tensor(query_codes, dtype=torch.float32) @ torch.as_tensor(db_codes, dtype=torch.float32).T
    distances = ((bits - inner) / 2).round().numpy()
    return distances.astype(np.uint8 if bits < 256 else np.uint16)


def relevance(query_labels: np.ndarray, db_patterns: LabelPatterns) -> np.ndarray:
    """(q, C) query labels -> (q, n) bool: shares at least one label with database item j."""
    per_pattern = db_patterns.similarity(torch.as_tensor(np.asarray(query_labels, dtype=np.float32)))
    return per_pattern.bool().numpy()[:, db_patterns.index.numpy()]


def rank(distances: np.ndarray) -> np.ndarray:
    """Database indices by (distance, index): numpy's stable sort on small integers is a radix sort."""
    return np.argsort(distances, kind="stable")


def average_precision(relevant_ranked: np.ndarray, topk: int | None = None) -> float:
    """AP@K of one ranked 0/1 relevance list: (1/R_K) sum_k P(k) rel(k); 0 when R_K = 0."""
    hits = relevant_ranked[:topk] if topk else relevant_ranked
    found = np.cumsum(hits)
    count = found[-1] if len(found) else 0
    if count == 0:
        return 0.0
    positions = np.flatnonzero(hits) + 1
    return float((found[hits.astype(bool)] / positions).mean())


def ranking_metrics(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                    db_labels: np.ndarray | LabelPatterns, map_topk: int | None = None,
                    precision_at: tuple[int, ...] = (), batch: int = 256) -> dict[str, float]:
    """mAP (whole database, or @map_topk) and P@K for each K in precision_at, in one pass over the ranking."""
    patterns = db_labels if isinstance(db_labels, LabelPatterns) else LabelPatterns.from_labels(db_labels)
    ap_total = 0.0
    precision_totals = dict.fromkeys(precision_at, 0.0)
    for start in range(0, len(query_codes), batch):
        stop = start + batch
        distances = hamming_distances(query_codes[start:stop], db_codes)
        relevant = relevance(query_labels[start:stop], patterns)
        for d, rel in zip(distances, relevant):
            ranked = rel[rank(d)]
            ap_total += average_precision(ranked, map_topk)
            for k in precision_at:
                precision_totals[k] += ranked[:k].mean()
    count = len(query_codes)
    return {"mAP": ap_total / count, **{f"P@{k}": float(total / count) for k, total in precision_totals.items()}}


def mean_average_precision(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                           db_labels: np.ndarray | LabelPatterns, topk: int | None = None,
                           batch: int = 256) -> float:
    """mAP (over the whole database, or @topk) of Hamming ranking with the documented tie rule."""
    return ranking_metrics(query_codes, db_codes, query_labels, db_labels, topk, (), batch)["mAP"]


def bit_correlation(codes: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(c, c) Pearson correlation between bits, and the bits with zero variance (their rows are NaN)."""
    x = np.asarray(codes, dtype=np.float64)
    x = x - x.mean(axis=0)
    std = np.sqrt((x * x).mean(axis=0))
    constant = [int(k) for k in np.flatnonzero(std == 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (x.T @ x) / len(x) / np.outer(std, std)
    corr[constant, :] = np.nan
    corr[:, constant] = np.nan
    return corr, constant


def mean_absolute_correlation(codes: np.ndarray) -> tuple[float, list[int]]:
    """mAC: mean |Pearson correlation| over pairs of distinct bits, leaving zero-variance bits out."""
    corr, constant = bit_correlation(codes)
    keep = [k for k in range(corr.shape[0]) if k not in constant]
    if len(keep) < 2:
        return float("nan"), constant
    sub = np.abs(corr[np.ix_(keep, keep)])
    return float(sub[~np.eye(len(keep), dtype=bool)].mean()), constant


def bit_balance(codes: np.ndarray) -> float:
    """Mean over bits of |fraction of +1 - 1/2| * 2: 0 for perfectly balanced bits, 1 for constant ones."""
    return float(np.abs((np.asarray(codes) > 0).mean(axis=0) * 2 - 1).mean())
