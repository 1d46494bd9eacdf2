"""Medians of a frontier benchmark (bench/frontier.py) per code length, budget and recipe, and each
recipe's ratios to the first recipe at the same budget (seconds, mAP). Reads the JSON only: no torch.

    python bench/frontier_check.py bench/results/frontier_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def medians(runs: list[dict]) -> dict[tuple, dict[str, float]]:
    """(bits, budget, recipe) -> median mAP, val_mAP, train_seconds and images/s, and the run count."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["bits"], run["budget"], run["recipe"])].append(run)
    return {key: {"runs": len(rows), **{name: statistics.median(r[name] for r in rows)
                                        for name in ("mAP", "val_mAP", "train_seconds", "images_per_second")}}
            for key, rows in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    order = list(result["recipes"])
    table = medians(result["runs"])
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


if __name__ == "__main__":
    main()
