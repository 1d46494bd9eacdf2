"""`dsah compare`: the paper's Tab.1 layout (methods x code lengths) built from DVC experiments.

Every experiment (and committed baseline) whose reports/metrics.json has a method, a length and scores
contributes; several runs of one method and length are averaged and counted. The paper's published
CIFAR-10 rows are set beside ours for reference, marked as such. Needs dvc (imported here only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dsah.io import atomic_path
from dsah.paper import PAPER_BITS, PAPER_CIFAR10

METRIC_FILE = "reports/metrics.json"
SCORES = ("mAP", "P@5000")


def metric_value(row: dict[str, Any], name: str) -> Any:
    """exp_show prefixes a column with its file where two files share a name."""
    for key in (f"{METRIC_FILE}:{name}", name):
        if key in row and row[key] is not None:
            return row[key]
    return None


def collect_runs(repo: str | Path = ".", all_commits: bool = False) -> pd.DataFrame:
    import dvc.api

    rows = dvc.api.exp_show(repo=str(repo), num=10_000 if all_commits else 1)
    runs = []
    for row in rows:
        if row.get("rev") == "workspace":  # mirrors a committed or applied run: counted there
            continue
        values = {name: metric_value(row, name) for name in ("method", "bits", "dataset", *SCORES)}
        if any(values[name] is None for name in ("method", "bits", "mAP")):
            continue
        values["bits"] = int(values["bits"])  # exp_show reads JSON numbers as floats
        runs.append({"experiment": row.get("Experiment") or row.get("rev"), "rev": row.get("rev"), **values})
    return pd.DataFrame(runs, columns=["experiment", "rev", "method", "bits", "dataset", *SCORES])


def comparison(runs: pd.DataFrame, score: str, with_paper: bool = True) -> pd.DataFrame:
    """Rows: methods (ours, then the paper's); columns: code lengths; cells: mean score (runs)."""
    if runs.empty:
        ours = pd.DataFrame()
    else:
        grouped = runs.groupby(["method", "bits"])[score].agg(["mean", "count"]).reset_index()
        grouped["cell"] = [f"{m:.3f}" + (f" (n={n})" if n > 1 else "") for m, n in zip(grouped["mean"], grouped["count"])]
        ours = grouped.pivot(index="method", columns="bits", values="cell")
        ours.index = [f"{m} (ours)" for m in ours.index]
    if with_paper:
        paper = pd.DataFrame({bits: [f"{row[k]:.3f}" for row in PAPER_CIFAR10.values()]
                              for k, bits in enumerate(PAPER_BITS)},
                             index=[f"{name} (paper)" for name in PAPER_CIFAR10])
        ours = pd.concat([ours, paper])
    table = ours.reindex(columns=sorted(ours.columns, key=int)).fillna("–")
    table.columns = [f"{c} bits" for c in table.columns]
    return table


def write_comparison(runs: pd.DataFrame, markdown: Path, csv: Path) -> str:
    datasets = sorted(set(runs["dataset"].dropna())) if not runs.empty else []
    with_paper = datasets in ([], ["cifar10"])
    parts = [f"# Comparison: methods x code lengths ({', '.join(datasets) or 'no runs yet'})", "",
             "Ours: DVC experiments and committed runs (mean over runs where n > 1). Paper: the seed's Tab.1 "
             "(CIFAR-10, pretrained backbones), for reference." if with_paper else
             "Ours: DVC experiments and committed runs (mean over runs where n > 1).", ""]
    for score in SCORES:
        table = comparison(runs, score, with_paper)
        parts += [f"## {score}", "", _markdown(table), ""]
    text = "\n".join(parts)
    with atomic_path(markdown) as tmp:
        tmp.write_text(text)
    with atomic_path(csv) as tmp:
        runs.to_csv(tmp, index=False)
    return text


def _markdown(table: pd.DataFrame) -> str:
    header = "| method | " + " | ".join(table.columns) + " |"
    lines = [header, "|---" * (len(table.columns) + 1) + "|"]
    lines += [f"| {index} | " + " | ".join(str(v) for v in row) + " |" for index, row in table.iterrows()]
    return "\n".join(lines)
