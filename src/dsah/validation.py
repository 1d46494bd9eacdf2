"""Validate a prepared split table against its retrieval protocol with Great Expectations (GX Core 1.x).

Every check is a GX expectation with a stable name. Checks that need aggregates run on small frames
derived from the table, so GX still makes every decision:

    table          the split table itself (one row per image)
    facts          one row: query count, validation slice counts, image-store dtype/shape/rows
    query_classes  one row per class: how many queries show it (single-label protocols)
    tile_sources   mosaic protocol only: one row per distinct (tile source id, split) pair, so a
                   source id that appears twice was tiled into both query and database mosaics

great_expectations is imported only inside `validate_prepared` (it takes seconds to import), so the
rest of the package, and this module, import without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsah.data.protocols import Protocol
from dsah.data.table import labels_to_matrix
from dsah.io import write_json

MOSAIC = "cifar10-mosaic"


@dataclass
class ValidationResult:
    """Outcome of one validation run: `checks` holds {name, success, details} in report order."""

    success: bool
    checks: list[dict[str, Any]] = field(default_factory=list)

    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"]]

    def summary(self) -> str:
        failed = self.failures()
        head = (f"validation passed: {len(self.checks)} checks" if not failed else
                f"validation FAILED: {len(failed)} of {len(self.checks)} checks")
        return "\n".join([head] + [f"  FAILED {c['name']}: {c['details']}" for c in failed])


def derived_frames(table: pd.DataFrame, protocol: Protocol, store: np.ndarray | None) -> dict[str, pd.DataFrame]:
    """The frames the checks run on. Aggregates are computed here; nothing is judged here."""
    is_query = table["split"].eq("query")
    in_validation = table["validation"].eq(True)
    facts = {
        "queries": int(is_query.sum()),
        "validation_rows": int(in_validation.sum()),
        "validation_in_query": int((in_validation & is_query).sum()),
        "store_present": store is not None,
        "store_dtype": str(store.dtype) if store is not None else "none",
        "store_shape": shape_text(store.shape[1:]) if store is not None else "none",
        "store_rows": int(store.shape[0]) if store is not None else -1,
    }
    frames = {"table": table, "facts": pd.DataFrame([facts])}
    if protocol.queries_per_class is not None:
        # Only well-formed query labels can be counted; malformed ones fail the label checks.
        labels = table.loc[is_query, "labels"].astype(str)
        well_formed = labels[labels.str.fullmatch(f"[01]{{{protocol.label_width}}}")]
        counts = (labels_to_matrix(well_formed).sum(axis=0) if len(well_formed)
                  else np.zeros(protocol.label_width, dtype=np.int64))
        frames["query_classes"] = pd.DataFrame({"queries": counts.astype(np.int64)})  # index = class
    if protocol.name == MOSAIC:
        tiles = table.assign(source=table["image"].astype(str).str.split("|")).explode("source")
        frames["tile_sources"] = tiles[["source", "split"]].drop_duplicates().reset_index(drop=True)
    return frames


def check_list(gxe: Any, protocol: Protocol, validation_size: int,
               table_rows: int) -> list[tuple[str, str, Any, str]]:
    """(name, frame, expectation, expected) for every check, in report order.

    `gxe` is the `great_expectations.expectations` module; `table_rows` the table's actual length,
    which the image store must match row for row.
    """
    rows, queries, width = protocol.rows, protocol.queries, protocol.label_width
    checks = [
        ("row_count", "table", gxe.ExpectTableRowCountToEqual(value=rows), f"{rows} rows"),
        ("split_values", "table", gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["query", "database"]),
         "split in {query, database}"),
        ("query_count", "facts", gxe.ExpectColumnValuesToBeInSet(column="queries", value_set=[queries]),
         f"{queries} queries ({protocol.database} database)"),
        ("id_not_null", "table", gxe.ExpectColumnValuesToNotBeNull(column="id"), "every row has an id"),
        ("id_unique", "table", gxe.ExpectColumnValuesToBeUnique(column="id"), "unique ids"),
        ("image_unique", "table", gxe.ExpectColumnValuesToBeUnique(column="image"),
         "unique image references (none both query and database)"),
        ("labels_binary", "table", gxe.ExpectColumnValuesToMatchRegex(column="labels", regex=r"^[01]+$"),
         "labels of '0'/'1' only"),
        ("label_width", "table", gxe.ExpectColumnValueLengthsToEqual(column="labels", value=width),
         f"{width} label characters"),
        ("labels_nonzero", "table", gxe.ExpectColumnValuesToNotMatchRegex(column="labels", regex=r"^0*$"),
         "at least one class per image"),
        ("validation_count", "facts",
         gxe.ExpectColumnValuesToBeInSet(column="validation_rows", value_set=[validation_size]),
         f"{validation_size} validation rows"),
        ("validation_in_database", "facts",
         gxe.ExpectColumnValuesToBeInSet(column="validation_in_query", value_set=[0]),
         "0 validation rows in the query split"),
    ]
    if protocol.queries_per_class is not None:
        checks.append(("queries_per_class", "query_classes",
                       gxe.ExpectColumnValuesToBeInSet(column="queries", value_set=[protocol.queries_per_class]),
                       f"{protocol.queries_per_class} queries per class"))
    if protocol.name == MOSAIC:
        checks.append(("tile_sources_disjoint", "tile_sources", gxe.ExpectColumnValuesToBeUnique(column="source"),
                       "no tile source in both query and database mosaics"))
    if protocol.image_shape is not None:
        checks += [
            ("store_present", "facts", gxe.ExpectColumnValuesToBeInSet(column="store_present", value_set=[True]),
             "an image store (images.npy)"),
            ("store_dtype", "facts", gxe.ExpectColumnValuesToBeInSet(column="store_dtype", value_set=["uint8"]),
             "uint8"),
            ("store_shape", "facts",
             gxe.ExpectColumnValuesToBeInSet(column="store_shape", value_set=[shape_text(protocol.image_shape)]),
             f"images of {shape_text(protocol.image_shape)}"),
            ("store_rows", "facts", gxe.ExpectColumnValuesToBeInSet(column="store_rows", value_set=[table_rows]),
             f"{table_rows} images, one per table row"),
            ("store_index_unique", "table", gxe.ExpectColumnValuesToBeUnique(column="store_index"),
             "unique store_index"),
            ("store_index_range", "table",
             gxe.ExpectColumnValuesToBeBetween(column="store_index", min_value=0, max_value=table_rows - 1),
             f"store_index in [0, {table_rows})"),
        ]
    return checks


def validate_prepared(table: pd.DataFrame, protocol: Protocol, validation_size: int,
                      store: np.ndarray | None) -> ValidationResult:
    """Run every check on a prepared split table (and its image store) in one ephemeral GX context."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    frames = derived_frames(table, protocol, store)
    checks = check_list(gxe, protocol, validation_size, len(table))

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("prepared")
    outcomes = {}
    for frame_name in dict.fromkeys(frame for _, frame, _, _ in checks):  # first-use order
        expectations = []
        for name, frame, expectation, _ in checks:
            if frame == frame_name:
                expectation.meta = {"check": name}
                expectations.append(expectation)
        batch = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe(frame_name)
        suite = context.suites.add(gx.ExpectationSuite(name=frame_name, expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=frame_name, data=batch, suite=suite))
        run = definition.run(batch_parameters={"dataframe": frames[frame_name]})
        outcomes.update({r.expectation_config.meta["check"]: r for r in run.results})

    report = [{"name": name, "success": bool(outcomes[name].success),
               "details": describe(outcomes[name], frames[frame], expected)}
              for name, frame, _, expected in checks]
    return ValidationResult(success=all(c["success"] for c in report), checks=report)


def describe(outcome: Any, frame: pd.DataFrame, expected: str) -> str:
    """Short 'observed; expected' text from a GX ExpectationValidationResult."""
    info, result = outcome.exception_info or {}, outcome.result or {}
    column = outcome.expectation_config.kwargs.get("column")
    if info.get("raised_exception"):
        observed = f"error: {str(info.get('exception_message')).splitlines()[0][:160]}"
    elif "observed_value" in result:
        observed = f"observed {plain(result['observed_value'])}"
    elif len(frame) == 1 and column in frame:  # a one-row facts frame: show the fact itself
        observed = f"observed {plain(frame[column].iloc[0])}"
    elif result.get("unexpected_count"):
        values = [plain(v) for v in result.get("partial_unexpected_list", [])[:3]]
        where = [plain(v) for v in result.get("partial_unexpected_index_list", [])[:3]]
        observed = (f"{result['unexpected_count']} of {result['element_count']} unexpected, "
                    f"e.g. {values} at index {where}")
    else:
        observed = f"all {result.get('element_count', 0)} ok"
    return f"{observed}; expected {expected}"


def write_report(result: ValidationResult, path: str | Path) -> None:
    """DVC metrics file: booleans and counts at the leaves, plus one details string per check."""
    failed = len(result.failures())
    write_json({
        "success": result.success,
        "checks_passed": len(result.checks) - failed,
        "checks_failed": failed,
        "checks": {c["name"]: c["success"] for c in result.checks},
        "details": {c["name"]: c["details"] for c in result.checks},
    }, path)


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in shape)


def plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so details read `3`, not `np.int64(3)`."""
    return value.item() if isinstance(value, np.generic) else value
