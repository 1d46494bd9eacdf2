"""Serve the `retrain` flow as a scheduled deployment (`retrain/scheduled`) and run its flow runs.

    prefect server start --host 127.0.0.1            # a real server (the temporary one schedules nothing)
    PREFECT_API_URL=http://127.0.0.1:4200/api python flows/serve.py --repo /abs/path/to/checkout

Runs start on the cron schedule (default: 03:00 UTC daily) and when triggered:
    prefect deployment run retrain/scheduled --param profile=tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect.flows import load_flow_from_entrypoint

from dsah.orchestration import RETRAIN_ENTRYPOINT, add_run_arguments, run_parameters

CHECKOUT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(CHECKOUT),
                        help="the DVC/git checkout to retrain in (absolute; default: this one)")
    parser.add_argument("--name", default="scheduled")
    parser.add_argument("--cron", default="0 3 * * *", help="schedule, cron syntax, UTC")
    add_run_arguments(parser, bits=[12, 24, 32, 48])
    args = parser.parse_args()
    # The flow as Prefect loads a deployment's: from its file, not by putting flows/ on sys.path.
    retrain = load_flow_from_entrypoint(str(CHECKOUT / RETRAIN_ENTRYPOINT), use_placeholder_flow=False)
    retrain.serve(
        name=args.name, cron=args.cron, description="Retrain DSAH on a schedule; promote if not worse; publish",
        parameters=run_parameters(args, str(Path(args.repo).resolve())),
    )


if __name__ == "__main__":
    main()
