"""DVC stage `validate`: a Great Expectations suite over the prepared data; the gate before training.

The report (a DVC metric) is written whether or not the checks pass. Only when all pass does it write
the marker every stage that trains or encodes depends on: the prepared data's digest and "passed", so a
failed suite stops `dvc repro train` and `dvc exp run`, and a new check that passes retrains nothing.
Exit status: 0 all checks passed, 1 a check failed (listed on stderr), 2 missing input or bad params.
"""

import argparse
import sys
from pathlib import Path

from dsah.config import load_params
from dsah.data.params import DATASET_PARAMS
from dsah.data.protocols import get_protocol, mosaic_protocol
from dsah.data.sources import folder_digest
from dsah.data.table import META_FILE, STORE_FILE, TABLE_FILE, open_store, read_meta, read_table
from dsah.errors import DataError, exit_on_error
from dsah.io import write_json
from dsah.validation import validate_prepared, write_report


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
    parser.add_argument("--report", type=Path, required=True, help="validation report (JSON, a DVC metric)")
    parser.add_argument("--passed", type=Path, required=True, help="marker written only when every check passes")
    args = parser.parse_args()
    validation_size, dataset, own = read_params(load_params(args.params))

    args.passed.unlink(missing_ok=True)
    for name in (TABLE_FILE, META_FILE):
        if not (args.prepared / name).is_file():
            raise DataError(f"{args.prepared / name} not found; run the prepare stage first")
    meta = read_meta(args.prepared / META_FILE)
    # The mosaic's sizes are knobs, so its expected counts come from params; others are published facts.
    if meta.get("protocol") == "cifar10-mosaic" == dataset:
        protocol = mosaic_protocol(own.queries, own.database, own.grid)
    else:
        protocol = get_protocol(meta.get("protocol"))
    store = open_store(args.prepared / STORE_FILE) if (args.prepared / STORE_FILE).is_file() else None
    result = validate_prepared(read_table(args.prepared / TABLE_FILE), protocol, validation_size, store)
    write_report(result, args.report)
    print(f"validate: report written to {args.report}")
    if not result.success:
        print(result.summary(), file=sys.stderr)  # one line per failed check
        sys.exit(1)
    write_json({"prepared": folder_digest(args.prepared)[1], "passed": True}, args.passed)
    print(result.summary())


if __name__ == "__main__":
    main()
