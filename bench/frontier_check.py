"""Medians of frontier benchmarks (bench/frontier.py) per code length, budget, recipe and method, and each
recipe's ratios to the first recipe at the same budget (seconds, score). Several result files are merged
(e.g. one with every budget and one with more seeds at the default budget); --svg draws the score against
training seconds, one line per recipe, method and code length; --metric val_mAP judges by the validation
slice (what a validation-only run has). Reads the JSON only: no torch.

    python bench/frontier_check.py bench/results/frontier_cpu.json bench/results/frontier_seeds_cpu.json \\
        --svg docs/img/frontier_cpu.svg
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("mAP", "val_mAP", "train_seconds", "images_per_second")


def medians(runs: list[dict]) -> dict[tuple, dict[str, float]]:
    """(bits, budget, recipe, method) -> median mAP (NaN where only the validation slice was scored),
    val_mAP, train_seconds and images/s, and the run count."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["bits"], run["budget"], run["recipe"], run.get("method", "dsah"))].append(run)
    return {key: {"runs": len(rows), **{name: statistics.median(r.get(name, math.nan) for r in rows)
                                        for name in METRICS}}
            for key, rows in groups.items()}


def merge(results: list[dict]) -> tuple[list[str], list[dict]]:
    """Recipe names in first-seen order and all runs; a recipe must mean the same in every file."""
    recipes: dict[str, dict] = {}
    runs: list[dict] = []
    for result in results:
        for name, overrides in result["recipes"].items():
            if recipes.setdefault(name, overrides) != overrides:
                raise SystemExit(f"recipe {name!r} differs between the files: {recipes[name]} vs {overrides}")
        runs.extend(result["runs"])
    return list(recipes), runs


def frontier_svg(table: dict[tuple, dict[str, float]], order: list[str], metric: str = "mAP") -> str:
    sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
    from dsah.evaluation.figures import line_chart

    methods = list(dict.fromkeys(m for _, _, _, m in table))
    series = {}
    for bits in sorted({b for b, _, _, _ in table}):
        for name in order:
            for method in methods:
                points = sorted((row["train_seconds"], row[metric]) for (b, _, n, m), row in table.items()
                                if b == bits and n == name and m == method)
                label = f"{name}, {bits} bits" if len(methods) == 1 else f"{name}, {method}, {bits} bits"
                if points:
                    series[label] = ([s for s, _ in points], [v for _, v in points])
    scored = "1,000 queries" if metric == "mAP" else "validation slice"
    return line_chart(series, f"CIFAR-10 {metric} against training time (median per budget)",
                      "training seconds", f"{metric} ({scored})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--svg", type=Path, help="write the frontier chart here")
    parser.add_argument("--metric", choices=("mAP", "val_mAP"), default="mAP",
                        help="the score the ratios and the chart use (val_mAP: validation-only runs)")
    args = parser.parse_args()
    order, runs = merge([json.loads(path.read_text()) for path in args.results])
    table = medians(runs)
    metric = args.metric
    print(f"{'bits':>4} {'budget':>6} {'recipe':<16} {'runs':>4} {'mAP':>6} {'val_mAP':>7} {'seconds':>8} "
          f"{'img/s':>6} {'x seconds':>9} {'x ' + metric:>9} method")
    for bits, budget, method in sorted({(b, g, m) for b, g, _, m in table}):
        base = next((table[(bits, budget, name, method)] for name in order if (bits, budget, name, method) in table))
        for name in order:
            row = table.get((bits, budget, name, method))
            if row is None:
                continue
            print(f"{bits:>4} {budget:>6g} {name:<16} {row['runs']:>4} {row['mAP']:>6.3f} {row['val_mAP']:>7.3f} "
                  f"{row['train_seconds']:>8.1f} {row['images_per_second']:>6.0f} "
                  f"{row['train_seconds'] / base['train_seconds']:>9.2f} {row[metric] / base[metric]:>9.3f} {method}")
    if args.svg:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(frontier_svg(table, order, metric))
        print(f"frontier chart: {args.svg}")


if __name__ == "__main__":
    main()
