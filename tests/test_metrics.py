"""Retrieval metrics against brute-force references, single- and multi-label."""

import numpy as np
import pytest

from dsah.metrics import bit_balance, mean_absolute_correlation, mean_average_precision


def reference_map(q_codes, db_codes, q_labels, db_labels, topk=None):
    aps = []
    for code, label in zip(q_codes, q_labels):
        distances = [int((code != other).sum()) for other in db_codes]
        order = sorted(range(len(db_codes)), key=lambda j: (distances[j], j))  # ties: database index
        relevant = [float(label @ db_labels[j] > 0) for j in order][: topk or None]
        hits, total = 0, 0.0
        for k, rel in enumerate(relevant, 1):
            if rel:
                hits += 1
                total += hits / k
        aps.append(total / hits if hits else 0.0)
    return float(np.mean(aps))


@pytest.mark.parametrize("multi, topk", [(False, None), (True, None), (False, 7), (True, 5)])
def test_map_matches_brute_force(multi, topk):
    rng = np.random.default_rng(1)
    bits, classes = 6, 4
    q_codes = np.where(rng.random((15, bits)) > 0.5, 1, -1)
    db_codes = np.where(rng.random((40, bits)) > 0.5, 1, -1)
    if multi:
        q_labels = (rng.random((15, classes)) < 0.4).astype(np.float32)
        db_labels = (rng.random((40, classes)) < 0.4).astype(np.float32)
        db_labels[db_labels.sum(1) == 0, 0] = 1
    else:
        q_labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, 15)]
        db_labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, 40)]
    got = mean_average_precision(q_codes, db_codes, q_labels, db_labels, topk=topk, batch=4)
    assert got == pytest.approx(reference_map(q_codes, db_codes, q_labels, db_labels, topk), abs=1e-12)


def test_hamming_ties_are_broken_by_database_index():
    query = np.array([[1, 1]])
    db = np.array([[1, -1], [-1, 1], [1, 1]])  # distances 1, 1, 0
    labels_q = np.array([[1.0, 0]])
    db_labels = np.array([[0.0, 1], [1, 0], [1, 0]])  # item 0 irrelevant, items 1 and 2 relevant
    # Ranking: 2 (d=0), then 0 before 1 (tie at d=1, lower index first): relevant at ranks 1 and 3.
    assert mean_average_precision(query, db, labels_q, db_labels) == pytest.approx((1 / 1 + 2 / 3) / 2)
    # A query with no relevant item in the top K scores 0.
    assert mean_average_precision(query, db, np.array([[0.0, 1]]), db_labels, topk=1) == 0.0


def test_correlation_and_balance():
    rng = np.random.default_rng(0)
    x = np.where(rng.random((2000, 3)) > 0.5, 1, -1)
    codes = np.column_stack([x, x[:, 0], np.ones(2000)])  # bit 3 copies bit 0; bit 4 is constant
    mac, constant = mean_absolute_correlation(codes)
    corr = np.abs(np.corrcoef(codes[:, :4].T))
    assert constant == [4]
    assert mac == pytest.approx(corr[~np.eye(4, dtype=bool)].mean())
    assert bit_balance(codes[:, :3]) < 0.05 and bit_balance(np.ones((5, 2))) == 1.0


def test_precision_at_k_matches_brute_force():
    from dsah.metrics import ranking_metrics
    rng = np.random.default_rng(3)
    q_codes = np.where(rng.random((9, 5)) > 0.5, 1, -1)
    db_codes = np.where(rng.random((30, 5)) > 0.5, 1, -1)
    q_labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 9)]
    db_labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 30)]
    expected = []
    for code, label in zip(q_codes, q_labels):
        d = [int((code != o).sum()) for o in db_codes]
        order = sorted(range(30), key=lambda j: (d[j], j))[:7]
        expected.append(np.mean([label @ db_labels[j] > 0 for j in order]))
    got = ranking_metrics(q_codes, db_codes, q_labels, db_labels, precision_at=(7,))
    assert got["P@7"] == pytest.approx(np.mean(expected))
    assert got["mAP"] == pytest.approx(reference_map(q_codes, db_codes, q_labels, db_labels))
