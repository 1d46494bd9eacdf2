"""Serve the `retrain` flow as a scheduled deployment (`retrain/scheduled`) and run its flow runs.

    prefect server start --host 127.0.0.1            # a real server (the temporary one schedules nothing)
    PREFECT_API_URL=http://127.0.0.1:4200/api python flows/serve.py --repo /abs/path/to/checkout

Runs start on the cron schedule (default: 03:00 UTC daily) and when triggered:
    prefect deployment run retrain/scheduled --param profile=tiny
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from retrain import retrain  # noqa: E402

from dsah.retrain import PROFILES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]),
                        help="the DVC/git checkout to retrain in (absolute; default: this one)")
    parser.add_argument("--name", default="scheduled")
    parser.add_argument("--cron", default="0 3 * * *", help="schedule, cron syntax, UTC")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--bits", type=int, nargs="+", default=[12, 24, 32, 48])
    parser.add_argument("--methods", nargs="+", default=["dsah"])
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--git-remote", help="push each promotion's tag to this git remote (name or URL)")
    args = parser.parse_args()
    retrain.serve(
        name=args.name, cron=args.cron, description="Retrain DSAH on a schedule; promote if not worse; publish",
        parameters={"repo": str(Path(args.repo).resolve()), "dataset": args.dataset, "bits": args.bits,
                    "methods": args.methods, "profile": args.profile, "tolerance": args.tolerance,
                    "git_remote": args.git_remote},
    )


if __name__ == "__main__":
    main()
