"""Benchmark: retrieval evaluation at CIFAR-10 and MS-COCO scale on this machine. Writes JSON.

Labels are the real ones (CIFAR-10 protocol sizes; COCO's 5,000 queries x 117,218 database from the label
table); codes are synthetic (a random projection of the labels plus noise, so rankings are realistic).

    python bench/evaluate.py --coco-labels $DSAH_DATA_HOME/coco-hashing-labels.tsv.gz --out bench/results/evaluate_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from dsah.data.coco import read_coco_labels  # noqa: E402
from dsah.data.labels import matrix  # noqa: E402
from dsah.evaluation.metrics import _kernel, evaluate_retrieval, mean_absolute_correlation  # noqa: E402


def synthetic_codes(labels: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    projection = rng.standard_normal((labels.shape[1], bits))
    return np.where(labels @ projection + rng.standard_normal((len(labels), bits)) > 0, 1, -1).astype(np.int8)


def measure(name: str, q_labels, db_labels, bits: int, map_topk: int | None, rng) -> dict:
    q_codes, db_codes = synthetic_codes(q_labels, bits, rng), synthetic_codes(db_labels, bits, rng)
    start = time.perf_counter()
    scores = evaluate_retrieval(q_codes, db_codes, q_labels, db_labels, map_topk=map_topk, precision_at=(5000,))
    ranking = time.perf_counter() - start
    start = time.perf_counter()
    mac_db, mac_q = mean_absolute_correlation(db_codes)[0], mean_absolute_correlation(q_codes)[0]
    correlation = time.perf_counter() - start
    result = {"scale": name, "queries": len(q_codes), "database": len(db_codes), "bits": bits,
              "metrics_json_seconds": ranking + correlation, "ranking_pass_seconds": ranking,
              "includes": "tie-aware mAP, mAP@K, P@5000 and P@K curve, by-index mAP, PR curve by radius, "
                          "radius-2 precision, mAC",
              "mAP": scores.mAP, "mAP@K": scores.mAP_at_k, "P@5000": scores.precision_at[5000],
              "mAP_index_ties": scores.mAP_index_ties,
              "mAC_database": mac_db, "mAC_query": mac_q}
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-labels", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    kernel = _kernel()
    start = time.perf_counter()
    evaluate_retrieval(np.ones((2, 8)), np.ones((3, 8)), np.ones((2, 2)), np.ones((3, 2)))  # compile / load
    warmup = time.perf_counter() - start
    cifar = np.eye(10, dtype=np.float32)[np.repeat(np.arange(10), 6000)]
    query = np.zeros(len(cifar), dtype=bool)
    query[np.arange(10) * 6000 + np.arange(100)[:, None]] = True
    table = read_coco_labels(Path(args.coco_labels))
    coco = matrix(table).astype(np.float32)
    coco_query = (table["set"] == "query").to_numpy()
    runs = [measure("cifar10", cifar[query], cifar[~query], 48, None, rng),
            measure("coco", coco[coco_query], coco[~coco_query], 48, 5000, rng)]
    write_result(args.out, {"benchmark": "evaluate", "kernel": f"{kernel.__module__}.{kernel.__name__}",
                            "compile_or_cache_load_seconds": warmup, "runs": runs,
                            "limits": {"metrics_json_seconds": 10, "curves_seconds": 30}})


if __name__ == "__main__":
    main()
