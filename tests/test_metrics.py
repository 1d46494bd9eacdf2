"""Retrieval metrics against brute-force float64 references, single- and multi-label, both backends.

The tie-aware metrics are checked against the average over every order of tied items (all of them,
enumerated), and the by-index diagnostic against a python sort by (distance, index)."""

import itertools
import math

import numpy as np
import pytest

import dsah.evaluation.metrics as metrics
from dsah.evaluation.ranking import ranking_kernel
from dsah.evaluation.metrics import (bit_balance, code_structure, evaluate_retrieval, hamming_distances,
                                     mean_absolute_correlation, mean_average_precision)


def average_precision(rel, topk=None):
    """AP@topk of one ranked relevance list (AP over the whole list without topk); 0 with none relevant."""
    hits, total = 0, 0.0
    for k, r in enumerate(rel[:topk] if topk else rel, 1):
        if r:
            hits += 1
            total += hits / k
    return total / hits if hits else 0.0


def tie_orders(distances):
    """Every ranking by distance: the product of all orders within each group of equal distance."""
    groups = [[j for j in range(len(distances)) if distances[j] == d] for d in sorted(set(distances))]
    for orders in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [j for order in orders for j in order]


def reference_all_orders(q_codes, db_codes, q_labels, db_labels, topk, ks):
    """Tie-aware metrics by enumeration: the mean of AP, AP@topk and P@K over every order of tied items."""
    aps, aps_top, precisions = [], [], []
    for code, label in zip(q_codes, q_labels):
        distances = [int((code != other).sum()) for other in db_codes]
        runs = [[float(label @ db_labels[j] > 0) for j in order] for order in tie_orders(distances)]
        aps.append(np.mean([average_precision(rel) for rel in runs]))
        aps_top.append(np.mean([average_precision(rel, topk) for rel in runs]))
        precisions.append([np.mean([sum(rel[:k]) / k for rel in runs]) for k in ks])
    return np.mean(aps), np.mean(aps_top), np.mean(precisions, axis=0)


def reference_index_ties(q_codes, db_codes, q_labels, db_labels, bits):
    """The by-index diagnostic and the radius curves the slow, obvious way: a python sort per query."""
    aps, radius_p, radius_r = [], [], []
    for code, label in zip(q_codes, q_labels):
        distances = [int((code != other).sum()) for other in db_codes]
        order = sorted(range(len(db_codes)), key=lambda j: (distances[j], j))  # ties: database index
        aps.append(average_precision([float(label @ db_labels[j] > 0) for j in order]))
        total_relevant = sum(float(label @ other > 0) for other in db_labels)
        p_row, r_row = [], []
        for h in range(bits + 1):
            inside = [j for j in range(len(db_codes)) if distances[j] <= h]
            found = sum(float(label @ db_labels[j] > 0) for j in inside)
            p_row.append(found / len(inside) if inside else 0.0)
            r_row.append(found / total_relevant if total_relevant else 0.0)
        radius_p.append(p_row)
        radius_r.append(r_row)
    return np.mean(aps), np.mean(radius_p, axis=0), np.mean(radius_r, axis=0)


def random_problem(seed, multi, bits, queries=12, database=45, classes=4):
    rng = np.random.default_rng(seed)
    q_codes = np.where(rng.random((queries, bits)) > 0.5, 1, -1)
    db_codes = np.where(rng.random((database, bits)) > 0.5, 1, -1)
    db_codes[5] = db_codes[3]  # guaranteed ties
    if multi:
        q_labels = (rng.random((queries, classes)) < 0.3).astype(np.float32)
        db_labels = (rng.random((database, classes)) < 0.3).astype(np.float32)
        db_labels[db_labels.sum(1) == 0, 0] = 1
    else:
        q_labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, queries)]
        db_labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, database)]
    return q_codes, db_codes, q_labels, db_labels


@pytest.fixture(params=["numba", "numpy"])
def backend(request, monkeypatch):
    """Run each test with the compiled kernel and with the vectorized fallback."""
    kernel = ranking_kernel if request.param == "numba" else metrics._ranking_numpy
    monkeypatch.setattr(metrics, "_kernel", lambda: kernel)
    return request.param


@pytest.mark.parametrize("seed, multi, bits, topk", [
    (0, False, 2, None), (1, False, 3, 4), (2, True, 3, 5), (3, True, 2, 2), (4, False, 4, 7), (5, True, 4, 1)])
def test_tie_aware_metrics_equal_the_mean_over_every_order_of_tied_items(backend, seed, multi, bits, topk):
    # 8 items on 2-4 bits: groups of up to 8 tied items (at most 8! orders per query), K cutting groups.
    q_codes, db_codes, q_labels, db_labels = random_problem(seed, multi, bits, queries=5, database=8, classes=3)
    ks = (1, 2, 3, 5, 8)
    scores = evaluate_retrieval(q_codes, db_codes, q_labels, db_labels, map_topk=topk, precision_at=(3,), ks=ks)
    m, m_top, curve = reference_all_orders(q_codes, db_codes, q_labels, db_labels, topk, ks)
    assert scores.mAP == pytest.approx(m, abs=1e-12)
    assert scores.mAP_at_k == pytest.approx(m_top, abs=1e-12)
    assert scores.ks == list(ks) and np.allclose(scores.precision_curve, curve, atol=1e-12)
    assert scores.precision_at[3] == pytest.approx(curve[2], abs=1e-12)


def graded_all_orders(q_codes, db_codes, q_labels, db_labels, k):
    """NDCG@k and ACG@k by enumeration: gain 2^r - 1 (r: shared labels), discount log2(rank + 1), the ideal
    DCG from the whole database sorted by gain; the mean over every order of tied items."""
    ndcgs, acgs = [], []
    for code, label in zip(q_codes, q_labels):
        distances = [int((code != other).sum()) for other in db_codes]
        shared = [int(label @ other) for other in db_labels]
        ideal = sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(sorted(shared, reverse=True)[:k]))
        runs = [[shared[j] for j in order[:k]] for order in tie_orders(distances)]
        dcg = np.mean([sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(run)) for run in runs])
        ndcgs.append(dcg / ideal if ideal else 0.0)
        acgs.append(np.mean([sum(run) / k for run in runs]))
    return np.mean(ndcgs), np.mean(acgs)


@pytest.mark.parametrize("seed, bits, k", [(0, 2, 3), (1, 3, 5), (2, 2, 8), (3, 4, 1)])
def test_graded_relevance_equals_the_mean_over_every_order_of_tied_items(backend, seed, bits, k):
    q_codes, db_codes, q_labels, db_labels = random_problem(seed, True, bits, queries=5, database=8, classes=4)
    q_labels[0] = 0  # a query sharing nothing with anyone: NDCG 0
    scores = evaluate_retrieval(q_codes, db_codes, q_labels, db_labels, ks=(), graded_k=k)
    ndcg, acg = graded_all_orders(q_codes, db_codes, q_labels, db_labels, k)
    assert scores.graded_k == k
    assert scores.ndcg_at_k == pytest.approx(ndcg, abs=1e-12) and scores.acg_at_k == pytest.approx(acg, abs=1e-12)


def test_graded_relevance_of_a_perfect_ranking_is_one():
    # Codes as far from the query as the item has labels missing: every item ranked by its gain, no ties.
    query, labels = np.array([[1, 1, 1]]), np.array([[1.0, 1, 1]])
    db = np.array([[1, 1, 1], [1, 1, -1], [1, -1, -1], [-1, -1, -1]])
    db_labels = np.array([[1.0, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]])
    scores = evaluate_retrieval(query, db, labels, db_labels, ks=(), graded_k=3)
    assert scores.ndcg_at_k == pytest.approx(1.0) and scores.acg_at_k == pytest.approx((3 + 2 + 1) / 3)


def test_chance_map_is_the_tie_aware_map_of_codes_that_know_nothing():
    _, _, q_labels, db_labels = random_problem(6, True, 4, queries=7, database=30, classes=4)
    alike = evaluate_retrieval(np.ones((7, 4)), np.ones((30, 4)), q_labels, db_labels, ks=())
    assert metrics.chance_map(q_labels, db_labels) == pytest.approx(alike.mAP, abs=1e-12)
    # Near the share of relevant items (exact: a little above it, from the first ranks' variance).
    share = ((q_labels @ db_labels.T) > 0).mean(axis=1)
    assert metrics.chance_map(q_labels, db_labels) == pytest.approx(share[share > 0].sum() / len(share), abs=0.08)


@pytest.mark.parametrize("multi, bits", [(False, 6), (True, 6), (False, 70), (True, 8)])
def test_index_ties_diagnostic_and_radius_curves_match_brute_force(backend, multi, bits):
    q_codes, db_codes, q_labels, db_labels = random_problem(bits, multi, bits)
    scores = evaluate_retrieval(q_codes, db_codes, q_labels, db_labels, map_topk=9, precision_at=(10,))
    index_map, radius_p, radius_r = reference_index_ties(q_codes, db_codes, q_labels, db_labels, bits)
    assert scores.mAP_index_ties == pytest.approx(index_map, abs=1e-12)
    assert np.allclose(scores.radius_precision, radius_p, atol=1e-12)
    assert np.allclose(scores.radius_recall, radius_r, atol=1e-12)
    assert scores.precision_within(2) == pytest.approx(radius_p[2])


def test_without_ties_tie_aware_and_index_order_agree(backend):
    # Each database item at its own distance from the one query (0..bits flipped bits): no ties at all.
    bits = 10
    rng = np.random.default_rng(3)
    query = np.where(rng.random((1, bits)) > 0.5, 1, -1)
    flips = rng.permutation(bits + 1)
    db = np.array([np.where(np.arange(bits) < f, -query[0], query[0]) for f in flips])
    labels = np.eye(2, dtype=np.float32)
    db_labels = labels[rng.integers(0, 2, len(db))]
    db_labels[0], db_labels[1] = labels[0], labels[1]  # both classes present
    scores = evaluate_retrieval(query, db, labels[:1], db_labels, map_topk=4, precision_at=(4,), ks=(1, 4, 11))
    order = np.argsort(flips)
    rel = [float(db_labels[j, 0] > 0) for j in order]
    assert scores.mAP == pytest.approx(scores.mAP_index_ties, abs=1e-12)
    assert scores.mAP == pytest.approx(average_precision(rel), abs=1e-12)
    assert scores.mAP_at_k == pytest.approx(average_precision(rel, 4), abs=1e-12)
    assert scores.precision_curve == pytest.approx([rel[0], sum(rel[:4]) / 4, sum(rel) / 11], abs=1e-12)


def test_ties_by_index_and_at_random_differ_where_the_order_is_not_neutral(backend):
    query = np.array([[1, 1]])
    db = np.array([[1, -1], [-1, 1], [1, 1]])  # distances 1, 1, 0
    labels_q = np.array([[1.0, 0]])
    db_labels = np.array([[0.0, 1], [1, 0], [1, 0]])  # item 0 irrelevant, items 1 and 2 relevant
    scores = evaluate_retrieval(query, db, labels_q, db_labels, map_topk=2, precision_at=(2,), ks=(2,))
    # By index: 2 (d=0), then 0 before 1: relevant at ranks 1 and 3.
    assert scores.mAP_index_ties == pytest.approx((1 / 1 + 2 / 3) / 2)
    # At random: item 1 comes second or third, each with chance 1/2.
    assert scores.mAP == pytest.approx(((1 + 2 / 2) / 2 + (1 + 2 / 3) / 2) / 2)
    assert mean_average_precision(query, db, labels_q, db_labels) == scores.mAP
    # Top 2: item 1 is in it half the time (AP 1 either way); P@2 = (1 + 1/2) / 2.
    assert scores.mAP_at_k == pytest.approx(1.0)
    assert scores.precision_at[2] == pytest.approx(0.75)
    # A query with no relevant item in the top K scores 0, and is counted.
    assert mean_average_precision(query, db, np.array([[0.0, 1]]), db_labels, topk=1) == 0.0
    scores = evaluate_retrieval(query, db, np.array([[0.0, 0]]), db_labels)
    assert scores.mAP == 0.0 and scores.queries_without_relevant == 1


def test_the_cut_group_sum_is_a_distribution():
    # The hypergeometric weights over a cut group sum to 1 for every group size and draw.
    from dsah.evaluation.ties import log_factorials
    lf = log_factorials(30)
    for size, relevant, take in [(30, 7, 12), (9, 9, 4), (12, 0, 5), (20, 13, 20)]:
        xs = range(max(0, take - (size - relevant)), min(relevant, take) + 1)
        total = sum(math.exp(lf[relevant] - lf[x] - lf[relevant - x] + lf[size - relevant] - lf[take - x]
                             - lf[size - relevant - take + x] - lf[size] + lf[take] + lf[size - take]) for x in xs)
        assert total == pytest.approx(1.0, abs=1e-12)


def test_hamming_distances_by_popcount():
    rng = np.random.default_rng(0)
    a = np.where(rng.random((4, 130)) > 0.5, 1, -1)
    b = np.where(rng.random((6, 130)) > 0.5, 1, -1)
    expected = (a[:, None, :] != b[None, :, :]).sum(-1)
    assert np.array_equal(hamming_distances(a, b), expected)


def test_correlation_and_balance():
    rng = np.random.default_rng(0)
    x = np.where(rng.random((2000, 3)) > 0.5, 1, -1)
    codes = np.column_stack([x, x[:, 0], np.ones(2000)])  # bit 3 copies bit 0; bit 4 is constant
    mac, constant = mean_absolute_correlation(codes)
    corr = np.abs(np.corrcoef(codes[:, :4].T))
    assert constant == [4]
    assert mac == pytest.approx(corr[~np.eye(4, dtype=bool)].mean())
    assert bit_balance(codes[:, :3]) < 0.05 and bit_balance(np.ones((5, 2))) == 1.0


def test_code_structure_counts_codes_per_label_pattern_and_where_queries_land():
    one_hot = np.eye(3, dtype=int)
    a, b, c = [1, 1, 1, 1], [-1, -1, 1, 1], [-1, -1, -1, -1]
    # Patterns 0 and 1 hold one code each; pattern 2 holds c three times and a once (its modal code: c).
    db_codes = np.array([a, a, b, b, c, c, c, a])
    db_labels = one_hot[[0, 0, 1, 1, 2, 2, 2, 2]]
    queries = np.array([
        [1, 1, 1, -1],    # pattern 0: nearest a (distance 1): right
        [-1, -1, 1, -1],  # pattern 1: b and c both at distance 1: half the credit
        [1, 1, 1, 1],     # pattern 2: nearest a: wrong
        [1, 1, 1, 1],     # labels of no database item: left out
    ])
    query_labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    found = code_structure(db_codes, db_labels, queries, query_labels)
    assert found.patterns == 3 and found.codes_per_pattern == pytest.approx(4 / 3)
    assert found.modal_share == pytest.approx(7 / 8)
    assert found.query_pattern_accuracy == pytest.approx((1 + 0.5 + 0) / 3)
    assert found.queries_pattern_absent == 1
    # Labels wrong: 0; b's pattern (0) or c's (2, two labels off): 1; a's pattern for a pattern-2 query: 2; a's
    # pattern for labels {0, 1}, which no database item has: 1.
    assert found.query_label_errors == pytest.approx((0 + 1 + 2 + 1) / 4)
