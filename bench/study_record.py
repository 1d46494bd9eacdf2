"""A results folder's record: the runs of several study sittings (flows/ablation.py's runs.csv and summary.csv,
one folder each) as one runs.csv, one row per run, with the columns every record leads with, and one
summary.csv of their paired differences, each row naming its study folder.

Variant names: `dsah` is DSAH at params.yaml's defaults (the sweep calls it `defaults`), `adsh` ADSH with
every DSAH term off; the others are named by what they change. A variant that shares another's run (the
ablation's `dsah_no_mu` is `adsh_init_lam_eta`) is that run's row, not a second one.

    python bench/study_record.py --studies bench/results/multilabel_claim_cpu/targets_quick \\
        bench/results/multilabel_claim_cpu/ladder_quick --out bench/results/multilabel_claim_cpu
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

# What a record leads with (issue 37's columns); the rest of a study's columns follow.
RECORD = ("dataset", "protocol", "chance_mAP", "method", "variant", "bits", "seed", "backbone", "val_mAP", "mAP",
          "mAP_index_ties", "mAP@5000", "NDCG@1000", "ACG@1000", "train_seconds", "machine", "commit")
EXTRA = ("query_label_errors", "profile", "study", "experiment")
RENAMED = {"defaults": "dsah"}  # the sweep's name for DSAH at its defaults


def profile_of(experiment: str) -> str:
    """The profile an experiment's name ends with (dsah.experiments.studies.experiment_name), else `default`."""
    match = re.search(r"-s\d+-([a-z0-9_]+)$", experiment)
    return match.group(1) if match else "default"


def record(folders: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, summary) of the study folders, in the order given."""
    runs, summaries = [], []
    for folder in folders:
        table = pd.read_csv(folder / "runs.csv")
        if "runs_as" in table:  # a row under a second name is the same run again
            table = table[table["runs_as"].fillna(table["experiment"]) == table["experiment"]]
        runs.append(table.assign(variant=table["variant"].replace(RENAMED), study=folder.name,
                                 profile=[profile_of(name) for name in table["experiment"]]))
        if (folder / "summary.csv").exists():
            summary = pd.read_csv(folder / "summary.csv")
            summaries.append(summary.assign(variant=summary["variant"].replace(RENAMED),
                                            reference=summary["reference"].replace(RENAMED), study=folder.name))
    # A column a sitting did not record (query_label_errors before 2026-12-07) stays empty in its rows.
    every = pd.concat(runs, ignore_index=True).reindex(columns=[*RECORD, *EXTRA])
    return every, pd.concat(summaries, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=Path, nargs="+", required=True, help="folders holding a study's runs.csv")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs, summary = record(args.studies)
    args.out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.out / "runs.csv", index=False)
    summary.to_csv(args.out / "summary.csv", index=False)
    print(f"wrote {args.out / 'runs.csv'} ({len(runs)} runs) and summary.csv ({len(summary)} rows)")


if __name__ == "__main__":
    main()
