"""The validate stage: a valid prepared split passes every Great Expectations check, and each planted
defect fails exactly the check named for it (so unrelated checks keep passing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dsah.data.protocols import CIFAR10_CLASSES, Protocol, mosaic_protocol
from dsah.data.table import labels_to_string, write_store, write_table
from dsah.data.sources import folder_digest
from dsah.io import write_json
from dsah.validation import ValidationResult, validate_prepared, write_report

ROOT = Path(__file__).resolve().parents[1]
TINY = Protocol("tiny", rows=40, queries=10, label_width=5, queries_per_class=2, image_shape=(4, 4, 3))
MOSAIC = dict(queries=4, database=12, grid=2)


@dataclass
class Case:
    table: pd.DataFrame
    store: np.ndarray | None
    protocol: Protocol
    validation_size: int

    def run(self) -> ValidationResult:
        return validate_prepared(self.table, self.protocol, self.validation_size, self.store)


def tiny_case() -> Case:
    """40 single-label images, classes round-robin: queries are rows 0-9 (2 per class), the
    validation slice rows 10-15."""
    rows = [dict(id=f"img{i:03d}", split="query" if i < 10 else "database", validation=10 <= i < 16,
                 labels=labels_to_string(np.arange(5) == i % 5), image=f"images/{i:03d}.png", store_index=i)
            for i in range(TINY.rows)]
    return Case(pd.DataFrame(rows), np.zeros((TINY.rows, 4, 4, 3), np.uint8), TINY, validation_size=6)


def mosaic_case() -> Case:
    """4 query mosaics tiled from 16 CIFAR test images, 12 database mosaics from 30 train images."""
    protocol = mosaic_protocol(**MOSAIC)
    rows = []
    for i in range(protocol.rows):
        query = i < protocol.queries
        sources = ([4 * i + j for j in range(4)] if query else [(4 * i + j) % 30 for j in range(4)])
        classes = np.zeros(len(CIFAR10_CLASSES), bool)
        classes[[s % 10 for s in sources]] = True
        rows.append(dict(id=f"m{i:03d}", split="query" if query else "database",
                         validation=i >= protocol.rows - 3, labels=labels_to_string(classes),
                         image="|".join(f"{'test' if query else 'train'}_{s:05d}" for s in sources),
                         store_index=i))
    return Case(pd.DataFrame(rows), np.zeros((protocol.rows, 64, 64, 3), np.uint8), protocol, validation_size=3)


def failed(result: ValidationResult) -> set[str]:
    return {c["name"] for c in result.failures()}


def set_cell(row: int, column: str, value):
    def plant(case: Case) -> None:
        case.table.loc[row, column] = value
    return plant


def query_row_to_class_1(case: Case) -> None:
    case.table.loc[0, "labels"] = "01000"  # class 0 now has 1 query, class 1 has 3


def extra_query(case: Case) -> None:
    case.table.loc[39, "split"] = "query"  # 11 queries, class 4 has 3


def validation_in_query(case: Case) -> None:
    case.table.loc[0, "validation"] = True  # a query in the validation slice...
    case.table.loc[10, "validation"] = False  # ...with the slice size unchanged


def short_table(case: Case) -> None:
    case.table = case.table.iloc[:-1].copy()
    case.store = case.store[:-1]  # keep the store consistent, so only the count is wrong


def store_as(transform):
    def plant(case: Case) -> None:
        case.store = transform(case.store)
    return plant


# (defect, planting function, the checks it must fail: exactly these)
DEFECTS = [
    ("wrong row count", short_table, {"row_count"}),
    ("unknown split", set_cell(20, "split", "train"), {"split_values"}),
    ("wrong query count", extra_query, {"query_count", "queries_per_class"}),
    ("missing id", set_cell(20, "id", None), {"id_not_null"}),
    ("duplicated id", set_cell(20, "id", "img021"), {"id_unique"}),
    ("image both query and database", set_cell(20, "image", "images/000.png"), {"image_unique"}),
    ("non-01 label character", set_cell(20, "labels", "01x00"), {"labels_binary"}),
    ("wrong label width", set_cell(20, "labels", "000010"), {"label_width"}),
    ("wrong label width on a query", set_cell(0, "labels", "100000"), {"label_width", "queries_per_class"}),
    ("all-zero labels", set_cell(20, "labels", "00000"), {"labels_nonzero"}),
    ("wrong per-class query count", query_row_to_class_1, {"queries_per_class"}),
    ("wrong validation count", set_cell(16, "validation", True), {"validation_count"}),
    ("validation row in query split", validation_in_query, {"validation_in_database"}),
    ("store missing", store_as(lambda s: None), {"store_present", "store_dtype", "store_shape", "store_rows"}),
    ("store wrong dtype", store_as(lambda s: s.astype(np.float32)), {"store_dtype"}),
    ("store wrong image shape", store_as(lambda s: s[:, :3]), {"store_shape"}),
    ("store rows differ from table", store_as(lambda s: s[:-1]), {"store_rows"}),
    ("store_index out of range", set_cell(5, "store_index", 40), {"store_index_range"}),
    ("store_index duplicated", set_cell(5, "store_index", 6), {"store_index_unique"}),
]


def test_valid_tiny_table_passes_every_check():
    result = tiny_case().run()
    assert result.success, result.summary()
    names = [c["name"] for c in result.checks]
    assert names == ["row_count", "split_values", "query_count", "id_not_null", "id_unique", "image_unique",
                     "labels_binary", "label_width", "labels_nonzero", "validation_count",
                     "validation_in_database", "queries_per_class", "store_present", "store_dtype",
                     "store_shape", "store_rows", "store_index_unique", "store_index_range"]
    assert result.failures() == [] and result.summary().startswith("validation passed")


@pytest.mark.parametrize("plant, expected", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_each_planted_defect_fails_its_check(plant, expected):
    case = tiny_case()
    plant(case)
    result = case.run()
    assert not result.success
    assert failed(result) == expected, result.summary()
    for name in expected:
        assert f"FAILED {name}:" in result.summary()


def test_details_say_observed_and_expected():
    case = replace(tiny_case(), validation_size=7)
    details = {c["name"]: c["details"] for c in case.run().checks}
    assert details["validation_count"] == "observed 6; expected 7 validation rows"
    assert details["row_count"] == "observed 40; expected 40 rows"
    case = tiny_case()
    query_row_to_class_1(case)
    # the per-class table is indexed by class: classes 0 and 1 are off
    assert "2 of 5 unexpected, e.g. [1, 3] at index [0, 1]" in failed_details(case.run(), "queries_per_class")


def failed_details(result: ValidationResult, name: str) -> str:
    return next(c["details"] for c in result.failures() if c["name"] == name)


def test_protocol_without_store_or_fixed_class_counts_skips_those_checks():
    case = tiny_case()
    case.protocol = replace(TINY, queries_per_class=None, image_shape=None)
    case.store = None
    result = case.run()
    assert result.success, result.summary()
    assert not {c["name"] for c in result.checks} & {"queries_per_class", "store_present", "store_index_range"}


def test_valid_mosaic_passes_and_tile_leakage_fails():
    case = mosaic_case()
    result = case.run()
    assert result.success, result.summary()
    assert "tile_sources_disjoint" in {c["name"] for c in result.checks}
    # a database mosaic reuses a tile from a query mosaic: the mosaics differ, the source leaks
    tiles = case.table.loc[10, "image"].split("|")
    case.table.loc[10, "image"] = "|".join(["test_00003"] + tiles[1:])
    result = case.run()
    assert failed(result) == {"tile_sources_disjoint"}, result.summary()
    assert "test_00003" in failed_details(result, "tile_sources_disjoint")


def test_report_is_a_dvc_metric(tmp_path):
    case = tiny_case()
    case.table.loc[20, "labels"] = "00000"
    write_report(case.run(), tmp_path / "validation.json")
    report = json.loads((tmp_path / "validation.json").read_text())
    assert set(report) == {"success", "checks_passed", "checks_failed", "checks", "details"}
    assert report["success"] is False and report["checks_failed"] == 1 and report["checks_passed"] == 17
    assert report["checks"]["labels_nonzero"] is False and report["checks"]["id_unique"] is True
    assert all(isinstance(v, bool) for v in report["checks"].values())
    assert all(isinstance(v, str) for v in report["details"].values())


def test_module_imports_without_great_expectations():
    code = "import sys, dsah.validation; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=stage_env())


# --- the stage script, end to end on a prepared folder --------------------------------------------

def stage_env() -> dict[str, str]:
    env = dict(os.environ, GX_ANALYTICS_ENABLED="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def write_prepared(case: Case, folder: Path) -> Path:
    write_table(case.table, folder / "prepared" / "split.csv")
    write_store(case.store, folder / "prepared" / "images.npy")
    write_json({"dataset": "cifar10-mosaic", "protocol": "cifar10-mosaic", "classes": list(CIFAR10_CLASSES)},
               folder / "prepared" / "meta.json")
    params = {"dataset": "cifar10-mosaic", "bits": 12, "method": "dsah", "seed": 0, "split_seed": 0,
              "prepare": {"validation_size": case.validation_size, "cifar10-mosaic": dict(MOSAIC, archive="")}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def run_stage(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "stages/validate.py", "--prepared", str(folder / "prepared"),
         "--params", str(folder / "params.yaml"), "--report", str(folder / "reports" / "validation.json"),
         "--passed", str(folder / "validated.json")],
        cwd=ROOT, env=stage_env(), capture_output=True, text=True, timeout=300)


def test_stage_passes_on_a_valid_folder(tmp_path):
    done = run_stage(write_prepared(mosaic_case(), tmp_path))
    assert done.returncode == 0, done.stderr
    assert "validation passed" in done.stdout
    assert json.loads((tmp_path / "reports" / "validation.json").read_text())["success"] is True
    # The gate for training: the digest of the data that passed, and nothing that changes with the suite.
    assert json.loads((tmp_path / "validated.json").read_text()) == {
        "prepared": folder_digest(tmp_path / "prepared")[1], "passed": True}


def test_stage_fails_with_report_on_a_planted_defect(tmp_path):
    case = mosaic_case()
    case.table.loc[2, "split"] = "database"  # 3 queries where params say 4
    done = run_stage(write_prepared(case, tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED query_count: observed 3; expected 4 queries" in done.stderr
    report = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert report["success"] is False and report["checks"]["query_count"] is False
    assert report["checks"]["row_count"] is True
    assert not (tmp_path / "validated.json").exists()  # no gate marker: nothing downstream may run


def test_stage_names_a_missing_file(tmp_path):
    folder = write_prepared(mosaic_case(), tmp_path)
    (folder / "prepared" / "meta.json").unlink()
    done = run_stage(folder)
    assert done.returncode == 2
    assert "meta.json not found" in done.stderr
    assert not (folder / "reports" / "validation.json").exists()
