"""Retrieval metrics against brute-force float64 references, single- and multi-label, both backends."""

import numpy as np
import pytest

import dsah.evaluation.metrics as metrics
from dsah.evaluation.ranking import ranking_kernel
from dsah.evaluation.metrics import (bit_balance, evaluate_retrieval, hamming_distances, mean_absolute_correlation,
                          mean_average_precision)


def reference(q_codes, db_codes, q_labels, db_labels, topk, ks, bits):
    """Every metric the slow, obvious way: python sorting by (distance, index) per query."""
    aps, aps_top, precisions, radius_p, radius_r = [], [], [], [], []
    for code, label in zip(q_codes, q_labels):
        distances = [int((code != other).sum()) for other in db_codes]
        order = sorted(range(len(db_codes)), key=lambda j: (distances[j], j))  # ties: database index
        relevant = [float(label @ db_labels[j] > 0) for j in order]

        def ap(rel):
            hits, total = 0, 0.0
            for k, r in enumerate(rel, 1):
                if r:
                    hits += 1
                    total += hits / k
            return total / hits if hits else 0.0

        aps.append(ap(relevant))
        aps_top.append(ap(relevant[:topk]) if topk else aps[-1])
        precisions.append([sum(relevant[:k]) / k for k in ks])
        total_relevant = sum(relevant)
        p_row, r_row = [], []
        for h in range(bits + 1):
            inside = [j for j in range(len(db_codes)) if distances[j] <= h]
            found = sum(float(label @ db_labels[j] > 0) for j in inside)
            p_row.append(found / len(inside) if inside else 0.0)
            r_row.append(found / total_relevant if total_relevant else 0.0)
        radius_p.append(p_row)
        radius_r.append(r_row)
    return (np.mean(aps), np.mean(aps_top), np.mean(precisions, axis=0), np.mean(radius_p, axis=0),
            np.mean(radius_r, axis=0))


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


@pytest.mark.parametrize("multi, bits, topk", [(False, 6, None), (True, 6, 9), (False, 70, 5), (True, 8, 100)])
def test_every_metric_matches_brute_force(backend, multi, bits, topk):
    q_codes, db_codes, q_labels, db_labels = random_problem(bits, multi, bits)
    ks = (1, 3, 10, 45)
    scores = evaluate_retrieval(q_codes, db_codes, q_labels, db_labels, map_topk=topk, precision_at=(10,), ks=ks)
    m, m_top, curve, radius_p, radius_r = reference(q_codes, db_codes, q_labels, db_labels, topk, ks, bits)
    assert scores.mAP == pytest.approx(m, abs=1e-12)
    assert scores.mAP_at_k == pytest.approx(m_top, abs=1e-12)
    assert scores.ks == list(ks) and np.allclose(scores.precision_curve, curve, atol=1e-12)
    assert scores.precision_at[10] == pytest.approx(curve[2])
    assert np.allclose(scores.radius_precision, radius_p, atol=1e-12)
    assert np.allclose(scores.radius_recall, radius_r, atol=1e-12)
    assert scores.precision_within(2) == pytest.approx(radius_p[2])


def test_hamming_ties_are_broken_by_database_index(backend):
    query = np.array([[1, 1]])
    db = np.array([[1, -1], [-1, 1], [1, 1]])  # distances 1, 1, 0
    labels_q = np.array([[1.0, 0]])
    db_labels = np.array([[0.0, 1], [1, 0], [1, 0]])  # item 0 irrelevant, items 1 and 2 relevant
    # Ranking: 2 (d=0), then 0 before 1 (tie at d=1, lower index first): relevant at ranks 1 and 3.
    assert mean_average_precision(query, db, labels_q, db_labels) == pytest.approx((1 / 1 + 2 / 3) / 2)
    # A query with no relevant item in the top K scores 0, and is counted.
    assert mean_average_precision(query, db, np.array([[0.0, 1]]), db_labels, topk=1) == 0.0
    scores = evaluate_retrieval(query, db, np.array([[0.0, 0]]), db_labels)
    assert scores.mAP == 0.0 and scores.queries_without_relevant == 1


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
