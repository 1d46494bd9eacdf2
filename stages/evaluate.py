"""DVC stage `evaluate`: retrieval metrics of the query codes against the database codes (METHOD.md §5).

mAP over the whole database, mAP@K, P@5000, precision within Hamming radius 2, mAC; the PR and P@K
curves (DVC plots) and the bit-correlation heatmap. Ranking by Hamming distance; mAP, mAP@K and P@K are
exact expected values under a random order of tied items, mAP_index_ties (ties by database index) a diagnostic.
"""

import argparse
import time
from pathlib import Path

from dsah.codes import load_codes
from dsah.config import load_params
from dsah.data.loading import load_prepared
from dsah.errors import exit_on_error
from dsah.evaluation.evaluate import evaluate, write_outputs
from dsah.io import read_json
from dsah.settings import EvaluateConfig


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these)."""
    return params.value("method", str), params.section("evaluate", EvaluateConfig)


@exit_on_error("evaluate")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    parser.add_argument("--images", type=Path, required=True, help="folder written by images (the store)")
    parser.add_argument("--codes", type=Path, required=True, help="folder written by encode")
    parser.add_argument("--train-metrics", type=Path, required=True, help="train.json (training seconds)")
    parser.add_argument("--record", type=Path, required=True,
                        help="evaluation.json: everything measured and on what (the report reads it)")
    parser.add_argument("--metrics", type=Path, required=True,
                        help="metrics.json: the headline numbers only (DVC metrics, what `dvc exp show` leads with)")
    parser.add_argument("--plots", type=Path, required=True, help="folder for curves (CSV) and the heatmap (PNG)")
    args = parser.parse_args()
    method, options = read_params(load_params(args.params))

    data = load_prepared(args.prepared, args.images)
    query_ids, query_codes = load_codes(args.codes / "query.npz")
    db_ids, db_codes = load_codes(args.codes / "database.npz")
    start = time.perf_counter()
    metrics, scores = evaluate(data, query_ids, query_codes, db_ids, db_codes, options.map_topk)
    seconds = time.perf_counter() - start
    train = read_json(args.train_metrics, "train")
    metrics.update(method=method, train_seconds=train["train_seconds"],
                   **{k: v for k, v in train.items() if k.startswith("val_")},  # the validation slice's scores
                   features=train["features"], train_size=train["train_size"], evaluate_seconds=seconds,
                   **{k: train[k] for k in ("backbone", "input_px") if k in train})  # absent before 2026-12-06
    write_outputs(metrics, scores, db_codes, args.record, args.metrics, args.plots)
    print(f"evaluate: mAP {metrics['mAP']:.4f}, mAP@{options.map_topk} {scores.mAP_at_k:.4f}, "
          f"P@5000 {metrics['P@5000']:.4f}, mAC {metrics['mAC']:.3f} ({seconds:.1f} s)")


if __name__ == "__main__":
    main()
