"""`dsah compare`: the paper's Tab.1 layout (methods x code lengths) built from DVC experiments.

Every experiment (and committed baseline) whose reports/metrics.json has a method, a length and scores
contributes; several runs of one method and length are averaged and counted. The tables give mAP,
P@5000 and training seconds, and name what each method learned from (features) and on how many images.
The paper's published CIFAR-10 rows are set beside ours for reference, marked as such. Needs dvc
(imported in collect_runs only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dsah.figures import line_chart
from dsah.io import atomic_path
from dsah.paper import NOT_REPRODUCED, PAPER_BITS, PAPER_CIFAR10

METRIC_FILE = "reports/metrics.json"
SCORES = ("mAP", "P@5000")
COLUMNS = ("experiment", "rev", "method", "bits", "dataset", *SCORES, "train_seconds", "features", "train_size")


def metric_value(row: dict[str, Any], name: str) -> Any:
    """exp_show prefixes a column with its file where two files share a name."""
    for key in (f"{METRIC_FILE}:{name}", name):
        if key in row and row[key] is not None:
            return row[key]
    return None


def collect_runs(repo: str | Path = ".", all_commits: bool = False, names: list[str] | None = None) -> pd.DataFrame:
    """One row per run with scores; `names`: only these experiments."""
    import dvc.api

    rows = dvc.api.exp_show(repo=str(repo), num=10_000 if all_commits else 1)
    runs = []
    for row in rows:
        if row.get("rev") == "workspace":  # mirrors a committed or applied run: counted there
            continue
        if row.get("State") not in (None, "Success"):  # queued or running ones show their baseline's metrics
            continue
        experiment = row.get("Experiment") or row.get("rev")
        if names is not None and experiment not in names:
            continue
        values = {name: metric_value(row, name) for name in COLUMNS[2:]}
        if any(values[name] is None for name in ("method", "bits", "mAP")):
            continue
        values["bits"] = int(values["bits"])  # exp_show reads JSON numbers as floats
        runs.append({"experiment": experiment, "rev": row.get("rev"), **values})
    return pd.DataFrame(runs, columns=list(COLUMNS))


def method_order(methods) -> list[str]:
    """The paper's order: classic methods, then deep ones, DSAH last."""
    order = ["ksh", "sdh", "itq", "fath", "dnnh", "hashnet", "daph", "adsh", "dsah"]
    return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))


def comparison(runs: pd.DataFrame, score: str, with_paper: bool = True, digits: int = 3) -> pd.DataFrame:
    """Rows: methods (ours, then the paper's); columns: code lengths; cells: mean score (runs)."""
    scored = runs.dropna(subset=[score]) if not runs.empty else runs
    if scored.empty:
        ours = pd.DataFrame()
    else:
        grouped = scored.groupby(["method", "bits"])[score].agg(["mean", "count"]).reset_index()
        grouped["cell"] = [f"{m:.{digits}f}" + (f" (n={n})" if n > 1 else "")
                           for m, n in zip(grouped["mean"], grouped["count"])]
        ours = grouped.pivot(index="method", columns="bits", values="cell")
        ours = ours.reindex(method_order(ours.index))
        ours.index = [f"{m} (ours)" for m in ours.index]
    if with_paper:
        paper = pd.DataFrame({bits: [f"{row[k]:.3f}" for row in PAPER_CIFAR10.values()]
                              for k, bits in enumerate(PAPER_BITS)},
                             index=[f"{name} (paper)" for name in PAPER_CIFAR10])
        ours = pd.concat([ours, paper])
    table = ours.reindex(columns=sorted(ours.columns, key=int)).fillna("–")
    table.columns = [f"{c} bits" for c in table.columns]
    return table


def setup_table(runs: pd.DataFrame) -> pd.DataFrame:
    """What each method learned from and on how many database images (Tab.1 must name both)."""
    rows = {}
    for method in method_order(set(runs["method"])):
        chosen = runs[runs["method"] == method]
        sizes = pd.to_numeric(chosen["train_size"], errors="coerce").dropna()
        rows[f"{method} (ours)"] = {
            "learned from": "; ".join(sorted({str(f) for f in chosen["features"].dropna()})) or "–",
            "training images": "; ".join(str(int(v)) for v in sorted(set(sizes))) or "–"}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["learned from", "training images"])


def plot_comparison(runs: pd.DataFrame, score: str) -> str:
    """SVG: the score against code length, one line per method."""
    series = {}
    for method in method_order(set(runs["method"])):
        means = runs[runs["method"] == method].groupby("bits")[score].mean().sort_index()
        series[method] = (list(means.index), list(means.values))
    return line_chart(series, f"{score} by code length", "bits", score, y_range=(0, 1))


def write_comparison(runs: pd.DataFrame, markdown: Path, csv: Path, plot: Path | None = None) -> str:
    datasets = sorted(set(runs["dataset"].dropna())) if not runs.empty else []
    with_paper = datasets in ([], ["cifar10"])
    parts = [f"# Comparison: methods x code lengths ({', '.join(datasets) or 'no runs yet'})", "",
             "Ours: DVC experiments and committed runs (mean over runs where n > 1). Paper: the seed's Tab.1 "
             "(CIFAR-10, pretrained backbones), for reference." if with_paper else
             "Ours: DVC experiments and committed runs (mean over runs where n > 1).", ""]
    for score in SCORES:
        table = comparison(runs, score, with_paper)
        parts += [f"## {score}", "", _markdown(table), ""]
    if not runs.empty:
        parts += ["## Training seconds", "", _markdown(comparison(runs, "train_seconds", False, digits=0)), "",
                  "## What each method learned from", "", _markdown(setup_table(runs)), ""]
    parts += ["## Not reproduced", "", *(f"- {name}: {why}" for name, why in NOT_REPRODUCED.items()), ""]
    if plot is not None and not runs.empty:
        figures = {plot: plot_comparison(runs, "mAP"),
                   plot.with_name(f"{plot.stem}-p5000{plot.suffix}"): plot_comparison(runs, "P@5000")}
        for path, svg in figures.items():
            with atomic_path(path) as tmp:
                tmp.write_text(svg)
        parts += ["## Plots", "", *(f"![{path.stem}]({path.name})" for path in figures), ""]
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
