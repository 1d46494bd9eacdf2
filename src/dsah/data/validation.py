"""Validate a prepared split with the project's Great Expectations Data Context (gx/, GX Core 1.x).

The suites are files in gx/expectations/, one per protocol family (a subset or a reduced copy of a
protocol is judged by its family's suite, with its own counts as suite parameters), reviewed in git;
nothing here builds an expectation. This module only shapes the prepared data into the tables the suites read, in a
throwaway SQLite file that gx/great_expectations.yml names through $DSAH_VALIDATION_DB, and runs the
suite's Checkpoint (`validate-<suite>`), which stores the results and builds Data Docs:

    split   the split table, one row per image, plus per-row columns a GX expectation can judge:
            is_query (0/1), validation (0/1), classes_per_image, and class_<name> (0/1) per class
    store   one row per image of the image store: store_row, height, width, channels, dtype
            (empty when there is no store)
    tiles   one row per mosaic tile or scene object: id, source, split (empty unless the images are tiled;
            a scene's empty places are no source)
    skipped one row per image the store build skipped (missing or unreadable): store_index; the split
            table's rows for them are left out of `split`, as every later stage leaves them out

The suites' batch is `split LEFT JOIN store` (the query asset in great_expectations.yml); cross-row
checks (per-class query counts, store rows nobody references, a tile on both sides) are GX column
sums with a row condition or GX's query-based UnexpectedRowsExpectation.

great_expectations is imported only inside `validate_prepared` (it takes seconds to import), so the
rest of the package, and this module, import without it.
"""

from __future__ import annotations

import html
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from dsah.data.table import EMPTY
from dsah.errors import ConfigError, DataError
from dsah.io import atomic_path, write_json

LATEST_PAGE = "latest.html"  # in the Data Docs site: forwards to the newest run's page
DATABASE_ENV = "DSAH_VALIDATION_DB"  # the name gx/great_expectations.yml reads the SQLite path from
CONTEXT_ROOT = Path(__file__).resolve().parents[2] / "gx"  # in a source checkout


@dataclass
class ValidationResult:
    """Outcome of one Checkpoint run: `checks` holds {name, success, details} in the suite's order."""

    protocol: str
    success: bool
    checks: list[dict[str, Any]] = field(default_factory=list)
    data_docs: str | None = None  # the Data Docs site's index.html
    page: str | None = None  # this run's page in it

    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"]]

    def summary(self) -> str:
        failed = self.failures()
        head = (f"validation passed: {len(self.checks)} checks ({self.protocol})" if not failed else
                f"validation FAILED: {len(failed)} of {len(self.checks)} checks ({self.protocol})")
        return "\n".join([head] + [f"  FAILED {c['name']}: {c['details']}" for c in failed])


def class_column(name: str) -> str:
    """`class_<name>` with anything but letters, digits and _ replaced ("traffic light" -> class_traffic_light)."""
    return "class_" + re.sub(r"\W", "_", name)


def validation_tables(table: pd.DataFrame, classes: list[str], store: np.ndarray | None,
                      skipped: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """The tables the suites read. Columns are derived row by row; nothing is judged or counted here."""
    labels = table["labels"].astype(str)
    split = table.assign(is_query=table["split"].eq("query").astype(int),
                         validation=table["validation"].map(lambda v: int(v) if isinstance(v, (bool, np.bool_))
                                                            else v),
                         classes_per_image=labels.str.count("1"))
    for k, name in enumerate(classes):  # a malformed label string simply has no '1' at k
        split[class_column(name)] = labels.str[k].eq("1").astype(int)
    if store is None:
        images = pd.DataFrame({"store_row": pd.Series(dtype=int), "height": pd.Series(dtype=int),
                               "width": pd.Series(dtype=int), "channels": pd.Series(dtype=int),
                               "dtype": pd.Series(dtype=str)})
    else:
        height, width, channels = (list(store.shape[1:4]) + [None, None, None])[:3]  # None: a missing axis
        images = pd.DataFrame({"store_row": np.arange(len(store)), "height": height, "width": width,
                               "channels": channels, "dtype": str(store.dtype)})
    refs = table["image"].astype(str)
    mosaics = refs.str.contains("|", regex=False)
    tiles = (table.loc[mosaics, ["id", "split"]].assign(source=refs[mosaics].str.split("|")).explode("source")
             .reset_index(drop=True))[["id", "source", "split"]]
    tiles = tiles[~tiles["source"].str.startswith(EMPTY)].reset_index(drop=True)
    skipped_rows = pd.DataFrame({"store_index": pd.Series(
        [] if skipped is None else skipped["store_index"].astype(int).tolist(), dtype=int)})
    return {"split": split, "store": images, "tiles": tiles, "skipped": skipped_rows}


def validate_prepared(table: pd.DataFrame, classes: list[str], store: np.ndarray | None, protocol: str,
                      parameters: dict[str, Any], context_root: str | Path = CONTEXT_ROOT,
                      skipped: pd.DataFrame | None = None, suite: str | None = None) -> ValidationResult:
    """Run a suite's Checkpoint (`suite`, default the protocol's name) on a prepared split table and its
    image store. `skipped`: the images the store build skipped (their rows are left out of the table).

    `parameters` are the suite parameters ({"$PARAMETER": name} in the suite file) for this run.
    """
    suite = suite or protocol
    context_root = Path(context_root)
    if not (context_root / "great_expectations.yml").is_file():
        raise DataError(f"{context_root} is not a Great Expectations project (no great_expectations.yml)")
    if not (context_root / "checkpoints" / f"validate-{suite}.json").is_file():
        known = sorted(p.stem.removeprefix("validate-") for p in (context_root / "checkpoints").glob("*.json"))
        raise ConfigError(f"no validation suite {suite!r} (protocol {protocol}) in {context_root}; "
                          f"suites: {', '.join(known)}")
    import great_expectations as gx  # slow import: only here

    with tempfile.TemporaryDirectory(prefix="dsah-validate-") as folder:
        database = Path(folder) / "prepared.sqlite"
        with sqlite3.connect(database) as connection:
            for name, frame in validation_tables(table, classes, store, skipped).items():
                frame.to_sql(name, connection, index=False)
        os.environ[DATABASE_ENV] = str(database)
        context = gx.get_context(mode="file", context_root_dir=str(context_root))
        run = context.checkpoints.get(f"validate-{suite}").run(expectation_parameters=parameters)
        (identifier, suite_result), = run.run_results.items()
        page, = context.get_docs_sites_urls(resource_identifier=identifier, only_if_exists=False)
        index, = context.get_docs_sites_urls()
    checks = [{"name": r.expectation_config.meta.get("check", r.expectation_config.type),
               "success": bool(r.success), "details": describe(r)} for r in suite_result.results]
    order = [e.meta.get("check") for e in context.suites.get(suite_result.suite_name).expectations]
    checks.sort(key=lambda c: order.index(c["name"]) if c["name"] in order else len(order))
    result = ValidationResult(protocol, all(c["success"] for c in checks), checks,
                              data_docs=local_path(index["site_url"]), page=local_path(page["site_url"]))
    if result.data_docs and result.page:
        write_latest_page(Path(result.data_docs).parent / LATEST_PAGE, Path(result.page), result.summary())
    return result


def write_latest_page(path: Path, page: Path, summary: str) -> None:
    """A stable address for the newest run's page (whose own path holds its run time), so the report can
    link it without depending on anything that changes from run to run."""
    target = html.escape(os.path.relpath(page, path.parent))
    with atomic_path(path) as tmp:
        tmp.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Latest validation</title>"
                       f"<meta http-equiv='refresh' content='0; url={target}'></head><body>"
                       f"<p>{html.escape(summary.splitlines()[0])}: <a href='{target}'>{target}</a></p>"
                       "</body></html>")


def describe(outcome: Any) -> str:
    """Short 'observed; expected N (description)' text from a GX ExpectationValidationResult."""
    info, result = outcome.exception_info or {}, outcome.result or {}
    errors = [info] if "raised_exception" in info else list(info.values())
    raised = [e for e in errors if isinstance(e, dict) and e.get("raised_exception")]
    if raised:
        observed = f"error: {str(raised[0].get('exception_message')).splitlines()[0][:160]}"
    elif result.get("unexpected_count"):
        values = [plain(v) for v in result.get("partial_unexpected_list", [])[:3]]
        observed = f"{result['unexpected_count']} of {result.get('element_count', '?')} unexpected, e.g. {values}"
    elif "observed_value" in result:
        observed = f"observed {plain(result['observed_value'])}"
    else:
        observed = f"all {result.get('element_count', 0)} ok"
    bound = expected_bound(outcome.expectation_config.kwargs)
    description = outcome.expectation_config.description
    return f"{observed}; expected {bound} ({description})" if bound else f"{observed}; expected: {description}"


def expected_bound(kwargs: dict[str, Any]) -> str:
    """The number an expectation wanted, its suite parameters substituted ("" where it is no number)."""
    if isinstance(kwargs.get("value"), (int, float)):
        return f"{kwargs['value']:g}"
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if isinstance(low, (int, float)) and low == high:
        return f"{low:g}"
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return f"{low:g} to {high:g}"
    return ""


# An environment variable: when set, the validate stage also copies its per-check file to this path (the
# retrain flow validates in a temporary experiment, whose own copy is gone when it fails).
VALIDATION_RECORD = "DSAH_VALIDATION_RECORD"


def write_report(result: ValidationResult, metrics: str | Path, checks: str | Path) -> None:
    """`metrics`: a DVC metrics file of numbers and booleans only; `checks`: every check's outcome and
    details, and the Data Docs site's index and latest-run page (paths relative to the file), for people
    and flows (not a metric). A run's page renders offline; the site's index needs its CDN scripts."""
    failed = len(result.failures())
    write_json({"success": result.success, "passed": len(result.checks) - failed, "failed": failed}, metrics)
    docs = None
    if result.data_docs:  # stable paths only: the report depends on this file
        site = os.path.relpath(Path(result.data_docs).parent, Path(checks).resolve().parent)
        docs = {"site": f"{site}/index.html", "latest": f"{site}/{LATEST_PAGE}"}
    write_json({"protocol": result.protocol, "success": result.success, "data_docs": docs,
                "checks": result.checks}, checks)


def local_path(url: str | None) -> str | None:
    """A Data Docs file:// URL as a path (None for any other kind of site)."""
    return os.path.normpath(unquote(urlparse(url).path)) if url and url.startswith("file://") else None


def plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so details read `3`, not `np.int64(3)`."""
    return value.item() if isinstance(value, np.generic) else value
