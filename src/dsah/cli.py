"""The `dsah` command. Each DVC stage script in stages/ is a thin call of one subcommand here."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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


def cmd_validate(args: argparse.Namespace) -> None:
    """Check a prepared folder against its retrieval protocol with Great Expectations.

    The report is written whether or not the checks pass; exit status 1 lists the failed checks.
    """
    from dsah.config import load_params, section
    from dsah.data.prepare import DEFAULTS, prepare_params, protocol_for
    from dsah.data.protocols import get_protocol
    from dsah.data.table import META_FILE, STORE_FILE, TABLE_FILE, open_store, read_meta, read_table
    from dsah.validation import validate_prepared, write_report

    params = load_params(args.params)
    validation_size = prepare_params(params)[0]["validation_size"]
    for name in (TABLE_FILE, META_FILE):
        if not (args.prepared / name).is_file():
            raise DSAHError(f"{args.prepared / name} not found; run the prepare stage first")
    meta = read_meta(args.prepared / META_FILE)
    if meta.get("protocol") == "cifar10-mosaic":  # its sizes are knobs, so they come from params
        mosaic = section(params, "prepare.cifar10-mosaic", DEFAULTS["cifar10-mosaic"])
        protocol = protocol_for("cifar10-mosaic", mosaic)
    else:
        protocol = get_protocol(meta.get("protocol"))
    store = open_store(args.prepared / STORE_FILE) if (args.prepared / STORE_FILE).is_file() else None
    result = validate_prepared(read_table(args.prepared / TABLE_FILE), protocol, validation_size, store)
    write_report(result, args.out)
    print(f"validate: report written to {args.out}")
    if not result.success:
        print(result.summary(), file=sys.stderr)  # one line per failed check
        sys.exit(1)
    print(result.summary())


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
    validate = add("validate", cmd_validate)
    validate.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    validate.add_argument("--out", type=Path, required=True, help="report (JSON, a DVC metric)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except DSAHError as exc:  # bad input: a clear message and exit status 2 (1 means "checks failed")
        print(f"dsah {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
