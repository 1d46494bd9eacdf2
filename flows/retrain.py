"""Prefect flow `retrain`: bring data up to date, run experiments through DVC, promote, publish.

Run once:  python flows/retrain.py --profile tiny --bits 12 24
Schedule:  python flows/serve.py, or on a work pool: python flows/deploy.py (docs/orchestration.md)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from dsah.experiments import commands, promotion
from dsah.orchestration import (
    DATA_TIMEOUT,
    EXPERIMENTS_TIMEOUT,
    WAIT_FOR_WORKSPACE,
    add_run_arguments,
    pin_deployment_settings,
    run_experiments,
    run_parameters,
    update_data,
    workspace_slot,
)


MARKDOWN_KEY, TABLE_KEY = "dsah-retrain-report", "dsah-retrain-metrics"


@task(retries=2, retry_delay_seconds=5)
def read_metrics(repo: Path, names: list[str]) -> list[dict]:
    return commands.experiment_metrics(repo, names)


@task
def promote_if_not_worse(repo: Path, run_id: str, results: list[dict], tolerance: float,
                         git_remote: str | None = None, allow_change: bool = False) -> tuple[dict, str | None]:
    decision = promotion.decide(results, promotion.current_model(repo), tolerance, allow_change)
    tag = None
    if decision.promote:
        tag = promotion.promote(repo, decision, next(r for r in results if r["experiment"] == decision.candidate),
                            run_id, git_remote)
    get_run_logger().info(f"promotion: {decision.candidate} {'promoted' if tag else 'kept out'}: {decision.reason}")
    return dataclasses.asdict(decision), tag


@task
def publish(repo: Path, history: Path, run_id: str, results: list[dict], decision: dict, tag: str | None,
            validation: dict) -> str:
    decided = promotion.Decision(**decision)
    markdown = promotion.run_report(run_id, results, decided, tag, commands.validation_line(repo, validation))
    folder = promotion.write_history(repo, history, run_id, results, decided, markdown, validation)
    index = (folder.parent / "index.md").read_text()
    create_markdown_artifact(key=MARKDOWN_KEY, markdown=markdown + "\n" + index,
                             description=f"DSAH retraining {run_id}: results, promotion, history")
    create_table_artifact(key=TABLE_KEY, table=[{k: r[k] for k in ("experiment", "method", "bits", "dataset",
                                                                   "mAP", "P@5000", "val_mAP")} for r in results],
                          description=f"DSAH retraining {run_id}: metrics per experiment")
    return str(folder)


@flow(name="retrain", log_prints=True)
def retrain(repo: str = ".", dataset: str = "cifar10", bits: list[int] = [12],  # noqa: B006 (Prefect parameters)
            methods: list[str] = ["dsah"], profile: str = "default", tolerance: float = 0.01,  # noqa: B006
            history: str = "history", git_remote: str | None = None, allow_change: bool = False,
            wait_for_workspace: float = WAIT_FOR_WORKSPACE, data_timeout: float = DATA_TIMEOUT,
            experiments_timeout: float = EXPERIMENTS_TIMEOUT) -> str:
    """Retrain DSAH models, promote the best if it is not worse than the serving one, publish the report.

    repo, history, git_remote: fixed by a deployment where it is created; its runs cannot change them.
    git_remote: a git remote (name or URL) that receives the promotion's tag, after the DVC push.
    allow_change: a model of another dataset, protocol or code length may replace the serving one (its
    scores cannot be compared: without this, only a model like the serving one is promoted).
    wait_for_workspace, data_timeout, experiments_timeout: seconds
    (docs/orchestration.md#one-run-per-workspace-and-timeouts)."""
    pin_deployment_settings(retrain.fn, ("repo", "history", "git_remote"))
    plan = commands.plan_experiments(dataset, list(bits), list(methods), profile)  # checked before any wait
    root = Path(repo).resolve()
    with workspace_slot(root, wait_for_workspace):
        # Unique even for runs started in the same second: the time the slot was won + this run's id.
        run_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{str(flow_run.id or 'local')[-6:]}"
        validation = update_data.with_options(timeout_seconds=data_timeout)(root, run_id, dataset)
        names = run_experiments(root, run_id, plan, experiments_timeout)
        results = read_metrics(root, names)
        decision, tag = promote_if_not_worse(root, run_id, results, tolerance, git_remote, allow_change)
        return publish(root, Path(history), run_id, results, decision, tag, validation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".")
    add_run_arguments(parser, bits=[12])
    args = parser.parse_args()
    print(retrain(**run_parameters(args, args.repo)))


if __name__ == "__main__":
    main()
