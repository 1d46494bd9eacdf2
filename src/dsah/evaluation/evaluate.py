"""The evaluate step: codes + labels -> the record of what was measured (evaluation.json), its headline
(metrics.json: DVC's metrics), curve tables and the bit-correlation heatmap."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from dsah.data.loading import PreparedData
from dsah.evaluation.figures import correlation_heatmap
from dsah.io import atomic_path, write_json
from dsah.evaluation.metrics import (RetrievalScores, bit_correlation, chance_map, code_structure, evaluate_retrieval,
                                     mean_absolute_correlation)

PR_CURVE, PK_CURVE, HEATMAP = "pr_curve.csv", "precision_at_k.csv", "bit_correlation.png"
# What a user compares runs by, in this order: the headline metrics file holds only these (numbers), so
# `dvc exp show` leads with them. mAP, mAP@K and P@K are tie-aware; mAP_index_ties, the by-index ranking's,
# is a diagnostic. The rest of the record (counts, query-code mAC, what was trained on what, as strings)
# stays in evaluation.json, which the report and the experiment readers read as a file.
HEADLINE = ("mAP", "mAP@{k}", "P@5000", "mAC", "val_mAP", "train_seconds", "mAP_index_ties")


def evaluate(data: PreparedData, query_ids: list[str], query_codes: np.ndarray, db_ids: list[str],
             db_codes: np.ndarray, map_topk: int) -> tuple[dict[str, Any], RetrievalScores]:
    """Metrics of query codes against database codes, both in split-table order (checked by id)."""
    if query_ids != data.query.ids or db_ids != data.database.ids:
        raise ValueError("codes are not in split-table order: rerun encode on this prepared folder")
    scores = evaluate_retrieval(query_codes, db_codes, data.query.labels, data.database.labels,
                                map_topk=map_topk, precision_at=(5000,))
    mac, constant = mean_absolute_correlation(db_codes)
    mac_query, constant_query = mean_absolute_correlation(query_codes)
    structure = code_structure(db_codes, data.database.labels, query_codes, data.query.labels)
    metrics = {
        "mAP": scores.mAP,
        f"mAP@{map_topk}": scores.mAP_at_k,
        "mAP_index_ties": scores.mAP_index_ties,
        "P@5000": scores.precision_at[5000],
        "precision_radius2": scores.precision_within(2),
        # Graded relevance (r: labels shared with the query; on single-label data r is 0 or 1).
        f"NDCG@{scores.graded_k}": scores.ndcg_at_k,
        f"ACG@{scores.graded_k}": scores.acg_at_k,
        # What a ranking that knows nothing scores here: the floor the mAP is read against.
        "chance_mAP": chance_map(data.query.labels, data.database.labels),
        "mAC": mac,
        "mAC_query": mac_query,
        "constant_bits": len(constant),
        "constant_bits_query": len(constant_query),
        # One database code per label pattern makes retrieval classification (metrics.CodeStructure).
        "codes_per_label_pattern": structure.codes_per_pattern,
        "modal_code_share": structure.modal_share,
        "query_pattern_accuracy": structure.query_pattern_accuracy,
        "query_label_errors": structure.query_label_errors,
        "queries": len(query_codes),
        "database": len(db_codes),
        "queries_without_relevant": scores.queries_without_relevant,
        "bits": int(db_codes.shape[1]),
        "dataset": data.meta["dataset"],
        "protocol": data.meta["protocol"],
        "stand_in": bool(data.meta["stand_in"]),
    }
    return metrics, scores


def headline(record: dict[str, Any], map_topk: int) -> dict[str, float]:
    """The record's HEADLINE entries that it has, in HEADLINE's order: numbers only."""
    keys = [key.format(k=map_topk) for key in HEADLINE]
    chosen = {key: record[key] for key in keys if record.get(key) is not None}
    for key, value in chosen.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"headline metric {key} is {value!r}, not a number")
    return chosen


def write_outputs(record: dict[str, Any], scores: RetrievalScores, db_codes: np.ndarray, record_path: Path,
                  metrics_path: Path, plots: Path) -> None:
    """record_path: the whole record; metrics_path: its headline (DVC's metrics)."""
    write_json(record, record_path)
    write_json(headline(record, scores.map_topk), metrics_path)
    plots.mkdir(parents=True, exist_ok=True)
    write_csv(plots / PK_CURVE, ["k", "precision"], zip(scores.ks, scores.precision_curve))
    write_csv(plots / PR_CURVE, ["radius", "recall", "precision"],
              zip(range(len(scores.radius_recall)), scores.radius_recall, scores.radius_precision))
    with atomic_path(plots / HEATMAP) as tmp:
        correlation_heatmap(bit_correlation(db_codes)[0]).save(tmp, format="PNG")


def write_csv(path: Path, header: list[str], rows) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
