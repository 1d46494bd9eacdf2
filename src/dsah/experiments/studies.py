"""Which of DSAH's settings carry its results, measured over training seeds: the ablation and the sweep.

The ablation: DSAH adds five things to ADSH, each switched off by one value of `methods.dsah` (with all
five off, DSAH's training is ADSH's): the label codes as initial database codes (`init`), the code update's
pull towards them (`lam`), the semantic constraint (`eta`), the decoder constraint (`mu`) and graded
similarity targets (`targets`). A term params.yaml leaves off (today: `targets: binary`) has no rungs.
Its variants are two ladders of `-S` overrides: cumulative from ADSH (+init, +lam, +eta, +mu, +targets, which
is DSAH) and leave-one-out from DSAH. The sweep: one setting at a time around the defaults (SWEEP), each value against
the defaults, chosen by the validation slice's mAP only.

Each variant runs per dataset, code length and training seed as a DVC experiment with a name that says
which, so a run that stopped continues where it stopped. Differences are paired by seed, on one machine:
two runs of a pair share the split, the seed, the processor and every setting but the one switched. No dvc
import here: the flow runs them.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dsah.config import METHODS
from dsah.errors import ConfigError
from dsah.experiments.compare import HEADLINE, method_order
from dsah.evaluation.figures import interval_chart
from dsah.evaluation.markdown import markdown_table
from dsah.experiments.commands import PROFILE_BITS, experiment_overrides

TERMS = ("init", "lam", "eta", "mu", "targets")  # in the order the cumulative ladder adds them
# Each term switched off; init's "off" is ADSH's own start (zeros, as its reference code; "random" before 2026-12-06).
OFF: dict[str, Any] = {"init": "zeros", "lam": 0.0, "eta": 0.0, "mu": 0.0, "targets": "binary"}
WHAT = {"init": "label codes as initial database codes", "lam": "code update's pull towards the label codes",
        "eta": "semantic constraint", "mu": "decoder constraint", "targets": "graded similarity targets"}
# What each experiment's record gives the table (the first four: the numbers the summary compares).
# The rest: what the table study's Tab.1 layout (dsah.experiments.compare) reads, kept so that a carried
# runs.csv draws it too.
VALUES = ("mAP", "mAP@5000", "val_mAP", "train_seconds", "mAP_index_ties", "P@5000", "mAC", "mAC_query", "protocol",
          "method", "backbone", "input_px", "stand_in", "features", "train_size", "settings", "rev",
          "query_pattern_accuracy", "codes_per_label_pattern", "chance_mAP", "NDCG@1000", "ACG@1000",
          "query_label_errors")
# runs.csv leads with these (a run's setting and scores, where and at which commit it ran); the study's own
# bookkeeping (experiment, variant, -S values, runs_as) follows.
RUN_COLUMNS = ("dataset", "protocol", "method", "bits", "seed", "backbone", "input_px", "val_mAP", "mAP",
               "mAP_index_ties", "mAP@5000", "P@5000", "mAC", "mAC_query", "train_seconds", "machine", "commit")
SUMMARY_COLUMNS = ("dataset", "bits", "metric", "n", "diff_mean", "diff_sd", "beyond_2sd", "variant", "label", "mean",
                   "sd", "reference", "pairs")


# The sweep's values, around params.yaml's defaults (a default among them is the `defaults` run itself).
SWEEP: dict[str, tuple[Any, ...]] = {
    "methods.dsah.eta": (0.0, 0.02, 0.065, 0.2, 0.5, 1.0),
    "methods.dsah.mu": (0.0, 0.01, 0.04, 0.15, 0.5),
    # lam >= 0.3 pins B to the label codes exactly (the first 12-bit block: 0.3, 3 and 10 matched 1.0 to
    # the last digit; tests/test_codes.py), so the values that can differ lie below it.
    "methods.dsah.lam": (0.0, 0.01, 0.03, 0.1, 0.3, 1.0),
    "methods.dsah.gamma": (50.0, 100.0, 200.0, 400.0, 800.0),
    "methods.dsah.init": ("label_codes", "zeros", "random"),
    "methods.dsah.targets": ("binary", "graded"),  # the same run as the defaults' on one-hot labels
    "train_lae.alpha": (0.3, 0.5, 1.0, 2.0, 4.0),
}


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any]  # params (dotted) -> value, as `-S` sets them
    reference: str | None  # the variant this one's paired difference is taken against
    label: str
    method: str = "dsah"  # the method it trains: the ablation and the sweep vary DSAH's settings


def ablation_variants(params: Mapping[str, Any]) -> list[Variant]:
    """The ablation's variants, the terms switched on at params.yaml's own values; a term that is off there
    has no rungs (they would only repeat DSAH's run)."""
    on = {term: params["methods"]["dsah"][term] for term in TERMS}
    kept = [term for term in TERMS if on[term] != OFF[term]]
    if not kept:
        raise ConfigError("every one of DSAH's terms is off in params.yaml (DSAH trains as ADSH): nothing to ablate")

    def settings(terms: Mapping[str, Any]) -> dict[str, Any]:  # a term left off stays at params.yaml's value
        return {f"methods.dsah.{term}": value for term, value in terms.items() if term in kept}

    ladder = [Variant("adsh", settings(OFF), None, "ADSH (every term off)")]
    terms = dict(OFF)
    for k, term in enumerate(kept):
        last, terms = k == len(kept) - 1, {**terms, term: on[term]}
        ladder.append(Variant("dsah" if last else f"{ladder[-1].name}_{term}", settings(terms), ladder[-1].name,
                              f"+ {term} ({WHAT[term]})" + (" = DSAH" if last else "")))
    return ladder + [Variant(f"dsah_no_{term}", settings({**on, term: OFF[term]}), "dsah",
                             f"DSAH - {term} ({WHAT[term]})") for term in kept]


def sweep_variants(params: Mapping[str, Any]) -> list[Variant]:
    """The defaults, then each of SWEEP's values other than the default, every one against the defaults."""
    chosen = [Variant("defaults", {}, None, "defaults (params.yaml)")]
    for key, values in SWEEP.items():
        default = _lookup(params, key)
        chosen += [Variant(f"{key.rsplit('.', 1)[1]}_{value}", {key: value}, "defaults", f"{key}={value}")
                   for value in values if value != default]
    return chosen


def _lookup(params: Mapping[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = node[part]
    return node


def paper_variants(params: Mapping[str, Any]) -> list[Variant]:
    """The paper's claim: DSAH against ADSH as published (its own method section: codes start at zeros),
    paired by seed, each at params.yaml's (or the profile's) settings."""
    return [Variant("adsh", {}, None, "ADSH", method="adsh"), Variant("dsah", {}, "adsh", "DSAH")]


def table_variants(params: Mapping[str, Any]) -> list[Variant]:
    """The paper's Tab.1: every method on one network and budget (the profile's), in the paper's order;
    DSAH paired with ADSH as published. A profile may train some methods at some lengths only (PROFILE_BITS)."""
    return [Variant(method, {}, "adsh" if method == "dsah" else None, method.upper(), method=method)
            for method in method_order(METHODS)]


STUDIES = {"ablation": ablation_variants, "sweep": sweep_variants, "paper": paper_variants, "table": table_variants}
# The metric each study's plot shows (None: the headline); the sweep chooses by the validation slice.
PLOTTED = {"ablation": None, "sweep": "val_mAP", "paper": None, "table": None}
# Each study's experiment names start with its own prefix.
PREFIXES = {"ablation": "abl", "sweep": "swp", "paper": "pap", "table": "tab"}
DIFFERENCES_ONLY = {"paper"}  # studies whose summary.csv holds only the paired differences


def variants(study: str, params: Mapping[str, Any]) -> list[Variant]:
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose one of {', '.join(STUDIES)}")
    return STUDIES[study](params)


def experiment_name(prefix: str, dataset: str, bits: int, variant: str, seed: int, profile: str = "default") -> str:
    """tab-cifar10-24-dsah-s0, and -<profile> after it for any profile but the default: finished runs are
    found by name, so one profile's runs never pass for another's at the same commit."""
    return f"{prefix}-{dataset}-{bits}-{variant}-s{seed}" + ("" if profile == "default" else f"-{profile}")


def plan(study: str, datasets: Sequence[str], bits: Sequence[int], seeds: Sequence[int], profile: str,
         params: Mapping[str, Any], only: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per experiment: name, dataset, bits, variant, seed, its `-S` values (checked like any
    experiment's) and `runs_as`, the experiment that trains it: itself, or the first row with the same `-S`
    values (the ablation's `adsh_init_lam_eta` is `dsah_no_mu`; training is deterministic for a seed, so a
    second run would only repeat the first). `only`: a subset of the study's variants, by name. A method the
    profile trains at some lengths only (PROFILE_BITS) has no rows at the others."""
    every = variants(study, params)
    chosen = [v for v in every if only is None or v.name in only]
    if unknown := sorted(set(only or ()) - {v.name for v in chosen}):
        raise ValueError(f"unknown variants {unknown}; choose from {[v.name for v in every]}")
    if not (datasets and bits and seeds and chosen):
        raise ValueError(f"a {study} needs at least one dataset, code length, seed and variant")
    lengths = PROFILE_BITS.get(profile, {})
    rows = [{"experiment": experiment_name(PREFIXES[study], dataset, length, v.name, seed, profile),
             "dataset": dataset, "bits": length, "variant": v.name, "seed": seed,
             "sets": [*experiment_overrides(dataset, v.method, length, profile), f"seed={seed}",
                      *(f"{key}={value}" for key, value in v.overrides.items())]}
            for dataset in datasets for length in bits for seed in seeds for v in chosen
            if length in lengths.get(v.method, (length,))]
    first: dict[tuple[str, ...], str] = {}
    for row in rows:
        row["runs_as"] = first.setdefault(tuple(row["sets"]), row["experiment"])
    return pd.DataFrame(rows)


def to_run(planned: pd.DataFrame, finished: set[str] | frozenset[str]) -> dict[str, list[str]]:
    """The experiments still to train (name -> `-S` values): one per `runs_as` of the rows that neither
    finished themselves (here or carried) nor share a finished run."""
    waiting = planned[~planned["experiment"].isin(finished) & ~planned["runs_as"].isin(finished)]
    trained = waiting.drop_duplicates("runs_as")  # rows that share a run share its -S values too
    return {name: list(sets) for name, sets in zip(trained["runs_as"], trained["sets"])}


# Graded relevance (r: labels shared) tells apart what mAP cannot; on one label per image it is mAP's again.
GRADED = ("NDCG@1000", "ACG@1000")
SINGLE_LABEL = frozenset({"cifar10", "folder"})
BLOCK = ["dataset", "bits", "seed"]  # the runs a paired difference may be taken within (on one machine)
UNRECORDED = "unrecorded"  # the machine of a row written before runs.csv named it


@functools.cache  # the flow asks per table read; the machine does not change within a process
def this_machine() -> str:
    """What a run's numbers depend on besides its settings and seed: the processor (the same settings and
    seed train to other floating-point results on another CPU model, about ±0.015 mAP on CIFAR-10), the
    GPU where there is one, the core count and torch's version. Differences are paired on one machine."""
    import os
    import platform

    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f"{torch.cuda.get_device_name(0)}, " if torch.cuda.is_available() else ""
    return f"{gpu}{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def results(planned: pd.DataFrame, runs: pd.DataFrame, machine: str = UNRECORDED) -> pd.DataFrame:
    """The plan's rows joined with the finished experiments' metrics (dsah.experiments.compare.collect_runs' rows),
    each marked as run on `machine`; a row's metrics are its own experiment's, else those of the run it
    shares (`runs_as`); rows with neither are left out. `sets` becomes JSON text, as runs.csv keeps it."""
    found = runs.set_index("experiment")[[c for c in (*VALUES, "commit") if c in runs.columns]]
    names = set(found.index)
    planned = planned.assign(runs_as=[own if own in names else shared
                                      for own, shared in zip(planned["experiment"], planned["runs_as"])])
    done = planned.join(found, on="runs_as", how="inner")
    return done.assign(sets=[_sets_text(sets) for sets in done["sets"]], machine=machine)


def run_table(done: pd.DataFrame) -> pd.DataFrame:
    """runs.csv: RUN_COLUMNS first (those the rows have), then the study's bookkeeping."""
    leading = [c for c in RUN_COLUMNS if c in done.columns]
    return done[leading + [c for c in done.columns if c not in leading]]


def _sets_text(sets: Sequence[str]) -> str:
    return json.dumps(list(sets))


def carried(planned: pd.DataFrame, previous: pd.DataFrame, machine: str = UNRECORDED,
            references: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """The rows of an earlier table (a study's runs.csv, committed or copied from another machine) that are
    experiments of this plan: the same `-S` values, under the plan's name (the earlier name stays as the row's
    `runs_as`, so one study's runs count for another's: the Tab.1 study's DSAH and ADSH runs are the paper
    study's seed 0). DVC experiments are git refs that a fresh clone does not have, so this is what lets a
    study of many hours continue on another machine.

    Paired differences are taken within a block (dataset, length, seed) run on one machine, so the runs
    compared with each other are carried together from one machine (this one's first) where one finished
    all of them, or else this machine's rows of them; another machine's unfinished ones run again here.
    `references` (variant -> the variant it is compared with, a study's Variant.reference) says which runs
    are compared: a variant, its reference and theirs go together (the Tab.1 study: DSAH with ADSH, each
    other method alone). Without it a whole block goes together."""
    missing = {"experiment", "sets", *VALUES[:1]} - set(previous.columns)
    if missing:
        raise ValueError(f"the earlier table lacks the columns {sorted(missing)}: it is not a study's runs.csv "
                         "(written by the ablation flow since `sets` was added)")
    own = {name: _sets_text(sets) for name, sets in zip(planned["experiment"], planned["sets"])}
    first: dict[str, str] = {}
    for name, sets in own.items():
        first.setdefault(sets, name)
    names = [name if own.get(name) == sets else first.get(sets)
             for name, sets in zip(previous["experiment"], previous["sets"])]
    previous = _with_machine(previous)
    trained_as = previous["runs_as"].fillna(previous["experiment"]) if "runs_as" in previous else previous["experiment"]
    matching = previous.assign(experiment=names, runs_as=trained_as)
    matching = matching[matching["experiment"].notna()]
    matching = matching.assign(variant=matching["experiment"].map(dict(zip(planned["experiment"], planned["variant"]))))
    together = compared_together(planned["variant"].unique(), references)
    planned = planned.assign(together=planned["variant"].map(together))
    matching = matching.assign(together=matching["variant"].map(together))
    sizes = planned.groupby([*BLOCK, "together"]).size()
    kept = []
    for block, rows in matching.groupby([*BLOCK, "together"], sort=False):
        by_machine = dict(list(rows.groupby("machine", sort=False)))
        complete = [m for m, r in by_machine.items() if r["experiment"].nunique() == sizes.get(block, 0)]
        chosen = machine if machine in complete else complete[0] if complete else machine
        if chosen in by_machine:
            kept.append(by_machine[chosen].drop_duplicates("experiment"))
    return (pd.concat(kept) if kept else matching.iloc[:0]).drop(columns="together")


def compared_together(names: Sequence[str], references: Mapping[str, str | None] | None) -> dict[str, str]:
    """Variant -> the first of the variants it is compared with, directly or through others (all one group
    without `references`)."""
    group = {name: name for name in names}

    def root(name: str) -> str:
        while group[name] != name:
            name = group[name]
        return name

    for name in names:
        reference = names[0] if references is None else references.get(name)
        if reference in group:
            group[root(name)] = root(reference)
    return {name: root(name) for name in names}


def _with_machine(rows: pd.DataFrame) -> pd.DataFrame:
    machines = rows["machine"].fillna(UNRECORDED) if "machine" in rows.columns else UNRECORDED
    return rows.assign(machine=machines)


def combined(planned: pd.DataFrame, fresh: pd.DataFrame, earlier: pd.DataFrame) -> pd.DataFrame:
    """This machine's finished rows, then the earlier table's for experiments not finished here, in the
    plan's order."""
    rows = pd.concat([fresh, earlier[~earlier["experiment"].isin(fresh["experiment"])]], ignore_index=True)
    rows = rows.astype({"bits": int, "seed": int})  # an empty earlier table would leave them floats
    # A table written before runs were shared has no runs_as: each of its rows was its own run.
    rows["runs_as"] = rows["runs_as"].fillna(rows["experiment"]) if "runs_as" in rows else rows["experiment"]
    order = {name: k for k, name in enumerate(planned["experiment"])}
    return rows.sort_values("experiment", key=lambda names: names.map(order)).reset_index(drop=True)


def metrics_of(dataset: str) -> tuple[str, ...]:
    """A protocol's headline metrics (multi-label data: mAP and mAP@5000), its graded relevance where an image
    may hold several labels, then the validation slice's mAP."""
    return (*HEADLINE.get(dataset, ("mAP",)), *(() if dataset in SINGLE_LABEL else GRADED), "val_mAP")


def summary(done: pd.DataFrame, all_variants: Sequence[Variant]) -> pd.DataFrame:
    """Per dataset, length, variant and metric: mean and sd over seeds, and the difference from the
    variant's reference paired by seed and machine (mean, sd, pairs, and whether |mean| exceeds two sd). A row
    `dsah_vs_adsh` holds the headline difference."""
    rows = []
    for (dataset, bits), group in _with_machine(done).groupby(["dataset", "bits"], sort=True):
        # A pair: the same seed on the same machine (another CPU trains the same seed to other numbers).
        by_variant = {name: chosen.set_index(["seed", "machine"]) for name, chosen in group.groupby("variant")}
        comparisons = [(v.name, v.reference, v.label) for v in all_variants]
        if ("dsah", "adsh") not in {(v.name, v.reference) for v in all_variants}:  # the paper study has it already
            comparisons.append(("dsah_vs_adsh", "adsh", "DSAH vs ADSH (the paper's claim)"))
        for name, reference, label in comparisons:
            own = by_variant.get("dsah" if name == "dsah_vs_adsh" else name)
            if own is None or (name == "dsah_vs_adsh" and reference not in by_variant):
                continue
            for metric in (m for m in (*metrics_of(dataset), "train_seconds") if m in own):  # older tables lack some
                values = own[metric].astype(float).dropna()
                row = {"dataset": dataset, "bits": int(bits), "variant": name, "label": label, "metric": metric,
                       "n": len(values), "mean": values.mean(), "sd": _sd(values), "reference": reference}
                if reference in by_variant:
                    diffs = (values - by_variant[reference][metric].astype(float)).dropna()
                    row.update(pairs=len(diffs), diff_mean=diffs.mean(), diff_sd=_sd(diffs),
                               beyond_2sd=bool(len(diffs) > 1 and abs(diffs.mean()) > 2 * _sd(diffs)))
                rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _sd(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def markdown(table: pd.DataFrame, title: str, budget: str) -> str:
    """The ablation as markdown: one table per dataset and length, a column pair per headline metric."""
    parts = [f"# {title}", "", budget, "",
             "Each cell: mean ± sd over training seeds (n). Δ: the paired difference (same seed and split) from "
             "the row's reference, mean ± sd over pairs; ** where |mean| exceeds two sd. Cumulative rows "
             "compare with the row above, leave-one-out rows with DSAH.", ""]
    for (dataset, bits), group in table.groupby(["dataset", "bits"], sort=True):
        metrics = [m for m in metrics_of(dataset) if m in set(group["metric"])]
        lines = []
        for variant, rows in group.groupby("variant", sort=False):
            cells = rows.set_index("metric")
            first = cells.iloc[0]
            line = [first["label"], "–" if pd.isna(first["reference"]) else str(first["reference"])]
            for metric in metrics:
                row = cells.loc[metric]
                line += [_cell(row["mean"], row["sd"], row["n"]), _difference(row)]
            line.append(f"{cells.loc['train_seconds', 'mean']:.0f}")
            lines.append(line)
        columns = ["variant", "reference", *(name for m in metrics for name in (m, f"Δ {m}")), "seconds"]
        parts += [f"## {dataset}, {bits} bits", "", markdown_table(columns, lines)]
        validation = group[(group["metric"] == "val_mAP") & (group["variant"] != "dsah_vs_adsh")]
        if len(validation):
            best = validation.loc[validation["mean"].idxmax()]
            parts += ["", f"Highest validation-slice mAP: {best['label']} ({best['mean']:.3f}, n={best['n']})."]
        parts.append("")
    return "\n".join(parts)


def _cell(mean: float, sd: float, n: int) -> str:
    if pd.isna(mean):  # runs recorded before the metric existed
        return "–"
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {sd:.3f} ({n})"


def _difference(row: pd.Series) -> str:
    if pd.isna(row["diff_mean"]):
        return "–"
    text = f"{row['diff_mean']:+.3f}" + ("" if row["pairs"] == 1 else f" ± {row['diff_sd']:.3f}")
    return text + (" **" if row["beyond_2sd"] else "")


def plot(table: pd.DataFrame, dataset: str, metric: str | None = None) -> str:
    """SVG: each variant's paired difference from its reference on `metric` (default: the protocol's first
    headline metric), mean ± sd, one colour per code length."""
    metric = metric or metrics_of(dataset)[0]
    chosen = table[(table["dataset"] == dataset) & (table["metric"] == metric) & table["diff_mean"].notna()]
    def row_name(variant: str, reference: str) -> str:
        return f"{'dsah' if variant == 'dsah_vs_adsh' else variant} vs {reference}"

    rows = list(dict.fromkeys(row_name(v, r) for v, r in zip(chosen["variant"], chosen["reference"])))
    series = {}
    for bits, group in chosen.groupby("bits"):
        points = {row_name(r["variant"], r["reference"]): (r["diff_mean"], r["diff_sd"]) for _, r in group.iterrows()}
        series[f"{bits} bits"] = [points.get(row, (math.nan, math.nan)) for row in rows]
    return interval_chart(rows, series, f"{dataset}: paired difference in {metric} (mean ± sd over seeds)",
                          f"Δ {metric}")
