"""Medians of frontier benchmarks (bench/frontier.py) per code length, budget and recipe, and each
recipe's ratios to the first recipe at the same budget (seconds, mAP). Several result files are merged
(e.g. one with every budget and one with more seeds at the default budget); --svg draws mAP against
training seconds, one line per recipe and code length. Reads the JSON only: no torch.

    python bench/frontier_check.py bench/results/frontier_cpu.json bench/results/frontier_seeds_cpu.json \\
        --svg docs/img/frontier_cpu.svg
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("mAP", "val_mAP", "train_seconds", "images_per_second")


def medians(runs: list[dict]) -> dict[tuple, dict[str, float]]:
    """(bits, budget, recipe) -> median mAP, val_mAP, train_seconds and images/s, and the run count."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["bits"], run["budget"], run["recipe"])].append(run)
    return {key: {"runs": len(rows), **{name: statistics.median(r[name] for r in rows) for name in METRICS}}
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


def frontier_svg(table: dict[tuple, dict[str, float]], order: list[str]) -> str:
    sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
    from dsah.evaluation.figures import line_chart

    series = {}
    for bits in sorted({b for b, _, _ in table}):
        for name in order:
            points = sorted((row["train_seconds"], row["mAP"]) for (b, _, n), row in table.items()
                            if b == bits and n == name)
            if points:
                series[f"{name}, {bits} bits"] = ([s for s, _ in points], [m for _, m in points])
    return line_chart(series, "CIFAR-10 mAP against training time (median per budget)",
                      "training seconds (network and code updates)", "mAP (1,000 queries)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--svg", type=Path, help="write the frontier chart here")
    args = parser.parse_args()
    order, runs = merge([json.loads(path.read_text()) for path in args.results])
    table = medians(runs)
    print(f"{'bits':>4} {'budget':>6} {'recipe':<16} {'runs':>4} {'mAP':>6} {'val_mAP':>7} {'seconds':>8} "
          f"{'img/s':>6} {'x seconds':>9} {'x mAP':>6}")
    for bits, budget in sorted({(b, g) for b, g, _ in table}):
        base = next((table[(bits, budget, name)] for name in order if (bits, budget, name) in table), None)
        for name in order:
            row = table.get((bits, budget, name))
            if row is None:
                continue
            print(f"{bits:>4} {budget:>6g} {name:<16} {row['runs']:>4} {row['mAP']:>6.3f} {row['val_mAP']:>7.3f} "
                  f"{row['train_seconds']:>8.1f} {row['images_per_second']:>6.0f} "
                  f"{row['train_seconds'] / base['train_seconds']:>9.2f} {row['mAP'] / base['mAP']:>6.3f}")
    if args.svg:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(frontier_svg(table, order))
        print(f"frontier chart: {args.svg}")


if __name__ == "__main__":
    main()
