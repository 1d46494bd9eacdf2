"""Deterministic splits: a pure function of `split_seed` and the image ids.

Every id gets a pseudo-random rank from a keyed hash of (purpose, seed, id). Choosing "the k ids with
the smallest rank" then depends neither on file order nor on the training seed, and adding images to a
collection does not reshuffle the queries already chosen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from dsah.errors import DataError


def hash_rank(ids: Sequence[str], seed: int, purpose: str) -> np.ndarray:
    """A uint64 rank per id; ties are impossible in practice and broken by position anyway."""
    key = f"{purpose}:{seed}".encode()
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "big") for i in ids),
        dtype=np.uint64, count=len(ids),
    )


def smallest(rank: np.ndarray, eligible: np.ndarray, k: int, what: str) -> np.ndarray:
    """Boolean mask of the k eligible positions with the smallest rank."""
    candidates = np.flatnonzero(eligible)
    if k > len(candidates):
        raise DataError(f"{what}: need {k} images but only {len(candidates)} are eligible")
    chosen = candidates[np.argsort(rank[candidates], kind="stable")[:k]]
    mask = np.zeros(len(rank), dtype=bool)
    mask[chosen] = True
    return mask


def choose_queries(ids: Sequence[str], count: int, seed: int) -> np.ndarray:
    rank = hash_rank(ids, seed, "query")
    return smallest(rank, np.ones(len(ids), dtype=bool), count, "queries")


def choose_queries_per_class(ids: Sequence[str], classes: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Single-label protocols (CIFAR-10): `per_class` queries from each class."""
    return per_class_mask(hash_rank(ids, seed, "query"), classes, per_class, "queries")


def choose_subset_per_class(ids: Sequence[str], classes: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """A single-label protocol's subset (`prepare.cifar10.subset`): `per_class` images of each class."""
    return per_class_mask(hash_rank(ids, seed, "subset"), classes, per_class, "subset")


def per_class_mask(rank: np.ndarray, classes: np.ndarray, per_class: int, what: str) -> np.ndarray:
    mask = np.zeros(len(rank), dtype=bool)
    for c in np.unique(classes):
        mask |= smallest(rank, classes == c, per_class, f"{what} of class {c}")
    return mask


def choose_validation(ids: Sequence[str], database: np.ndarray, count: int, seed: int) -> np.ndarray:
    """The validation slice: database images held out of training sampling (METHOD.md §5)."""
    rank = hash_rank(ids, seed, "validation")
    return smallest(rank, database, count, "validation slice")


def choose_subset(ids: Sequence[str], queries: np.ndarray | None, count: int, query_count: int,
                  seed: int) -> np.ndarray:
    """A seeded subset of `count` images (a mask). Where the source fixes its queries (`queries`, a mask),
    `query_count` of them and `count - query_count` others are kept, so the subset has queries in the
    protocol's proportion; otherwise any `count` images (queries are chosen among them afterwards)."""
    rank = hash_rank(ids, seed, "subset")
    if queries is None:
        return smallest(rank, np.ones(len(ids), dtype=bool), count, "subset")
    return (smallest(rank, queries, query_count, "subset queries")
            | smallest(rank, ~queries, count - query_count, "subset database"))
