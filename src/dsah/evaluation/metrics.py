"""Retrieval metrics (METHOD.md §5).

Ranking: by Hamming distance. Distances take only c + 1 values, so most items tie with others, and any
fixed order among them (database index: CIFAR-10's database is stored class by class) leaks into the
score. mAP, mAP@K and P@K are therefore tie-aware: their exact expected values when tied items come in
uniformly random order (dsah.evaluation.ties, from the items and relevant items per distance). The
ranking that breaks ties by database index (ascending) is scored too, as the diagnostic mAP_index_ties.
The compiled kernel (dsah/evaluation/ranking.py, numba) counts per distance and scores the by-index
ranking (a counting sort) in one pass per query; the numpy fallback does the same in batches.
Relevance: a database item is relevant to a query when they share at least one label; it is computed
per distinct label pattern and gathered, never as a dense label product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsah.codes import pack_words
from dsah.evaluation.ties import tie_aware_graded, tie_aware_scores
from dsah.similarity import LabelPatterns


DEFAULT_PRECISION_KS = (1, 10, 50, 100, 200, 500, 1000, 2000, 3000, 4000, 5000, 7500, 10000)


@dataclass
class RetrievalScores:
    """Means over queries, tie-aware (expected values under random order of tied items). Curves: P@K for
    each K in `ks`; precision and recall within each Hamming radius (whole tie groups: no ties to break)."""

    mAP: float                       # over the whole database
    mAP_at_k: float                  # over the top `map_topk` (equals mAP when map_topk is None)
    mAP_index_ties: float            # mAP of the ranking that breaks ties by database index (a diagnostic)
    map_topk: int | None
    precision_at: dict[int, float]   # P@K for the requested Ks
    ks: list[int]                    # P@K curve
    precision_curve: list[float]
    radius_precision: list[float]    # index h: precision within Hamming radius h (0 with nothing inside)
    radius_recall: list[float]       # index h: recall within Hamming radius h
    queries_without_relevant: int    # their AP counts as 0
    graded_k: int                    # graded relevance over the top graded_k (r: labels shared with the query)
    ndcg_at_k: float                 # NDCG@graded_k, gain 2^r - 1, discount log2(rank + 1), ideal over the database
    acg_at_k: float                  # ACG@graded_k: mean r in the top graded_k

    def precision_within(self, radius: int) -> float:
        return self.radius_precision[min(radius, len(self.radius_precision) - 1)]


def hamming_distances(query_codes: np.ndarray, db_codes: np.ndarray) -> np.ndarray:
    """(q, c) and (n, c) codes in {-1,+1} -> (q, n) uint8 Hamming distances (popcount of XOR)."""
    q, d = pack_words(query_codes), pack_words(db_codes)
    total = np.zeros((len(q), len(d)), dtype=np.uint8)
    for w in range(q.shape[1]):
        total += np.bitwise_count(q[:, w, None] ^ d[None, :, w])
    return total


def shared_labels(query_labels: np.ndarray, db_patterns: LabelPatterns) -> np.ndarray:
    """(q, g) uint8: the labels each query shares with each database label pattern, the graded relevance r
    (more than 255 count as 255); r > 0 is relevance, dsah.similarity.share_a_label."""
    inner = np.asarray(query_labels, dtype=np.float32) @ db_patterns.patterns.numpy().T
    return np.minimum(inner, 255).astype(np.uint8)


def chance_map(query_labels: np.ndarray, db_labels: np.ndarray | LabelPatterns) -> float:
    """The mAP of a ranking that knows nothing (every database item tied with every other): the exact
    expected AP of a uniformly random order, the floor a protocol's mAP is read against."""
    patterns = db_labels if isinstance(db_labels, LabelPatterns) else LabelPatterns.from_labels(db_labels)
    relevant = (shared_labels(query_labels, patterns) > 0).astype(np.int64) @ patterns.counts.numpy().astype(np.int64)
    items = np.full((len(relevant), 1), len(patterns.index), dtype=np.int64)
    return float(tie_aware_scores(items, relevant[:, None], 0, np.zeros(0, np.int64))[0].mean())


def evaluate_retrieval(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                       db_labels: np.ndarray | LabelPatterns, map_topk: int | None = None,
                       precision_at: tuple[int, ...] = (5000,),
                       ks: tuple[int, ...] = DEFAULT_PRECISION_KS, graded_k: int = 1000) -> RetrievalScores:
    """Every ranking metric in one pass: mAP, mAP@K, P@K (and its curve), precision/recall by radius,
    NDCG and ACG at graded_k."""
    patterns = db_labels if isinstance(db_labels, LabelPatterns) else LabelPatterns.from_labels(db_labels)
    n, bits = len(db_codes), np.asarray(query_codes).shape[1]
    curve_ks = sorted({k for k in (*ks, *precision_at) if k <= n} | {n} if n else set())
    shared = shared_labels(query_labels, patterns)
    ap_index, counts, relevant, gains, shared_at = _kernel()(
        pack_words(query_codes), pack_words(db_codes), shared, patterns.index.numpy().astype(np.int64), bits)
    ap_all, ap_top, precision = tie_aware_scores(counts, relevant, int(map_topk or 0),
                                                 np.asarray(curve_ks, dtype=np.int64))
    pattern_counts = patterns.counts.numpy().astype(np.int64)
    levels = np.stack([(shared == r) @ pattern_counts for r in range(int(shared.max(initial=0)) + 1)], axis=1)
    ndcg, acg = tie_aware_graded(counts, gains, shared_at, levels, graded_k)
    within = np.cumsum(counts, axis=1)
    relevant_within = np.cumsum(relevant, axis=1)
    total_relevant = relevant_within[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        radius_precision = np.where(within > 0, relevant_within / np.maximum(within, 1), 0.0).mean(axis=0)
        radius_recall = np.where(total_relevant > 0, relevant_within / np.maximum(total_relevant, 1), 0.0).mean(0)
    curve = precision.mean(axis=0)
    return RetrievalScores(
        mAP=float(ap_all.mean()), mAP_at_k=float(ap_top.mean()), map_topk=map_topk,
        mAP_index_ties=float(ap_index.mean()),
        precision_at={k: float(curve[curve_ks.index(min(k, n))]) for k in precision_at},
        ks=[int(k) for k in curve_ks], precision_curve=[float(v) for v in curve],
        radius_precision=[float(v) for v in radius_precision], radius_recall=[float(v) for v in radius_recall],
        queries_without_relevant=int((total_relevant[:, 0] == 0).sum()),
        graded_k=min(graded_k, n), ndcg_at_k=float(ndcg.mean()), acg_at_k=float(acg.mean()),
    )


def ranking_metrics(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                    db_labels: np.ndarray | LabelPatterns, map_topk: int | None = None,
                    precision_at: tuple[int, ...] = ()) -> dict[str, float]:
    """mAP (whole database, or @map_topk) and P@K for each K in precision_at."""
    scores = evaluate_retrieval(query_codes, db_codes, query_labels, db_labels, map_topk, precision_at, ())
    mean_ap = scores.mAP_at_k if map_topk else scores.mAP
    return {"mAP": mean_ap, **{f"P@{k}": v for k, v in scores.precision_at.items()}}


def validation_scores(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                      db_labels: np.ndarray | LabelPatterns, selection: str = "mAP") -> dict[str, float]:
    """The validation slice's scores, one ranking pass: `val_mAP`, and `val_mAP@K` where the protocol is
    judged (and models selected and promoted) by mAP over the top K (`selection` "mAP@K")."""
    topk = int(selection.split("@")[1]) if "@" in selection else None
    scores = evaluate_retrieval(query_codes, db_codes, query_labels, db_labels, topk, (), ())
    return {"val_mAP": scores.mAP, **({f"val_{selection}": scores.mAP_at_k} if topk else {})}


def mean_average_precision(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                           db_labels: np.ndarray | LabelPatterns, topk: int | None = None) -> float:
    """Tie-aware mAP (over the whole database, or @topk) of Hamming ranking."""
    return ranking_metrics(query_codes, db_codes, query_labels, db_labels, topk)["mAP"]


def _kernel():
    """The compiled ranking kernel where numba is installed, else the vectorized numpy one (same results)."""
    try:
        from dsah.evaluation.ranking import ranking_kernel
    except ImportError:  # e.g. the GPU machine, which has torch and numpy only
        return _ranking_numpy
    return ranking_kernel


def _ranking_numpy(query_words, db_words, pattern_shared, db_index, bits, batch=128):
    """Vectorized reference implementation of dsah.evaluation.ranking.ranking_kernel."""
    q, n = len(query_words), len(db_words)
    ap_index, counts, relevant_at = np.zeros(q), np.zeros((q, bits + 1), np.int64), np.zeros((q, bits + 1), np.int64)
    gains_at, shared_at = np.zeros((q, bits + 1)), np.zeros((q, bits + 1), np.int64)
    positions = np.arange(1, n + 1)
    for start in range(0, q, batch):
        stop = min(start + batch, q)
        distances = np.zeros((stop - start, n), dtype=np.uint8)
        for w in range(query_words.shape[1]):
            distances += np.bitwise_count(query_words[start:stop, w, None] ^ db_words[None, :, w])
        shared = pattern_shared[start:stop][:, db_index].astype(np.int64)
        relevant = shared > 0
        ranked = np.take_along_axis(relevant, np.argsort(distances, axis=1, kind="stable"), axis=1)
        hits = np.cumsum(ranked, axis=1)
        precisions = np.where(ranked, hits / positions, 0.0)
        ap_index[start:stop] = precisions.sum(axis=1) / np.maximum(hits[:, -1], 1)
        cells = (np.arange(stop - start)[:, None] * (bits + 1) + distances).ravel()
        size = (stop - start) * (bits + 1)
        counts[start:stop] = np.bincount(cells, minlength=size).reshape(-1, bits + 1)
        relevant_at[start:stop] = np.bincount(cells, weights=relevant.ravel(), minlength=size).reshape(-1, bits + 1)
        gains = np.where(relevant, 2.0 ** shared - 1.0, 0.0).ravel()
        gains_at[start:stop] = np.bincount(cells, weights=gains, minlength=size).reshape(-1, bits + 1)
        shared_at[start:stop] = np.bincount(cells, weights=shared.ravel(), minlength=size).reshape(-1, bits + 1)
    return ap_index, counts, relevant_at, gains_at, shared_at


@dataclass(frozen=True)
class CodeStructure:
    """How the database codes sit over the label patterns, and where the queries land among them. When
    each pattern holds one code (modal_share 1), retrieval is classification: a query ranks its own
    pattern's items first exactly when its code is nearest that pattern's code, so mAP follows
    query_pattern_accuracy (what then limits mAP is the network, not the code update)."""

    patterns: int                  # distinct label patterns in the database
    codes_per_pattern: float       # mean distinct database codes per pattern
    modal_share: float             # database items holding their pattern's most common code
    query_pattern_accuracy: float  # queries nearest their own pattern's modal code (a tie shares the credit)
    queries_pattern_absent: int    # queries whose pattern no database item has (left out of the accuracy)
    # Labels (of C) in which the pattern nearest a query differs from its own, per query (ties averaged): the
    # network's error counted label by label, where one wrong label of three fails the whole pattern.
    query_label_errors: float


def code_structure(db_codes: np.ndarray, db_labels: np.ndarray, query_codes: np.ndarray,
                   query_labels: np.ndarray, chunk: int = 1024) -> CodeStructure:
    """The database codes grouped by label pattern (CodeStructure), for codes in {-1,+1}."""
    db_codes, query_codes = np.asarray(db_codes), np.asarray(query_codes)
    patterns, pattern_of = np.unique(np.asarray(db_labels) > 0, axis=0, return_inverse=True)
    codes, code_of = np.unique(db_codes > 0, axis=0, return_inverse=True)
    pairs, counts = np.unique(np.stack([pattern_of.ravel(), code_of.ravel()], axis=1), axis=0, return_counts=True)
    order = np.lexsort((-counts, pairs[:, 0]))            # per pattern, its most common code first
    first = np.flatnonzero(np.r_[True, np.diff(pairs[order, 0]) != 0])
    modal = np.where(codes[pairs[order[first], 1]], 1.0, -1.0).astype(np.float32)  # (g, c), pattern order
    lookup = {row.tobytes(): g for g, row in enumerate(patterns)}
    own_labels = np.asarray(query_labels) > 0
    own = np.array([lookup.get(row.tobytes(), -1) for row in own_labels], dtype=np.int64)
    present = own >= 0
    pattern_matrix = patterns.astype(np.float32)
    credit, label_errors = np.zeros(len(own)), np.zeros(len(own))
    for start in range(0, len(own), chunk):
        rows = slice(start, start + chunk)
        inner = query_codes[rows].astype(np.float32) @ modal.T  # bits - 2 * Hamming distance
        nearest = inner == inner.max(axis=1, keepdims=True)
        share = nearest / nearest.sum(axis=1, keepdims=True)
        labels = own_labels[rows].astype(np.float32)  # label Hamming distance |a| + |b| - 2 a.b, to every pattern
        apart = labels.sum(axis=1, keepdims=True) + pattern_matrix.sum(axis=1) - 2 * labels @ pattern_matrix.T
        label_errors[rows] = (share * apart).sum(axis=1)
        credit[rows] = np.where(present[rows], share[np.arange(len(labels)), own[rows]], 0.0)
    return CodeStructure(
        patterns=len(patterns), codes_per_pattern=float(len(pairs) / len(patterns)),
        modal_share=float(counts[order[first]].sum() / len(db_codes)),
        query_pattern_accuracy=float(credit[present].mean()) if present.any() else float("nan"),
        queries_pattern_absent=int((~present).sum()),
        query_label_errors=float(label_errors.mean()) if len(own) else float("nan"))


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
