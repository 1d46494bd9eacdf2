"""Deploy the `retrain` flow to a Prefect work pool of type `process` (`retrain/pool`); workers run it.

    prefect server start --host 127.0.0.1            # a real server (the temporary one schedules nothing)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/deploy.py --pool dsah                # creates the pool if missing, registers the deployment
    prefect worker start --pool dsah --type process   # on this machine and on any other that joins

Runs start on the cron schedule (default: 03:00 UTC daily) and when triggered:
    prefect deployment run retrain/pool --param profile=tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from dsah.orchestration import RETRAIN_ENTRYPOINT, add_run_arguments, run_parameters

CHECKOUT = Path(__file__).resolve().parents[1]


# Job variables a deployment or a run could set to run another command, elsewhere, with another environment.
REDIRECTING = ("command", "env", "working_dir")


def locked_job_template() -> dict:
    """Prefect's `process` job template without the variables that redirect a run: each flow run runs the
    deployment's flow code with the worker's own environment, whatever job variables a run is given."""
    template = ProcessWorker.get_default_base_job_template()
    for name in REDIRECTING:
        del template["variables"]["properties"][name]
        # Out of the configuration too: a worker merges any `env` job variable into an `env` it finds there.
        del template["job_configuration"][name]
    return template


def ensure_process_pool(name: str) -> None:
    """Create the work pool (type `process`, the locked job template) unless it exists; refuse one whose
    template lets a run redirect itself."""
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=locked_job_template()))
            return
    if pool.type != "process":
        raise SystemExit(f"work pool {name!r} exists with type {pool.type!r}, not 'process'")
    exposed = sorted(set(REDIRECTING) & set(pool.base_job_template.get("variables", {}).get("properties", {})))
    if exposed:
        raise SystemExit(f"work pool {name!r} lets a run set {', '.join(exposed)} (job variables): anyone who can "
                         "trigger a run could run another command or redirect it. Use a new pool name, or "
                         "`prefect work-pool delete` this one and deploy again (docs/orchestration.md)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="dsah", help="the work pool (created, type process, if missing)")
    parser.add_argument("--name", default="pool")
    parser.add_argument("--source", default=str(CHECKOUT),
                        help="where workers get the flow code: a directory every worker has (default: this "
                             "checkout) or a git URL that each run clones (https://..., git@host:org/dsah.git)")
    parser.add_argument("--repo", default=str(CHECKOUT),
                        help="the DVC/git workspace the runs retrain in: an absolute path on the workers "
                             "(default: this checkout)")
    parser.add_argument("--cron", default="0 3 * * *", help="schedule, cron syntax, UTC")
    add_run_arguments(parser, bits=[12, 24, 32, 48])
    args = parser.parse_args()
    if not Path(args.repo).is_absolute():
        parser.error("--repo must be an absolute path: runs start in a directory of the worker's choosing")
    ensure_process_pool(args.pool)
    flow.from_source(source=args.source, entrypoint=RETRAIN_ENTRYPOINT).deploy(
        name=args.name, work_pool_name=args.pool, cron=args.cron, print_next_steps=False, ignore_warnings=True,
        description="Retrain DSAH on a schedule; promote if not worse; publish",
        parameters=run_parameters(args, args.repo),
    )


if __name__ == "__main__":
    main()
