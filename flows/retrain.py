"""Prefect flow `retrain`: bring data up to date, run experiments through DVC, promote, publish.

Run once:  python flows/retrain.py --profile tiny --bits 12 24
Schedule:  python flows/serve.py, or on a work pool: python flows/deploy.py (docs/orchestration.md)
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from dsah import retrain as steps

MARKDOWN_KEY, TABLE_KEY = "dsah-retrain-report", "dsah-retrain-metrics"


@task(retries=2, retry_delay_seconds=30,  # downloads and remotes can fail transiently; defects cannot
      retry_condition_fn=lambda task, run, state: not isinstance(state.result(raise_on_failure=False),
                                                                     steps.ValidationFailed))
def update_data(repo: Path) -> None:
    get_run_logger().info(steps.update_data(repo).strip() or "data up to date")


@task
def run_experiments(repo: Path, run_id: str, dataset: str, bits: list[int], methods: list[str],
                    profile: str) -> list[str]:
    return steps.run_experiments(repo, run_id, dataset, bits, methods, profile)


@task(retries=2, retry_delay_seconds=5)
def read_metrics(repo: Path, names: list[str]) -> list[dict]:
    return steps.experiment_metrics(repo, names)


@task
def promote_if_not_worse(repo: Path, run_id: str, results: list[dict], tolerance: float,
                         git_remote: str | None = None, allow_change: bool = False) -> tuple[dict, str | None]:
    decision = steps.decide(results, steps.current_model(repo), tolerance, allow_change)
    tag = None
    if decision.promote:
        tag = steps.promote(repo, decision, next(r for r in results if r["experiment"] == decision.candidate),
                            run_id, git_remote)
    get_run_logger().info(f"promotion: {decision.candidate} {'promoted' if tag else 'kept out'}: {decision.reason}")
    return steps.asdict(decision), tag


@task
def publish(repo: Path, history: Path, run_id: str, results: list[dict], decision: dict, tag: str | None) -> str:
    decided = steps.Decision(**decision)
    markdown = steps.run_report(run_id, results, decided, tag, steps.validation_line(repo))
    folder = steps.write_history(repo, history, run_id, results, decided, markdown)
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
            history: str = "history", git_remote: str | None = None, allow_change: bool = False) -> str:
    """Retrain DSAH models, promote the best if it is not worse than the serving one, publish the report.

    git_remote: a git remote (name or URL) that receives the promotion's tag, after the DVC push.
    allow_change: a model of another dataset, protocol or code length may replace the serving one (its
    scores cannot be compared: without this, only a model like the serving one is promoted)."""
    root = Path(repo).resolve()
    with steps.workspace_lock(root):  # two runs at once would fight over dvc.lock and the workspace
        # Unique even for runs started in the same second: the time the lock was won + this run's id.
        run_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{str(flow_run.id or 'local')[-6:]}"
        update_data(root)
        names = run_experiments(root, run_id, dataset, list(bits), list(methods), profile)
        results = read_metrics(root, names)
        decision, tag = promote_if_not_worse(root, run_id, results, tolerance, git_remote, allow_change)
        return publish(root, Path(history), run_id, results, decision, tag)


def add_run_arguments(parser: argparse.ArgumentParser, bits: list[int]) -> None:
    """The flow's parameters as options (this script, the served and the work-pool deployments)."""
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--bits", type=int, nargs="+", default=bits)
    parser.add_argument("--methods", nargs="+", default=["dsah"])
    parser.add_argument("--profile", default="default", choices=sorted(steps.PROFILES))
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--git-remote", help="push each promotion's tag to this git remote (name or URL)")
    parser.add_argument("--allow-change", action="store_true",
                        help="let a model of another dataset, protocol or code length replace the serving one")


def run_parameters(args: argparse.Namespace, repo: str) -> dict:
    return {"repo": repo, "dataset": args.dataset, "bits": args.bits, "methods": args.methods,
            "profile": args.profile, "tolerance": args.tolerance, "git_remote": args.git_remote,
            "allow_change": args.allow_change}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".")
    add_run_arguments(parser, bits=[12])
    args = parser.parse_args()
    print(retrain(**run_parameters(args, args.repo)))


if __name__ == "__main__":
    main()
