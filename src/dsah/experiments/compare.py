"""`dsah compare`: the paper's Tab.1 layout (methods x code lengths) built from DVC experiments.

Only experiments count as runs (a committed baseline row of `dvc exp show` is not one), and only like
runs share a cell: runs are grouped by dataset, protocol, method, code length and every setting that
shapes a result (the params the run's stages read, less the seed and where files are or which device
ran them). Runs differing only in the seed are averaged, shown with n and the standard deviation; any
other difference gives its own row, named by the settings that differ. There is one table set per
dataset and protocol, on the protocol's headline metrics. The paper's published CIFAR-10 rows are set
beside ours for reference, marked as such. Needs dvc (imported in collect_runs only).
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from dsah.config import CLASSIC_METHODS, LAE_METHODS
from dsah.evaluation.figures import line_chart, side_by_side
from dsah.evaluation.markdown import markdown_table
from dsah.io import atomic_path
from dsah.evaluation.paper import NOT_REPRODUCED, PAPER_BITS, PAPER_CIFAR10

METRIC_FILE = "reports/metrics.json"  # the headline numbers: DVC's metrics, exp_show's first columns
# evaluate's whole record (the dataset's protocol, what was trained on what, query-code mAC, counts): no DVC
# metric (strings among them), a git-tracked output read at an experiment's commit.
RECORD_FILE = "reports/evaluation.json"
SCORES = ("mAP", "mAP@5000", "P@5000")
# What a protocol is judged by (METHOD.md §5): CIFAR-10 mAP, COCO mAP and mAP@5000, NUS-WIDE mAP@5000.
HEADLINE = {"cifar10": ("mAP",), "coco": ("mAP", "mAP@5000"), "nuswide21": ("mAP@5000",),
            "nuswide21-reduced": ("mAP@5000",), "cifar10-mosaic": ("mAP", "mAP@5000")}
# Each run's row: its name and revision, what evaluate's record says (mAP_index_ties, backbone and input_px
# since 2026-12-06: empty before), then its seed and settings from the params.
COLUMNS = ("experiment", "rev", "method", "bits", "dataset", "protocol", *SCORES, "mAP_index_ties", "val_mAP",
           "train_seconds", "mAC", "mAC_query", "stand_in", "features", "train_size", "query_pattern_accuracy",
           "codes_per_label_pattern", "query_label_errors", "chance_mAP", "NDCG@1000", "ACG@1000", "backbone", "input_px",
           "seed", "settings")
STAND_IN = "STAND-IN, not a published benchmark"  # said beside a dataset whose runs report stand_in
# The paper's Fig.3: bit correlations of ADSH's and DSAH's codes at 32 bits (another length where 32 did not run).
HEATMAP_FILE = "reports/plots/bit_correlation.png"
FIG3_METHODS, FIG3_BITS = ("adsh", "dsah"), 32
RUN_ROWS = ("branch_base", "branch_commit")  # exp_show's experiments; "baseline" rows are commits or the workspace
# Params that never make two runs unlike: the seed (averaged over), and where data is or what runs it.
NOT_SETTINGS = ("seed",)
NOT_SETTING_ENDINGS = (".archive", ".labels", ".image_root", ".weights", ".device", ".processes", ".batch",
                       ".channels_last")


def metric_value(row: dict[str, Any], name: str) -> Any:
    """exp_show prefixes a column with its file where two files share a name."""
    for key in (f"{METRIC_FILE}:{name}", name):
        if key in row and row[key] is not None:
            return row[key]
    return None


def read_record(repo: str | Path, rev: str | None) -> dict[str, Any]:
    """RECORD_FILE at a commit; {} where it has none (an experiment from before the record, whose
    metrics.json held everything: its exp_show row has those columns)."""
    if not rev:
        return {}
    done = subprocess.run(["git", "show", f"{rev}:./{RECORD_FILE}"], cwd=repo, capture_output=True, text=True,
                          check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def run_values(repo: str | Path, row: dict[str, Any], names) -> dict[str, Any]:
    """What an experiment measured and on what: each name from evaluate's record at the row's commit, else
    from the row (a metric, or the param of that name: dataset, method, bits)."""
    record = read_record(repo, row.get("rev"))
    return {name: record[name] if record.get(name) is not None else metric_value(row, name) for name in names}


PARAM_SECTIONS = ("dataset", "bits", "method", "seed", "split_seed", "prepare", "features", "train_lae",
                  "train_imgnet", "methods", "encode", "evaluate")  # params.yaml's top-level names


def param_values(row: dict[str, Any]) -> dict[str, Any]:
    """params.yaml's values in an exp_show row (a param that shares its name with a metric is prefixed, as
    dataset, bits and method were when the metrics held them)."""
    prefix = "params.yaml:"
    return {key.removeprefix(prefix): value for key, value in row.items()
            if key.startswith(prefix) or (key.split(".")[0] in PARAM_SECTIONS and "/" not in key)}


def run_settings(params: dict[str, Any], method: str, dataset: str) -> dict[str, Any]:
    """The params that shape this run's result: the sections its method's stages read (as dvc.yaml
    tracks them), less the seed and the params that only say where files are or what runs them."""
    sections = ["split_seed", "prepare.validation_size", f"prepare.{dataset}.", "encode.", "evaluate.",
                f"methods.{method}.", "features." if method in CLASSIC_METHODS else "train_imgnet."]
    sections += ["train_lae."] if method in LAE_METHODS else []
    return {key: value for key, value in sorted(params.items())
            if any(key == s or (s.endswith(".") and key.startswith(s)) for s in sections)
            and key not in NOT_SETTINGS and not key.endswith(NOT_SETTING_ENDINGS)}


def collect_runs(repo: str | Path = ".", all_commits: bool = False, names: list[str] | None = None) -> pd.DataFrame:
    """One row per finished experiment with scores; `names`: only these experiments."""
    import dvc.api

    rows = dvc.api.exp_show(repo=str(repo), num=10_000 if all_commits else 1)
    runs = []
    for row in rows:
        if row.get("typ") not in RUN_ROWS or row.get("State") not in (None, "Success"):
            continue  # a commit or the workspace, or an experiment still queued or running
        experiment = row.get("Experiment") or row.get("rev")
        if names is not None and experiment not in names:
            continue
        values = run_values(repo, row, COLUMNS[2:-2])
        if any(values[name] is None for name in ("method", "bits", "mAP")):
            continue
        values["bits"] = int(values["bits"])  # exp_show reads JSON numbers as floats
        params = param_values(row)
        settings = run_settings(params, values["method"], values["dataset"])
        runs.append({"experiment": experiment, "rev": row.get("rev"), **values, "seed": params.get("seed"),
                     "settings": json.dumps(settings, sort_keys=True)})
    return pd.DataFrame(runs, columns=list(COLUMNS))


def experiment_heatmaps(repo: str | Path = ".") -> Callable[[pd.Series], bytes]:
    """Reads a run's bit-correlation heatmap (a git-tracked output of its evaluate stage) at its revision."""
    import dvc.api

    return lambda run: dvc.api.read(HEATMAP_FILE, repo=str(repo), rev=run["rev"], mode="rb")


def kept_heatmaps(read: Callable[[pd.Series], bytes], folder: Path,
                  carried: Sequence[Path] = ()) -> Callable[[pd.Series], bytes]:
    """`read` (e.g. experiment_heatmaps), each heatmap kept in `folder` as <run>.png (its `runs_as`: the
    experiment that trained it) the first time it is read, and read from there after: a study's table
    carried to another machine, where its experiments are not, still draws them. `carried`: the heatmaps
    folders of the tables whose runs were carried (beside their runs.csv), looked in before `read`."""

    def heatmap(run: pd.Series) -> bytes:
        path = folder / f"{run['runs_as']}.png"
        if not path.is_file():
            kept = next((c / path.name for c in carried if (c / path.name).is_file()), None)
            data = kept.read_bytes() if kept else read(run)
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return path.read_bytes()

    return heatmap


def fig3_bits(runs: pd.DataFrame) -> int | None:
    """32 bits where ADSH or DSAH ran at 32, else their longest code; None if neither ran."""
    lengths = {int(b) for b in runs.loc[runs["method"].isin(FIG3_METHODS), "bits"]}
    return FIG3_BITS if FIG3_BITS in lengths else max(lengths, default=None)


def correlation_figure(runs: pd.DataFrame, read_heatmap: Callable[[pd.Series], bytes], bits: int) -> Image.Image:
    """ADSH's and DSAH's database-code bit correlations side by side at one length: a panel per method and
    settings (its lowest seed's run), titled with the mAC of its database and query codes."""
    chosen = labelled(runs[runs["method"].isin(FIG3_METHODS) & (runs["bits"] == bits)])
    panels = []
    for label in row_order(chosen):
        run = chosen[chosen["label"] == label].sort_values("seed").iloc[0]
        heatmap = Image.open(io.BytesIO(read_heatmap(run)))
        seed = "?" if pd.isna(run["seed"]) else int(run["seed"])  # exp_show reads JSON numbers as floats
        panels.append((f"{label}, seed {seed}: mAC {_number(run['mAC'])} (queries "
                       f"{_number(run['mAC_query'])})", heatmap))
    return side_by_side(panels)


def _number(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{float(value):.3f}"


def is_stand_in(runs: pd.DataFrame) -> bool:
    return any(value is True or value == 1 for value in runs["stand_in"])  # NaN where a run did not say


def method_order(methods) -> list[str]:
    """The paper's order: classic methods, then deep ones, DSAH last."""
    order = ["ksh", "sdh", "itq", "fath", "dnnh", "hashnet", "daph", "adsh", "dsah"]
    return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))


# Settings added after runs were made, and the value a run made before them had (what the code did then): a
# run without the key is a run with that value, so carried runs and new ones at the same setting share a row.
IMPLIED = {**{f"methods.{method}.targets": "binary" for method in ("dsah", "adsh", "daph")},
           "prepare.cifar10.subset": 0}


def with_implied(settings: dict[str, Any], method: str, dataset: str) -> dict[str, Any]:
    """A run's settings with the implied ones of its method and dataset filled in, and whole numbers as
    integers (exp_show reads JSON numbers as floats: 0.0 is the 0 a new run states)."""
    owned = (f"methods.{method}.", f"prepare.{dataset}.")
    merged = {**{key: value for key, value in IMPLIED.items() if key.startswith(owned)},
              **{key: value for key, value in settings.items() if not (key in IMPLIED and value in (None, "None"))}}
    return {key: int(value) if isinstance(value, float) and value.is_integer() else value
            for key, value in merged.items()}


def labelled(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of one dataset and protocol with a `label` per method and settings: "dsah (ours)", or, where
    a method ran with several settings, "dsah (ours; train_imgnet.lr=0.001)" naming what differs."""
    labels = {}
    for (method, dataset), chosen in runs.groupby(["method", "dataset"]):
        variants = [with_implied(json.loads(s), method, dataset) for s in dict.fromkeys(chosen["settings"])]
        keys = sorted({k for v in variants for k in v if len({json.dumps(w.get(k)) for w in variants}) > 1})
        for settings, variant in zip(dict.fromkeys(chosen["settings"]), variants):
            differs = ", ".join(f"{k}={variant.get(k)}" for k in keys)
            labels[(method, dataset, settings)] = f"{method} (ours{'; ' + differs if differs else ''})"
    out = runs.copy()
    out["label"] = [labels[key] for key in zip(out["method"], out["dataset"], out["settings"])]
    return out


def row_order(runs: pd.DataFrame) -> list[str]:
    by_method = runs.drop_duplicates("label").set_index("label")["method"]
    order = method_order(set(by_method))
    return sorted(by_method.index, key=lambda label: (order.index(by_method[label]), label))


def cell(values: pd.Series, digits: int) -> str:
    """The mean; with the standard deviation and n where several seeds ran."""
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f} (n={len(values)})"


def comparison(runs: pd.DataFrame, score: str, with_paper: bool = True, digits: int = 3) -> pd.DataFrame:
    """Runs of one dataset and protocol. Rows: methods and settings (ours, then the paper's); columns:
    code lengths; cells: the score over seeds."""
    scored = labelled(runs).dropna(subset=[score]) if not runs.empty else runs
    if scored.empty:
        ours = pd.DataFrame()
    else:
        cells = {(label, bits): cell(group[score].astype(float), digits)
                 for (label, bits), group in scored.groupby(["label", "bits"])}
        ours = pd.Series(cells).unstack()
        ours = ours.reindex(row_order(scored))
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
    runs = labelled(runs)
    rows = {}
    for label in row_order(runs):
        chosen = runs[runs["label"] == label]
        sizes = pd.to_numeric(chosen["train_size"], errors="coerce").dropna()
        rows[label] = {
            "learned from": "; ".join(sorted({str(f) for f in chosen["features"].dropna()})) or "–",
            "training images": "; ".join(str(int(v)) for v in sorted(set(sizes))) or "–"}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["learned from", "training images"])


def plot_comparison(runs: pd.DataFrame, score: str) -> str:
    """SVG: the score against code length, one line per method and settings (mean over seeds)."""
    runs = labelled(runs)
    series = {}
    for label in row_order(runs):
        means = runs[runs["label"] == label].groupby("bits")[score].mean().sort_index()
        series[label] = (list(means.index), list(means.values))
    return line_chart(series, f"{score} by code length", "bits", score, y_range=(0, 1))


def write_comparison(runs: pd.DataFrame, markdown: Path, csv: Path, plot: Path | None = None,
                     read_heatmap: Callable[[pd.Series], bytes] | None = None) -> str:
    """The tables (one set per dataset and protocol), the runs as CSV, a plot per headline metric and, given
    `read_heatmap` (a run's row -> PNG bytes), ADSH's and DSAH's bit correlations side by side."""
    groups = (sorted(runs.groupby(["dataset", "protocol"], dropna=False), key=lambda g: g[0] != ("cifar10", "cifar10"))
              if not runs.empty else [])
    parts = [f"# Comparison: methods x code lengths ({', '.join(str(d) for (d, _), _ in groups) or 'no runs yet'})",
             "", "Ours: finished DVC experiments; one row per method and settings, a cell per code length "
             "(the mean ± standard deviation over seeds, with n, where several seeds ran). A committed pipeline run "
             "(a baseline row of `dvc exp show`) is not counted: run it as an experiment to compare it.", ""]
    if not groups:
        parts += ["No finished experiments yet: `dvc exp run -S bits=24` makes one.", ""]
    figures, images = {}, {}
    for index, ((dataset, protocol), chosen) in enumerate(groups):
        with_paper = protocol == "cifar10"
        scores = list(dict.fromkeys([*HEADLINE.get(protocol, ("mAP",)), "P@5000"]))  # headline first
        parts += [f"## {dataset} (protocol {protocol}){' — ' + STAND_IN if is_stand_in(chosen) else ''}", ""]
        if with_paper:
            parts += ["Paper: the seed's Tab.1 (CIFAR-10, pretrained backbones), for reference.", ""]
        for score in scores:
            parts += [f"### {score}", "", _markdown(comparison(chosen, score, with_paper)), ""]
        parts += ["### Training seconds", "", _markdown(comparison(chosen, "train_seconds", False, digits=0)), "",
                  "### What each method learned from", "", _markdown(setup_table(chosen)), "",
                  "### Bit correlation (mAC: mean |correlation| between bits; lower is less redundant; Fig.3)", "",
                  "Database codes:", "", _markdown(comparison(chosen, "mAC", False)), "",
                  "Query codes:", "", _markdown(comparison(chosen, "mAC_query", False)), ""]
        if plot is not None:
            stem = plot.stem if index == 0 else f"{plot.stem}-{protocol}"
            bits = fig3_bits(chosen)
            if read_heatmap is not None and bits is not None:
                images[plot.with_name(f"{stem}-bit-correlation.png")] = correlation_figure(chosen, read_heatmap, bits)
                parts += [f"Database-code bit correlations at {bits} bits (the paper's Fig.3 is at {FIG3_BITS}):", "",
                          f"![bit correlation]({stem}-bit-correlation.png)", ""]
            for k, score in enumerate(scores):
                name = stem if k == 0 else f"{stem}-{score.replace('@', '').lower()}"
                figures[plot.with_name(f"{name}{plot.suffix}")] = plot_comparison(chosen, score)
    parts += ["## Not reproduced", "", *(f"- {name}: {why}" for name, why in NOT_REPRODUCED.items()), ""]
    for path, svg in figures.items():
        with atomic_path(path) as tmp:
            tmp.write_text(svg)
    for path, image in images.items():
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
    if figures:
        parts += ["## Plots", "", *(f"![{path.stem}]({path.name})" for path in figures), ""]
    text = "\n".join(parts)
    with atomic_path(markdown) as tmp:
        tmp.write_text(text)
    with atomic_path(csv) as tmp:
        runs.to_csv(tmp, index=False)
    return text


def _markdown(table: pd.DataFrame) -> str:
    """A table whose index is the method."""
    return markdown_table(["method", *map(str, table.columns)], [(index, *row) for index, row in table.iterrows()])
