"""The compiled ranking kernel (numba): one pass per query over the whole database.

For each query: Hamming distances by popcount, the numbers of items and of relevant items at each
distance, and the relevant items' summed gains 2^r - 1 and shared labels r (all that the tie-aware
metrics need: dsah.evaluation.ties), and the AP of the ranking that
breaks ties by database index (a counting sort by (distance, index)), kept as a diagnostic. Queries run
in parallel. dsah.evaluation.metrics._ranking_numpy is the vectorized reference it is tested against.
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
def _kernel(query_words, db_words, pattern_shared, db_index, bits, table):
    q, n, words = query_words.shape[0], db_words.shape[0], db_words.shape[1]
    ap_index = np.zeros(q)
    counts = np.zeros((q, bits + 1), np.int64)
    relevant = np.zeros((q, bits + 1), np.int64)
    gains = np.zeros((q, bits + 1))
    shared = np.zeros((q, bits + 1), np.int64)
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
            r = pattern_shared[a, db_index[j]]
            if r:
                relevant[a, d] += 1
                gains[a, d] += 2.0 ** r - 1.0
                shared[a, d] += r
        for h in range(1, bits + 2):
            start[h] += start[h - 1]
        order = np.empty(n, np.int64)
        for j in range(n):  # stable: items of equal distance keep database-index order
            order[start[distance[j]]] = j
            start[distance[j]] += 1
        hits, total = 0, 0.0
        for k in range(n):
            if pattern_shared[a, db_index[order[k]]]:
                hits += 1
                total += hits / (k + 1)
        ap_index[a] = total / hits if hits else 0.0
    return ap_index, counts, relevant, gains, shared


def ranking_kernel(query_words, db_words, pattern_shared, db_index, bits):
    """(q, g) labels each query shares with each database label pattern -> (q,) AP with ties by database
    index; per distance (q, c + 1): items, relevant items, their summed gains and shared labels."""
    return _kernel(query_words, db_words, pattern_shared, db_index, bits, _POPCOUNT16)


@numba.njit(cache=True, inline="always")
def _popcount64(x: np.uint64) -> np.uint64:
    """Bit count of a 64-bit word (SWAR: a handful of integer operations, no table)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@numba.njit(cache=True, parallel=True)
def top_k_kernel(query_words, db_words, k, bits):
    """The k nearest database rows of each query by Hamming distance, ties by database index: the
    first k of the ranking evaluate's mAP_index_ties scores. A vectorizable pass computes every distance, a second counts
    them, a third places the rows below the k-th distance and, at it, the lowest indices first.
    -> ((q, k) rows, (q, k) distances)."""
    q, n, words = query_words.shape[0], db_words.shape[0], db_words.shape[1]
    kk = min(k, n)
    rows = np.empty((q, kk), np.int64)
    distances = np.empty((q, kk), np.int32)
    for a in numba.prange(q):
        distance = np.zeros(n, np.uint8)
        for w in range(words):
            word = query_words[a, w]
            for j in range(n):
                distance[j] += np.uint8(_popcount64(word ^ db_words[j, w]))
        histogram = np.zeros(bits + 1, np.int64)
        for j in range(n):
            histogram[distance[j]] += 1
        below, radius = 0, bits
        for r in range(bits + 1):
            if below + histogram[r] >= kk:
                radius = r
                break
            below += histogram[r]
        slot = np.zeros(radius + 1, np.int64)
        for r in range(1, radius + 1):
            slot[r] = slot[r - 1] + histogram[r - 1]
        at_radius = kk - below
        for j in range(n):
            d = distance[j]
            if d <= radius:
                if d == radius:
                    if at_radius == 0:
                        continue
                    at_radius -= 1
                rows[a, slot[d]] = j
                distances[a, slot[d]] = d
                slot[d] += 1
    return rows, distances
