"""DVC stage `validate`: the protocol's Great Expectations Checkpoint over the prepared data; the gate
before training.

The suites, validation definitions and Checkpoints are files in gx/ (reviewed in git, deps of this
stage); numbers params.yaml sets are passed as suite parameters. The report (a DVC metric), the
per-check file and the Data Docs are written whether or not the checks pass. Only when all pass does it write
the marker every stage that trains or encodes depends on: the prepared data's digest and "passed", so a
failed suite stops `dvc repro train` and `dvc exp run`, and a new check that passes retrains nothing.
Exit status: 0 all checks passed, 1 a check failed (listed on stderr), 2 missing input or bad params.
"""

import argparse
import sys
from pathlib import Path

from dsah.config import load_params
from dsah.data.params import DATASET_PARAMS
from dsah.data.sources import folder_digest
from dsah.data.table import META_FILE, STORE_FILE, TABLE_FILE, open_store, read_meta, read_table
from dsah.errors import DataError, exit_on_error
from dsah.io import write_json
from dsah.validation import validate_prepared, write_report


def suite_parameters(validation_size: int, dataset: str, own) -> dict[str, int]:
    """The suite parameters ({"$PARAMETER": name} in gx/expectations/*.json) params.yaml sets; the
    mosaic's counts are knobs, while the published protocols' counts are literals in their suites."""
    parameters = {"validation_size": validation_size}
    if dataset == "cifar10-mosaic":
        parameters.update(queries=own.queries, rows=own.queries + own.database, image_px=32 * own.grid,
                          tiles=own.grid * own.grid)
    return parameters


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these): the dataset's own section
    holds the mosaic's sizes, which its protocol takes."""
    dataset = params.value("dataset", str)
    return (params.value("prepare.validation_size", int), dataset,
            params.section(f"prepare.{dataset}", DATASET_PARAMS[dataset]))


@exit_on_error("validate")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    parser.add_argument("--context", type=Path, required=True, help="the Great Expectations project folder (gx)")
    parser.add_argument("--report", type=Path, required=True, help="validation summary (JSON, a DVC metric)")
    parser.add_argument("--checks", type=Path, required=True, help="every check's outcome and details (JSON)")
    parser.add_argument("--passed", type=Path, required=True, help="marker written only when every check passes")
    args = parser.parse_args()
    validation_size, dataset, own = read_params(load_params(args.params))

    args.passed.unlink(missing_ok=True)
    for name in (TABLE_FILE, META_FILE):
        if not (args.prepared / name).is_file():
            raise DataError(f"{args.prepared / name} not found; run the prepare stage first")
    meta = read_meta(args.prepared / META_FILE)
    if meta.get("dataset") != dataset:
        raise DataError(f"{args.prepared} holds {meta.get('dataset')!r} but params.yaml asks for {dataset!r}; "
                        "run the prepare stage first")
    store = open_store(args.prepared / STORE_FILE) if (args.prepared / STORE_FILE).is_file() else None
    result = validate_prepared(read_table(args.prepared / TABLE_FILE), meta["classes"], store, meta["protocol"],
                               suite_parameters(validation_size, dataset, own), args.context)
    write_report(result, args.report, args.checks)
    print(f"validate: {args.report}, {args.checks}; Data Docs: {result.page}")
    if not result.success:
        print(result.summary(), file=sys.stderr)  # one line per failed check
        sys.exit(1)
    write_json({"prepared": folder_digest(args.prepared)[1], "passed": True}, args.passed)
    print(result.summary())


if __name__ == "__main__":
    main()
