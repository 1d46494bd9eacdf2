"""Prefect flow `compare`: every method at every code length through DVC experiments, then the paper's
Tab.1 layout (mAP, P@5000, training seconds, what each method learned from) as markdown, CSV and plots.

Run:  python flows/compare.py                      (all 8 methods x 12/24/36/48 bits, default profile)
      python flows/compare.py --methods itq dsah --bits 12 24 --profile tiny
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from dsah.orchestration import (
    DATA_TIMEOUT,
    EXPERIMENTS_TIMEOUT,
    WAIT_FOR_WORKSPACE,
    add_time_arguments,
    pin_deployment_settings,
    run_experiments,
    update_data,
    workspace_slot,
)
from dsah.experiments import commands
from dsah.experiments.compare import collect_runs, experiment_heatmaps, write_comparison
from dsah.config import METHODS

MARKDOWN_KEY = "dsah-comparison"
PAPER_BITS = [12, 24, 36, 48]


@task(retries=2, retry_delay_seconds=5)
def tabulate(repo: Path, names: list[str], out: Path, run_id: str) -> str:
    # Every commit's: the names carry this run's id, and HEAD may have moved while the run went on.
    runs = collect_runs(repo, all_commits=True, names=names)
    missing = sorted(set(names) - set(runs["experiment"]))
    if missing:
        raise commands.CommandError(f"no results for experiments {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    markdown = write_comparison(runs, out / "compare.md", out / "compare.csv", out / "compare.svg",
                                experiment_heatmaps(repo))
    create_markdown_artifact(key=MARKDOWN_KEY, markdown=markdown, description=f"DSAH comparison {run_id}")
    return str(out)


@flow(name="compare", log_prints=True)
def compare(repo: str = ".", dataset: str = "cifar10", bits: list[int] = PAPER_BITS,  # noqa: B006 (Prefect parameters)
            methods: list[str] = list(METHODS), profile: str = "default", out: str = "reports/compare",  # noqa: B006
            wait_for_workspace: float = WAIT_FOR_WORKSPACE, data_timeout: float = DATA_TIMEOUT,
            experiments_timeout: float = EXPERIMENTS_TIMEOUT) -> str:
    """Run every method at every length as DVC experiments and write the comparison table and plots.

    It takes the workspace's slot, shared with the retrain flow: the two never run in one workspace at once.
    Each experiment is a task run of its own, its output streaming into that task's log."""
    pin_deployment_settings(compare.fn, ("repo", "out"))
    plan = commands.plan_experiments(dataset, list(bits), list(methods), profile)  # checked before any wait
    root = Path(repo).resolve()
    with workspace_slot(root, wait_for_workspace):
        run_id = f"cmp-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{str(flow_run.id or 'local')[-6:]}"
        update_data.with_options(timeout_seconds=data_timeout)(root, run_id, dataset)
        names = run_experiments(root, run_id, plan, experiments_timeout)
        folder = root / out / run_id
        return tabulate(root, names, folder, run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--bits", type=int, nargs="+", default=PAPER_BITS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--profile", default="default", choices=sorted(commands.PROFILES))
    parser.add_argument("--out", default="reports/compare", help="folder (in the repo) for one folder per run")
    add_time_arguments(parser)
    args = parser.parse_args()
    print(compare(args.repo, args.dataset, args.bits, args.methods, args.profile, args.out, args.wait_for_workspace,
                  args.data_timeout, args.experiments_timeout))


if __name__ == "__main__":
    main()
