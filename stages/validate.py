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
import os
import shutil
import sys
from pathlib import Path

from dsah.config import load_params
from dsah.data.dataset import validation_count
from dsah.data.folder import folder_protocol, label_matrix, locate_folder, read_folder_table
from dsah.data.params import DATASET_PARAMS, ImageSize, ValidationSize
from dsah.data.protocols import PROTOCOLS, Protocol, mosaic_protocol, scenes_protocol, subset_protocol
from dsah.data.checksums import folder_digest
from dsah.data.store import STORE_INFO, open_store, read_skipped
from dsah.data.table import TABLE_FILE, prepared_meta, read_table
from dsah.errors import exit_on_error
from dsah.io import read_json, write_json
from dsah.data.validation import VALIDATION_RECORD, validate_prepared, write_report


def expected_protocol(meta: dict, dataset: str, own) -> Protocol:
    """The protocol the split must follow, from the published facts (dsah.data.protocols) and params.yaml:
    never from the counts of the table being checked. (Which NUS-WIDE protocol applies depends on the
    lists found, so its name comes from prepare; its counts do not.)"""
    if dataset == "cifar10-mosaic":
        return mosaic_protocol(own.queries, own.database, own.grid)
    if dataset == "cifar10-scenes":
        return scenes_protocol(own.queries, own.database)
    if dataset == "folder":  # the user's label table (a source, not prepare's output) says what there is
        path = locate_folder(own.root, own.labels)["labels"].path
        table = read_folder_table(path)
        classes = label_matrix(table, list(own.classes), own.separator, path)[1]
        return folder_protocol(table, own.queries, len(classes))
    base = PROTOCOLS[meta["base_protocol"] if dataset == "nuswide21" else dataset]
    subset = getattr(own, "subset", 0)
    return subset_protocol(base, subset) if subset else base


def suite_parameters(protocol: Protocol, validation_size: int, size: int, skipped, own) -> dict[str, int]:
    """The suite parameters ({"$PARAMETER": name} in gx/expectations/*.json): the numbers params.yaml sets
    (validation size, within its rule for small data; store size, mosaic and subset counts), each less the
    images the store build skipped (skipped.csv, the images stage's own record); the protocol's counts come
    from dsah.data.protocols, never from the table."""
    validation = validation_count(validation_size, protocol.rows - protocol.queries)  # the rule prepare follows
    parameters = {"validation_size": validation - int(skipped["validation"].astype(str).eq("True").sum()),
                  "image_px": size, "rows": protocol.rows - len(skipped),
                  "queries": protocol.queries - int(skipped["split"].eq("query").sum())}
    if protocol.queries_per_class:  # single-label (CIFAR-10 and its subsets); an archive skips no image
        parameters.update(queries_per_class=protocol.queries_per_class)
    if protocol.suite == "cifar10-mosaic":
        parameters.update(tiles=own.grid * own.grid)
    if protocol.suite == "cifar10-scenes":
        parameters.update(places=own.grid * own.grid)
    if protocol.suite == "folder":
        parameters.update(classes=protocol.label_width)
    return parameters


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these): the dataset's own section
    holds the mosaic's sizes and a subset's, which its protocol takes."""
    dataset = params.value("dataset", str)
    return (params.value("prepare.validation_size", ValidationSize), dataset, params.section(f"prepare.{dataset}", DATASET_PARAMS[dataset]),
            params.value(f"images.size.{dataset}", ImageSize))


@exit_on_error("validate")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    parser.add_argument("--images", type=Path, required=True, help="folder written by images (the store)")
    parser.add_argument("--context", type=Path, required=True, help="the Great Expectations project folder (gx)")
    parser.add_argument("--report", type=Path, required=True, help="validation summary (JSON, a DVC metric)")
    parser.add_argument("--checks", type=Path, required=True, help="every check's outcome and details (JSON)")
    parser.add_argument("--passed", type=Path, required=True, help="marker written only when every check passes")
    args = parser.parse_args()
    validation_size, dataset, own, size = read_params(load_params(args.params))

    args.passed.unlink(missing_ok=True)
    meta = prepared_meta(args.prepared, dataset)
    info = read_json(args.images / STORE_INFO, "images")
    store = open_store(args.images) if info.get("available") else None
    skipped = read_skipped(args.images)
    table = read_table(args.prepared / TABLE_FILE)
    table = table[~table["id"].isin(skipped["id"])]  # as every later stage reads it
    protocol = expected_protocol(meta, dataset, own)
    name = f"{meta['protocol']}-less-{len(skipped)}" if len(skipped) else meta["protocol"]
    result = validate_prepared(table, meta["classes"], store, name,
                               suite_parameters(protocol, validation_size, size, skipped, own), args.context,
                               skipped=skipped, suite=protocol.suite)
    write_report(result, args.report, args.checks)
    if record := os.environ.get(VALIDATION_RECORD):  # the retrain flow validates in a temporary experiment
        shutil.copyfile(args.checks, record)
    print(f"validate: {args.report}, {args.checks}; Data Docs: {result.page}")
    if not result.success:
        print(result.summary(), file=sys.stderr)  # one line per failed check
        sys.exit(1)
    digests = {"prepared": folder_digest(args.prepared)[1], "images": folder_digest(args.images)[1]}
    write_json({**digests, "passed": True}, args.passed)
    print(result.summary())


if __name__ == "__main__":
    main()
