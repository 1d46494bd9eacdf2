"""Tie-aware ranking metrics (METHOD.md §5): exact expected values when items at equal Hamming distance
come in uniformly random order (McSherry & Najork, ECIR 2008), in closed form, no sampling.

Hamming distances take only c + 1 values, so a ranking is a sequence of tie groups, and every metric
depends on a query only through the numbers of items n_d and of relevant items r_d at each distance d:

- a group of n items, r of them relevant, after N items of which R are relevant: a relevant item at
  position i of the group (chance r / n) has in expectation (i - 1)(r - 1)/(n - 1) relevant items ahead
  of it within the group, and its precision's denominator N + i is fixed, so the group adds to the sum
  of precisions at relevant items exactly
      (r / n) [ (R + 1) (H(N + n) - H(N)) + (r - 1)/(n - 1) (n - (N + 1)(H(N + n) - H(N))) ],
  H the harmonic numbers (sum_i (i - 1)/(N + i) = n - (N + 1)(H(N + n) - H(N)));
- P@K: the group that K cuts contributes (K - N) r / n relevant items in expectation;
- AP@K divides by the relevant items within the top K, which is random where K cuts a group: given x
  relevant among the group's first t = K - N (hypergeometric), their order is uniform, so the formula
  above holds with (t, x) for (n, r), and E[AP@K] is the exact sum over x.
"""

from __future__ import annotations

import math

import numpy as np


def harmonic_numbers(n: int) -> np.ndarray:
    """H(0..n): H(k) = sum_{i <= k} 1/i."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


def log_factorials(n: int) -> np.ndarray:
    """log k! for k = 0..n (exact lgamma, no accumulated rounding)."""
    return np.array([math.lgamma(k + 1.0) for k in range(n + 1)])


def expected_precision_sum(before: np.ndarray, relevant_before: np.ndarray, size: np.ndarray,
                           relevant: np.ndarray, H: np.ndarray) -> np.ndarray:
    """E[sum of precisions at the relevant items of a tie group] (arrays broadcast elementwise).

    before, relevant_before: items and relevant items ranked ahead of the group; size, relevant: the
    group's. Empty groups give 0."""
    size_f, relevant_f = size.astype(np.float64), relevant.astype(np.float64)
    span = H[before + size] - H[before]
    ahead = size_f - (before + 1) * span  # sum over the group's positions i of (i - 1)/(before + i)
    pair = np.divide(relevant_f - 1, size_f - 1, out=np.zeros_like(size_f), where=size > 1)
    share = np.divide(relevant_f, size_f, out=np.zeros_like(size_f), where=size > 0)
    return share * ((relevant_before + 1) * span + pair * ahead)


def tie_aware_scores(counts: np.ndarray, relevant: np.ndarray, topk: int, ks: np.ndarray,
                     chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: E[AP] over the whole database, E[AP@topk] (topk <= 0: the whole database) and E[P@K]
    for each K in ks (1 <= K <= n), from (q, c + 1) items and relevant items per distance.
    A query with no relevant item (within the top K, for AP@K) has AP 0."""
    counts, relevant = np.asarray(counts, np.int64), np.asarray(relevant, np.int64)
    q, n = counts.shape[0], int(counts[0].sum()) if len(counts) else 0
    H = harmonic_numbers(n)
    before = np.cumsum(counts, axis=1) - counts           # items ranked ahead of each group
    relevant_before = np.cumsum(relevant, axis=1) - relevant
    group_sums = expected_precision_sum(before, relevant_before, counts, relevant, H)
    total_relevant = relevant.sum(axis=1)
    ap = np.divide(group_sums.sum(axis=1), total_relevant, out=np.zeros(q), where=total_relevant > 0)

    rows = np.arange(q)
    precision = np.zeros((q, len(ks)))
    for i, k in enumerate(np.asarray(ks, np.int64)):
        cut = _cut_group(before, counts, k)
        share = relevant[rows, cut] / np.maximum(counts[rows, cut], 1)
        precision[:, i] = (relevant_before[rows, cut] + (k - before[rows, cut]) * share) / k

    limit = n if topk <= 0 else min(topk, n)
    if limit == n:
        return ap, ap.copy(), precision
    cut = _cut_group(before, counts, limit)
    whole = np.arange(counts.shape[1])[None, :] < cut[:, None]  # groups entirely inside the top `limit`
    inside_sums = np.where(whole, group_sums, 0.0).sum(axis=1)
    inside_relevant = relevant_before[rows, cut]
    ap_top = np.empty(q)
    lf = log_factorials(n)
    for start in range(0, q, chunk):
        part = slice(start, min(start + chunk, q))
        ap_top[part] = _expected_ap_at_cut(
            inside_sums[part], inside_relevant[part], before[rows[part], cut[part]],
            counts[rows[part], cut[part]], relevant[rows[part], cut[part]], limit, H, lf)
    return ap, ap_top, precision


def _cut_group(before: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """(q,) the distance whose tie group holds rank k (1-based): before < k <= before + size."""
    return np.argmax(before + counts >= k, axis=1)


def _expected_ap_at_cut(inside_sums, inside_relevant, before, size, relevant, limit, H, lf) -> np.ndarray:
    """E[AP@limit] when the top `limit` ends `take` = limit - before items into a group of `size` items,
    `relevant` of them relevant, drawn in uniformly random order: the hypergeometric sum over x, the
    relevant items among those drawn."""
    take = limit - before                                    # (b,) 1 <= take <= size
    x = np.arange(int(np.minimum(relevant, take).max()) + 1)[None, :]  # (1, X)
    low, high = np.maximum(0, take - (size - relevant))[:, None], np.minimum(relevant, take)[:, None]
    possible = (x >= low) & (x <= high)
    xs = np.where(possible, x, low)                          # any in-range value where impossible (masked)
    log_pmf = (_log_choose(relevant[:, None], xs, lf) + _log_choose((size - relevant)[:, None], take[:, None] - xs, lf)
               - _log_choose(size, take, lf)[:, None])
    pmf = np.where(possible, np.exp(log_pmf), 0.0)
    take_b = np.broadcast_to(take[:, None], xs.shape)
    partial = expected_precision_sum(np.broadcast_to(before[:, None], xs.shape),
                                     np.broadcast_to(inside_relevant[:, None], xs.shape), take_b, xs, H)
    found = inside_relevant[:, None] + xs
    ap = np.divide(inside_sums[:, None] + partial, found, out=np.zeros(xs.shape), where=found > 0)
    return (pmf * ap).sum(axis=1)


def _log_choose(a, b, lf):
    return lf[a] - lf[b] - lf[a - b]


def discount_sums(n: int) -> np.ndarray:
    """D(0..n): D(p) = sum_{i <= p} 1 / log2(i + 1), the DCG discount summed over the first p ranks."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, n + 2)))])


def tie_aware_graded(counts: np.ndarray, gains: np.ndarray, shared: np.ndarray, level_counts: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query: E[NDCG@k] and E[ACG@k] (graded relevance: an item sharing r labels with the query has gain
    2^r - 1) when tied items come in uniformly random order, from the items, their summed gains and their
    summed shared labels per distance, (q, c + 1) each, and (q, L + 1) database items sharing 0..L labels
    (the ideal DCG is over the whole database's best k). Expectations are linear, so each tie group adds
    its mean gain times the discounts of the ranks it holds within the top k. NDCG is 0 for a query with
    no relevant item."""
    counts = np.asarray(counts, np.int64)
    n = int(counts[0].sum()) if len(counts) else 0
    k = min(k, n)
    D = discount_sums(n)
    before = np.cumsum(counts, axis=1) - counts
    first, last = np.minimum(before, k), np.minimum(before + counts, k)   # ranks held within the top k
    mean_gain = np.divide(gains, counts, out=np.zeros(counts.shape), where=counts > 0)
    mean_shared = np.divide(shared, counts, out=np.zeros(counts.shape), where=counts > 0)
    dcg = (mean_gain * (D[last] - D[first])).sum(axis=1)
    acg = (mean_shared * (last - first)).sum(axis=1) / max(k, 1)
    levels = np.asarray(level_counts, np.int64)[:, ::-1]                   # most shared labels first
    level_gain = (2.0 ** np.arange(levels.shape[1])[::-1]) - 1
    ideal_last = np.minimum(np.cumsum(levels, axis=1), k)
    ideal_first = np.minimum(np.cumsum(levels, axis=1) - levels, k)
    ideal = (level_gain * (D[ideal_last] - D[ideal_first])).sum(axis=1)
    return np.divide(dcg, ideal, out=np.zeros(len(dcg)), where=ideal > 0), acg
