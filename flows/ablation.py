"""Prefect flow `ablation`: which of DSAH's additions to ADSH carries its gain (--study ablation), or
which value of each setting does best on the validation slice (--study sweep), DSAH against ADSH as
published (--study paper), or the paper's Tab.1, every method at every length (--study table, which also
writes compare.md in Tab.1's layout, with Fig.3's heatmaps), over training seeds, as DVC experiments
(dsah.experiments.studies says which variants), then a table of paired differences and a plot.

Run:  python flows/ablation.py                                   (CIFAR-10 and the multi-label mosaic
                                                                  stand-in, 12 and 48 bits, seeds 0-2)
      python flows/ablation.py --datasets cifar10 --bits 12 --seeds 0 1 --variants adsh dsah --profile quick
      python flows/ablation.py --study sweep --datasets cifar10 --seeds 0
      make compare PROFILE=pretrained     (= --study table --datasets cifar10 --seeds 0 --bits 12 24 32 36 48)

Every experiment's name says what it is (abl-cifar10-12-dsah_no_eta-s1; tab-cifar10-12-dsah-s0-pretrained at a
profile other than the default, so one profile's runs never pass for another's): a run that stopped continues with
the experiments not yet finished; finished ones are never rerun (at this commit; --any-commit also counts
earlier commits' runs); variants with the same -S values share one run. On another machine, where those
experiments are not, --carry an earlier runs.csv: its rows count as finished where their -S values are a
planned experiment's (another study's runs too: the table's seed-0 DSAH and ADSH are the paper study's).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pandas as pd
import yaml
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from dsah.orchestration import (
    DATA_TIMEOUT,
    EXPERIMENTS_TIMEOUT,
    WAIT_FOR_WORKSPACE,
    add_time_arguments,
    pin_deployment_settings,
    run_named_experiments,
    update_data,
    workspace_slot,
)
from dsah.experiments import studies
from dsah.experiments import commands
from dsah.experiments.compare import collect_runs, experiment_heatmaps, kept_heatmaps, write_comparison

DATASETS, BITS, SEEDS = ["cifar10", "cifar10-mosaic"], [12, 48], [0, 1, 2]


@task(retries=2, retry_delay_seconds=5)
def finished(repo: Path, names: list[str], any_commit: bool) -> list[str]:
    return list(collect_runs(repo, any_commit, names)["experiment"])


TITLES = {"ablation": "DSAH ablation: which addition to ADSH carries the gain",
          "sweep": "One setting at a time around the defaults, chosen by the validation slice",
          "paper": "DSAH against ADSH as published, paired by seed",
          "table": "The paper's Tab.1: every method on one network and budget"}


def earlier_table(repo: Path, carry: list[str] | None, planned: pd.DataFrame, study: str) -> pd.DataFrame:
    """The rows of the `carry` files (earlier runs.csv tables, read in turn, the first that holds an
    experiment giving it; relative paths are the repo's) that stand for this plan's experiments; none
    without them."""
    tables = []
    for name in carry or []:
        path = root_path(repo, name)
        if not path.is_file():
            raise FileNotFoundError(f"--carry {name}: no such file ({path}); give a study's runs.csv")
        tables.append(pd.read_csv(path))
    if not tables:
        return pd.DataFrame(columns=["experiment", "sets"])
    references = {v.name: v.reference for v in studies.variants(study, project_params(repo))}
    return studies.carried(planned, pd.concat(tables, ignore_index=True), studies.this_machine(), references)


def root_path(repo: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else repo / path


@task
def tabulate(repo: Path, name: str, plan: list[dict], any_commit: bool, out: Path, profile: str,
             carry: list[str] | None, since: str) -> str:
    planned = pd.DataFrame(plan)
    runs = collect_runs(repo, True, list(planned["experiment"]))  # runs_as names are among them
    # The commit each experiment ran at (its commit's parent), so carried rows say where they come from.
    runs["commit"] = commands.run(repo, "git", "rev-parse", *(f"{r}^" for r in runs["rev"])).split() if len(runs) else []
    if not any_commit:  # this commit's runs: `since` (HEAD when the sitting began) and any commit made during it
        sitting = {since, *commands.run(repo, "git", "rev-list", f"{since}..HEAD").split()}
        runs = runs[runs["commit"].isin(sitting)]
    runs = runs.assign(commit=[sha[:7] for sha in runs["commit"]])
    earlier = earlier_table(repo, carry, planned, name)
    done = studies.combined(planned, studies.results(planned, runs, studies.this_machine()), earlier)
    table = studies.summary(done, studies.variants(name, project_params(repo)))
    hours = done.drop_duplicates(["runs_as", "machine"])["train_seconds"].sum() / 3600  # a shared run once
    from_earlier = int((~done["runs_as"].isin(runs["experiment"])).sum())
    sources = ", ".join(carry or [])
    shared = int(((done["runs_as"] != done["experiment"]) & done["runs_as"].isin(planned["experiment"])).sum())
    budget = (f"{len(done)} of {len(planned)} planned experiments finished"
              f"{f' ({from_earlier} carried from {sources})' if from_earlier else ''}"
              f"{f'; {shared} share the run of a variant with the same settings' if shared else ''}; "
              f"profile `{profile}`; "
              f"{hours:.1f} h of training in all (LAE, network and code updates; data preparation and "
              "evaluation not counted). Ran on: "
              + "; ".join(f"{machine} ({count})" for machine, count in done["machine"].value_counts(sort=False).items())
              + ".")
    text = studies.markdown(table, TITLES[name], budget)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(text)
    studies.run_table(done).to_csv(out / "runs.csv", index=False)
    paired = table[table["reference"].notna()] if name in studies.DIFFERENCES_ONLY else table
    paired.to_csv(out / "summary.csv", index=False)
    for dataset in dict.fromkeys(done["dataset"]):
        (out / f"{name}-{dataset}.svg").write_text(studies.plot(table, dataset, studies.PLOTTED[name]))
    if name == "table":  # the same runs in the paper's layout, with Fig.3's heatmaps kept beside them
        # A carried run's heatmap is kept beside the runs.csv it came from.
        carried = [root_path(repo, runs_csv).parent / "heatmaps" for runs_csv in carry or []]
        write_comparison(done, out / "compare.md", out / "compare.csv", out / "compare.svg",
                         kept_heatmaps(experiment_heatmaps(repo), out / "heatmaps", carried))
    create_markdown_artifact(key=f"dsah-{name}", markdown=text, description=TITLES[name])
    return str(out)


def project_params(repo: Path) -> dict:
    """The repository's own params.yaml: the values the ablation switches on and the sweep varies around."""
    return yaml.safe_load((repo / "params.yaml").read_text())


@flow(name="ablation", log_prints=True)
def ablation(repo: str = ".", study: str = "ablation", datasets: list[str] = DATASETS,  # noqa: B006 (Prefect params)
             bits: list[int] = BITS, seeds: list[int] = SEEDS, variants: list[str] | None = None,  # noqa: B006
             profile: str = "default", out: str = "reports", any_commit: bool = False, carry: list[str] | None = None,
             wait_for_workspace: float = WAIT_FOR_WORKSPACE, data_timeout: float = DATA_TIMEOUT,
             experiments_timeout: float = EXPERIMENTS_TIMEOUT) -> str:
    """Run the study's experiments not yet finished, then write its table (reports/<study>/<study>.md, with
    runs.csv, summary.csv and a plot per dataset), also when some failed or `experiments_timeout` stopped
    them (the run then fails, saying so). `carry`: earlier runs.csv tables whose matching rows count as
    finished (another machine's results). Takes the workspace's slot, as retrain does."""
    pin_deployment_settings(ablation.fn, ("repo", "out"))
    root = Path(repo).resolve()
    planned = studies.plan(study, datasets, bits, seeds, profile, project_params(root), variants)  # checked first
    earlier_table(root, carry, planned, study)  # a wrong --carry fails before any wait
    with workspace_slot(root, wait_for_workspace):
        since = commands.run(root, "git", "rev-parse", "HEAD").strip()
        done = set(finished(root, list(planned["experiment"]), any_commit))
        done |= set(earlier_table(root, carry, planned, study)["experiment"])
        todo = studies.to_run(planned, done)
        waiting = planned[planned["runs_as"].isin(todo)]
        print(f"{len(planned) - len(waiting)} of {len(planned)} experiments finished already; the other "
              f"{len(waiting)} take {len(todo)} runs (variants of the same settings share one)")
        run_id = f"{study}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{str(flow_run.id or 'local')[-6:]}"
        for dataset in dict.fromkeys(waiting["dataset"]):
            update_data.with_options(timeout_seconds=data_timeout)(root, f"{run_id}-{dataset}", dataset)
        stopped = None
        try:
            if todo:
                run_named_experiments(root, todo, experiments_timeout)
        except commands.CommandError as error:  # failed or out of time: the table of what finished, then the failure
            stopped = error
        written = tabulate(root, study, planned.to_dict("records"), any_commit, root / out / study, profile, carry,
                           since)
        if stopped is not None:
            raise stopped
        return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".")
    parser.add_argument("--study", default="ablation", choices=sorted(studies.STUDIES))
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--bits", type=int, nargs="+", default=BITS)
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--variants", nargs="+", help="a subset, by name (default: all of the study's)")
    parser.add_argument("--profile", default="default", choices=sorted(commands.PROFILES))
    parser.add_argument("--out", default="reports", help="folder (in the repo) for one folder per study")
    parser.add_argument("--any-commit", action="store_true", help="count finished runs of earlier commits too")
    parser.add_argument("--carry", metavar="RUNS_CSV", nargs="+",
                        help="earlier runs.csv tables (e.g. committed from another machine, or another study's): "
                             "their rows count as finished where their -S values are a planned experiment's")
    add_time_arguments(parser)
    args = parser.parse_args()
    print(ablation(args.repo, args.study, args.datasets, args.bits, args.seeds, args.variants, args.profile, args.out,
                   args.any_commit, args.carry, args.wait_for_workspace, args.data_timeout, args.experiments_timeout))


if __name__ == "__main__":
    main()
