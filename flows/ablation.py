"""Prefect flow `ablation`: which of DSAH's additions to ADSH carries its gain, over training seeds, as DVC
experiments (dsah.ablation says which variants), then a table of paired differences and a plot.

Run:  python flows/ablation.py                                   (CIFAR-10 and the multi-label mosaic
                                                                  stand-in, 12 and 48 bits, seeds 0-2)
      python flows/ablation.py --datasets cifar10 --bits 12 --seeds 0 1 --variants adsh dsah --profile quick

Every experiment's name says what it is (abl-cifar10-12-dsah_no_eta-s1): a run that stopped continues with
the experiments not yet finished; finished ones are never rerun (at this commit; --any-commit also counts
earlier commits' runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import pandas as pd
import yaml
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

sys.path.insert(0, str(Path(__file__).parent))
from retrain import (  # noqa: E402 (the retrain flow's tasks and workspace slot, shared)
    DATA_TIMEOUT,
    EXPERIMENTS_TIMEOUT,
    WAIT_FOR_WORKSPACE,
    add_time_arguments,
    pin_deployment_settings,
    run_named_experiments,
    update_data,
    workspace_slot,
)

from dsah import ablation as study  # noqa: E402
from dsah import retrain as steps  # noqa: E402
from dsah.compare import collect_runs  # noqa: E402

MARKDOWN_KEY = "dsah-ablation"
DATASETS, BITS, SEEDS = ["cifar10", "cifar10-mosaic"], [12, 48], [0, 1, 2]


@task(retries=2, retry_delay_seconds=5)
def finished(repo: Path, names: list[str], any_commit: bool) -> list[str]:
    return list(collect_runs(repo, any_commit, names)["experiment"])


@task
def tabulate(repo: Path, plan: list[dict], any_commit: bool, out: Path, profile: str) -> str:
    planned = pd.DataFrame(plan)
    done = study.results(planned, collect_runs(repo, any_commit, list(planned["experiment"])))
    table = study.summary(done, study.variants(dsah_defaults(repo)))
    hours = done["train_seconds"].sum() / 3600
    budget = (f"{len(done)} of {len(planned)} planned experiments finished; profile `{profile}`; "
              f"{hours:.1f} h of training in all (LAE, network and code updates; data preparation and "
              "evaluation not counted).")
    text = study.markdown(table, "DSAH ablation: which addition to ADSH carries the gain", budget)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(text)
    done.to_csv(out / "runs.csv", index=False)
    table.to_csv(out / "summary.csv", index=False)
    for dataset in dict.fromkeys(done["dataset"]):
        (out / f"ablation-{dataset}.svg").write_text(study.plot(table, dataset))
    create_markdown_artifact(key=MARKDOWN_KEY, markdown=text, description="DSAH ablation")
    return str(out)


def dsah_defaults(repo: Path) -> dict:
    """The repository's own defaults for the four terms: the values a variant switches on."""
    return yaml.safe_load((repo / "params.yaml").read_text())["methods"]["dsah"]


@flow(name="ablation", log_prints=True)
def ablation(repo: str = ".", datasets: list[str] = DATASETS, bits: list[int] = BITS,  # noqa: B006 (Prefect parameters)
             seeds: list[int] = SEEDS, variants: list[str] | None = None, profile: str = "default",  # noqa: B006
             prefix: str = "abl", out: str = "reports/ablation", any_commit: bool = False,
             wait_for_workspace: float = WAIT_FOR_WORKSPACE, data_timeout: float = DATA_TIMEOUT,
             experiments_timeout: float = EXPERIMENTS_TIMEOUT) -> str:
    """Run the ablation's experiments not yet finished, then write the table (reports/ablation/ablation.md,
    with runs.csv, summary.csv and a plot per dataset). Takes the workspace's slot, as retrain and compare do."""
    pin_deployment_settings(ablation.fn, ("repo", "out"))
    root = Path(repo).resolve()
    planned = study.plan(datasets, bits, seeds, profile, dsah_defaults(root), prefix, variants)  # checked first
    with workspace_slot(root, wait_for_workspace):
        done = set(finished(root, list(planned["experiment"]), any_commit))
        todo = planned[~planned["experiment"].isin(done)]
        print(f"{len(done)} of {len(planned)} experiments finished already; running the other {len(todo)}")
        run_id = f"abl-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{str(flow_run.id or 'local')[-6:]}"
        for dataset in dict.fromkeys(todo["dataset"]):
            update_data.with_options(timeout_seconds=data_timeout)(root, f"{run_id}-{dataset}", dataset)
        if len(todo):
            run_named_experiments(root, dict(zip(todo["experiment"], todo["sets"])), experiments_timeout)
        return tabulate(root, planned.to_dict("records"), any_commit, root / out, profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--bits", type=int, nargs="+", default=BITS)
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--variants", nargs="+", help="a subset, by name (default: all nine)")
    parser.add_argument("--profile", default="default", choices=sorted(steps.PROFILES))
    parser.add_argument("--prefix", default="abl", help="experiment names start with it")
    parser.add_argument("--out", default="reports/ablation")
    parser.add_argument("--any-commit", action="store_true", help="count finished runs of earlier commits too")
    add_time_arguments(parser)
    args = parser.parse_args()
    print(ablation(args.repo, args.datasets, args.bits, args.seeds, args.variants, args.profile, args.prefix,
                   args.out, args.any_commit, args.wait_for_workspace, args.data_timeout, args.experiments_timeout))


if __name__ == "__main__":
    main()
