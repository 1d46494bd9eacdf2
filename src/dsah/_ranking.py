"""The compiled ranking kernel (numba): one pass per query over the whole database.

For each query: Hamming distances by popcount, a counting sort by (distance, database index), then a
walk down the ranking that accumulates AP, AP@K and P@K, plus per-radius counts for the PR curve.
Queries run in parallel. dsah.metrics._ranking_numpy is the vectorized reference it is tested against.
"""

from __future__ import annotations

import numba
import numpy as np

_POPCOUNT16 = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.uint8)


@numba.njit(cache=True, inline="always")
def _popcount(x: np.uint64, table: np.ndarray) -> int:
    mask = np.uint64(0xFFFF)
    return (table[x & mask] + table[(x >> np.uint64(16)) & mask] + table[(x >> np.uint64(32)) & mask]
            + table[x >> np.uint64(48)])


@numba.njit(cache=True, parallel=True)
def _kernel(query_words, db_words, pattern_rel, db_index, bits, topk, ks, table):
    q, n, words = query_words.shape[0], db_words.shape[0], db_words.shape[1]
    ap_all, ap_top = np.zeros(q), np.zeros(q)
    precision = np.zeros((q, len(ks)))
    counts = np.zeros((q, bits + 1), np.int64)
    relevant = np.zeros((q, bits + 1), np.int64)
    limit = n if topk <= 0 else min(topk, n)
    for a in numba.prange(q):
        distance = np.empty(n, np.uint8)
        start = np.zeros(bits + 2, np.int64)
        for j in range(n):
            d = 0
            for w in range(words):
                d += _popcount(query_words[a, w] ^ db_words[j, w], table)
            distance[j] = d
            start[d + 1] += 1
            counts[a, d] += 1
            if pattern_rel[a, db_index[j]]:
                relevant[a, d] += 1
        for h in range(1, bits + 2):
            start[h] += start[h - 1]
        order = np.empty(n, np.int64)
        for j in range(n):  # stable: items of equal distance keep database-index order
            order[start[distance[j]]] = j
            start[distance[j]] += 1
        hits, total, total_top, next_k = 0, 0.0, 0.0, 0
        for k in range(n):
            if pattern_rel[a, db_index[order[k]]]:
                hits += 1
                total += hits / (k + 1)
                if k < limit:
                    total_top += hits / (k + 1)
            if k + 1 == limit:
                ap_top[a] = total_top / hits if hits else 0.0
            while next_k < len(ks) and ks[next_k] == k + 1:
                precision[a, next_k] = hits / (k + 1)
                next_k += 1
        ap_all[a] = total / hits if hits else 0.0
    return ap_all, ap_top, precision, counts, relevant


def ranking_kernel(query_words, db_words, pattern_rel, db_index, bits, topk, ks):
    return _kernel(query_words, db_words, pattern_rel, db_index, bits, topk, ks, _POPCOUNT16)
