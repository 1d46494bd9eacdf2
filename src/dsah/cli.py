"""The `dsah` command. Each DVC stage script in stages/ is a thin call of one subcommand here."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from dsah import __version__
from dsah.errors import DSAHError


def cmd_prepare(args: argparse.Namespace) -> None:
    """Read the dataset chosen in params.yaml, split it and write the prepared folder."""
    from dsah.config import load_params
    from dsah.data.prepare import prepare, prepare_params, write_prepared

    start = time.perf_counter()
    params = load_params(args.params)
    common, _ = prepare_params(params)
    prepared = prepare(params)
    write_prepared(prepared, args.out, params["split_seed"], common["validation_size"])
    counts = prepared.meta(params["split_seed"], common["validation_size"])["counts"]
    print(f"prepare: {prepared.dataset} ({prepared.protocol.name}) from {prepared.source['name']}: "
          f"{counts['queries']} queries, {counts['database']} database, {counts['validation']} validation "
          f"in {time.perf_counter() - start:.1f} s -> {args.out}")
    for note in prepared.notes:
        print(f"prepare: note: {note}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsah", description="Deep semantic asymmetric hashing.")
    parser.add_argument("--version", action="version", version=f"dsah {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=handler.__doc__.splitlines()[0], description=handler.__doc__)
        sub.set_defaults(handler=handler)
        sub.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        return sub

    add("prepare", cmd_prepare).add_argument(
        "--out", required=True, help="output folder: split.csv, images.npy, meta.json")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except DSAHError as exc:
        sys.exit(f"dsah {args.command}: error: {exc}")


if __name__ == "__main__":
    main()
