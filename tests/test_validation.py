"""The validate stage: the stored Great Expectations suites (gx/) pass a valid prepared split, and each
planted defect fails exactly the checks named for it (so unrelated checks keep passing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dsah.data.protocols import CIFAR10_CLASSES, PROTOCOLS, subset_protocol
from dsah.data.table import labels_to_string, write_table
from dsah.data.checksums import folder_digest
from dsah.io import save_array, write_json
from dsah.data.validation import ValidationResult, validate_prepared, write_report

ROOT = Path(__file__).resolve().parents[1]
MOSAIC = dict(queries=4, database=12, grid=2)
MOSAIC_PARAMETERS = {"validation_size": 1, "queries": 4, "rows": 16, "image_px": 64, "tiles": 4}


@pytest.fixture
def context(tmp_path) -> Path:
    """A copy of the project's GX folder as git has it (no results), so runs leave the checkout alone."""
    shutil.copytree(ROOT / "gx", tmp_path / "gx", ignore=shutil.ignore_patterns("uncommitted"))
    return tmp_path / "gx"


@dataclass
class Case:
    table: pd.DataFrame
    store: np.ndarray | None
    protocol: str
    parameters: dict = field(default_factory=dict)

    def run(self, context: Path) -> ValidationResult:
        return validate_prepared(self.table, list(CIFAR10_CLASSES), self.store, self.protocol, self.parameters,
                                 context)


def mosaic_case() -> Case:
    """4 query mosaics tiled from 16 CIFAR test images, 12 database mosaics from 30 train images; the
    validation slice is the last row (a tenth of the database at most, as prepare makes it)."""
    rows = []
    for i in range(16):
        query = i < 4
        sources = ([4 * i + j for j in range(4)] if query else [(4 * i + j) % 30 for j in range(4)])
        classes = np.zeros(len(CIFAR10_CLASSES), bool)
        classes[[s % 10 for s in sources]] = True
        rows.append(dict(id=f"m{i:03d}", split="query" if query else "database", validation=i >= 15,
                         labels=labels_to_string(classes),
                         image="|".join(f"{'test' if query else 'train'}_{s:05d}" for s in sources),
                         store_index=i))
    return Case(pd.DataFrame(rows), np.zeros((16, 64, 64, 3), np.uint8), "cifar10-mosaic", dict(MOSAIC_PARAMETERS))


def cifar10_case() -> Case:
    """60,000 single-label images, classes round-robin: queries are rows 0-999 (100 per class), the
    validation slice rows 1000-1999."""
    n = 60_000
    index = np.arange(n)
    table = pd.DataFrame({"id": [f"train/{i:05d}" for i in index],
                          "split": np.where(index < 1000, "query", "database"),
                          "validation": (index >= 1000) & (index < 2000),
                          "labels": [labels_to_string(np.arange(10) == i % 10) for i in range(10)] * (n // 10),
                          "image": [f"data_batch_1:{i}" for i in index], "store_index": index})
    return Case(table, np.zeros((n, 32, 32, 3), np.uint8), "cifar10",
                {"validation_size": 1000, "image_px": 32, "rows": n, "queries": 1000, "queries_per_class": 100})


def failed(result: ValidationResult) -> set[str]:
    return {c["name"] for c in result.failures()}


def failed_details(result: ValidationResult, name: str) -> str:
    return next(c["details"] for c in result.failures() if c["name"] == name)


def set_cell(row: int, column: str, value):
    def plant(case: Case) -> None:
        case.table.loc[row, column] = value
    return plant


def validation_in_query(case: Case) -> None:
    case.table.loc[0, "validation"] = True  # a query in the validation slice...
    case.table.loc[15, "validation"] = False  # ...with the slice size unchanged


def short_table(case: Case) -> None:
    case.table = case.table.drop(index=8).reset_index(drop=True)  # a database row outside the slice
    case.table["store_index"] = np.arange(len(case.table))
    case.store = case.store[:-1]  # keep the store consistent, so only the count is wrong


def store_as(transform):
    def plant(case: Case) -> None:
        case.store = transform(case.store)
    return plant


def tile_leak(case: Case) -> None:
    """A database mosaic reuses a tile of a query mosaic: the mosaics differ, the source leaks."""
    tiles = case.table.loc[10, "image"].split("|")
    case.table.loc[10, "image"] = "|".join(["test_00003"] + tiles[1:])


def tile_twice(case: Case) -> None:
    tiles = case.table.loc[10, "image"].split("|")
    case.table.loc[10, "image"] = "|".join([tiles[1]] + tiles[1:])


ALL_CLASSES = "1" * 10

# (defect, planting function, the checks it must fail: exactly these), on the mosaic suite
DEFECTS = [
    ("wrong row count", short_table, {"row_count"}),
    ("unknown split", set_cell(5, "split", "train"), {"split_values"}),
    # a database mosaic turned query: its tiles are also tiles of other database mosaics
    ("wrong query count", set_cell(5, "split", "query"), {"query_count", "tile_sources_disjoint"}),
    ("missing id", set_cell(5, "id", None), {"id_not_null"}),
    ("duplicated id", set_cell(5, "id", "m006"), {"id_unique"}),
    ("image both query and database", set_cell(5, "image", "test_00000|test_00001|test_00002|test_00003"),
     {"image_unique", "tile_sources_disjoint"}),
    ("non-01 label character", set_cell(5, "labels", "01x0000001"), {"labels_binary"}),
    ("wrong label width", set_cell(5, "labels", "10000000001"), {"label_width"}),
    ("all-zero labels", set_cell(5, "labels", "0" * 10), {"labels_nonzero", "classes_per_mosaic"}),
    ("more classes than tiles", set_cell(5, "labels", ALL_CLASSES), {"classes_per_mosaic"}),
    ("wrong validation count", set_cell(5, "validation", True), {"validation_count"}),
    ("validation row in query split", validation_in_query, {"validation_in_database"}),
    ("image reference not tiles", set_cell(5, "image", "train_00005||train_00006"), {"image_tiles"}),
    ("tile in query and database", tile_leak, {"tile_sources_disjoint"}),
    ("tile twice in one mosaic", tile_twice, {"tiles_distinct"}),
    ("store missing", store_as(lambda s: None), {"store_index_in_store"}),
    ("store wrong dtype", store_as(lambda s: s.astype(np.float32)), {"store_dtype"}),
    ("store wrong image size", store_as(lambda s: s[:, :32, :32]), {"store_height"}),
    ("store not square", store_as(lambda s: s[:, :, :32]), {"store_square"}),
    ("store grayscale", store_as(lambda s: s[..., :1]), {"store_channels"}),
    ("store rows fewer than the table", store_as(lambda s: s[:-1]), {"store_index_in_store"}),
    ("store rows more than the table", store_as(lambda s: np.concatenate([s, s[:1]])), {"store_rows"}),
    ("store_index out of range", set_cell(5, "store_index", 16), {"store_index_in_store", "store_rows"}),
    ("store_index duplicated", set_cell(5, "store_index", 6), {"store_index_unique", "store_rows"}),
]


def test_valid_mosaic_passes_every_check(context):
    result = mosaic_case().run(context)
    assert result.success, result.summary()
    names = [c["name"] for c in result.checks]
    assert names == ["row_count", "split_values", "query_count", "id_not_null", "id_unique", "image_unique",
                     "labels_binary", "label_width", "labels_nonzero", "validation_count",
                     "validation_in_database", "image_tiles", "classes_per_mosaic", "tile_sources_disjoint",
                     "tiles_distinct", "store_index_unique", "store_index_in_store", "store_rows", "store_dtype",
                     "store_height", "store_square", "store_channels"]
    assert result.failures() == [] and result.summary().startswith("validation passed: 22 checks")


def coco_case(images: bool = True) -> tuple[pd.DataFrame, np.ndarray | None, dict]:
    """A 200-image COCO subset (8 queries, 30 in the validation slice), 80-wide labels of 1-4 classes,
    with its 64-px store, or labels-only (no store, store_index -1)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        classes = np.zeros(80, bool)
        classes[rng.choice(80, rng.integers(1, 5), replace=False)] = True
        rows.append(dict(id=f"train2014/COCO_train2014_{i:012d}.jpg", split="query" if i < 8 else "database",
                         validation=8 <= i < 38, labels=labels_to_string(classes),
                         image=f"train2014/COCO_train2014_{i:012d}.jpg", store_index=i if images else -1))
    store = np.zeros((200, 64, 64, 3), np.uint8) if images else None
    return pd.DataFrame(rows), store, {"rows": 200, "queries": 8, "validation_size": 30, "image_px": 64}


def run_coco(context: Path, table, store, parameters, skipped=None) -> ValidationResult:
    from dsah.data.coco import COCO_CLASSES

    return validate_prepared(table, list(COCO_CLASSES), store, "coco-subset-200", parameters, context,
                             skipped=skipped, suite="coco")


def test_the_coco_suite_judges_a_subset_with_its_store_and_a_labels_only_run(context):
    table, store, parameters = coco_case()
    result = run_coco(context, table, store, parameters)
    assert result.success, result.summary()
    assert {"labels_per_image_mean", "store_all_or_none", "store_rows"} <= {c["name"] for c in result.checks}
    table, store, parameters = coco_case(images=False)  # labels only: the store checks have no rows to judge
    assert run_coco(context, table, store, parameters).success
    table.loc[3, "store_index"] = 3  # one row with a store row, the others without
    assert failed(run_coco(context, table, store, parameters)) == {"store_all_or_none", "store_index_in_store"}


def test_skipped_images_leave_their_store_rows_unreferenced_and_the_counts_less_them(context):
    table, store, parameters = coco_case()
    skipped = table.iloc[[2, 50]].assign(reason="no such image file")  # a query and a database image
    kept = table.drop(index=[2, 50]).reset_index(drop=True)
    reduced = {**parameters, "rows": 198, "queries": 7}
    assert run_coco(context, kept, store, reduced, skipped).success  # counts and store rows less the skipped
    assert failed(run_coco(context, kept, store, reduced)) == {"store_rows"}  # unlisted: two stray store rows
    assert failed(run_coco(context, kept, store, parameters, skipped)) == {"row_count", "query_count"}
    labels = kept["labels"].copy()
    kept["labels"] = "1" * 80  # every class on every image: a misread label column
    assert "labels_per_image_mean" in failed(run_coco(context, kept, store, reduced, skipped))
    kept["labels"] = labels


@pytest.mark.parametrize("plant, expected", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_each_planted_defect_fails_its_check(context, plant, expected):
    case = mosaic_case()
    plant(case)
    result = case.run(context)
    assert not result.success
    assert failed(result) == expected, result.summary()
    for name in expected:
        assert f"FAILED {name}:" in result.summary()


def test_details_say_observed_and_expected(context):
    case = mosaic_case()
    case.parameters["validation_size"] = 4
    details = {c["name"]: c["details"] for c in case.run(context).checks}
    assert details["validation_count"] == "observed 1; expected 4 (rows in the validation slice, validation_size)"
    assert details["row_count"] == "observed 16; expected 16 (rows, queries and database)"
    case = mosaic_case()
    tile_leak(case)
    result = case.run(context)
    assert failed_details(result, "tile_sources_disjoint").startswith("observed 1;")  # one source leaks
    case = mosaic_case()
    set_cell(5, "labels", "01x0000001")(case)
    assert failed_details(case.run(context), "labels_binary").startswith("1 of 16 unexpected, e.g. ['01x0000001']")


def test_cifar10_suite_passes_the_protocol_and_judges_class_counts(context):
    case = cifar10_case()
    result = case.run(context)
    assert result.success, result.summary()
    assert {f"queries_per_class.{c}" for c in CIFAR10_CLASSES} <= {c["name"] for c in result.checks}
    # One run, three defects, each failing its own checks only.
    case.table.loc[0, "labels"] = labels_to_string(np.arange(10) == 1)  # an airplane query now shows a car
    case.table.loc[5000, "labels"] = "1100000000"  # a database image with two classes
    case.table.loc[7000, "id"] = "valid/07000"
    result = case.run(context)
    assert failed(result) == {"queries_per_class.airplane", "queries_per_class.automobile", "single_label",
                              "id_format"}, result.summary()
    assert failed_details(result, "queries_per_class.airplane") == (
        "observed 99; expected 100 (queries showing airplane)")


def test_editing_a_stored_suite_file_changes_the_outcome(context):
    """The suite is read from its file, not rebuilt in code."""
    assert mosaic_case().run(context).success
    path = context / "expectations" / "cifar10-mosaic.json"
    suite = json.loads(path.read_text())
    width = next(e for e in suite["expectations"] if e["meta"]["check"] == "label_width")
    width["kwargs"]["value"] = 11
    path.write_text(json.dumps(suite, indent=2))
    result = mosaic_case().run(context)
    assert failed(result) == {"label_width"}
    assert failed_details(result, "label_width").startswith("16 of 16 unexpected")


def suite(protocol: str) -> dict[str, dict]:
    expectations = json.loads((ROOT / "gx" / "expectations" / f"{protocol}.json").read_text())["expectations"]
    return {e["meta"]["check"]: e["kwargs"] for e in expectations}


def test_the_cifar10_suite_takes_its_counts_per_class_as_parameters(context):
    """The counts of CIFAR-10 and its subsets (prepare.cifar10.subset) come from dsah.data.protocols through
    the validate stage; one query class short of a subset's count fails that class's check."""
    checks = suite("cifar10")
    assert checks["label_width"]["value"] == PROTOCOLS["cifar10"].label_width
    per_class = {k: v for k, v in checks.items() if k.startswith("queries_per_class.")}
    assert len(per_class) == PROTOCOLS["cifar10"].label_width
    assert all(v["min_value"] == v["max_value"] == {"$PARAMETER": "queries_per_class"} for v in per_class.values())
    assert checks["store_height"]["min_value"] == {"$PARAMETER": "image_px"} and "store_square" in checks
    subset = subset_protocol(PROTOCOLS["cifar10"], 600)  # 60 per class, 1 query each
    case = cifar10_case()
    keep = np.r_[0:10, 1000:1590]  # queries 0-9 (a class each), then 590 database images in class order
    case.table = case.table.iloc[keep].reset_index(drop=True)
    case.table["validation"] = np.arange(600) >= 590
    case.table["store_index"] = np.arange(600)
    case.store = case.store[:600]
    case.parameters = {"validation_size": 10, "image_px": 32, "rows": subset.rows, "queries": subset.queries,
                       "queries_per_class": subset.queries_per_class}
    assert case.run(context).success
    case.table.loc[9, "split"] = "database"  # truck has no query left
    case.table.loc[9, "validation"] = False
    case.table.loc[20, ["split", "validation"]] = ["query", False]  # a second airplane query instead
    assert failed(case.run(context)) == {"queries_per_class.airplane", "queries_per_class.truck"}


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_each_published_protocol_is_judged_by_a_stored_suite(protocol):
    """coco and nuswide21 (its reduced lists, subsets and copies missing images too) take their counts as
    suite parameters: the validate stage derives them from dsah.data.protocols, never from the table."""
    facts = PROTOCOLS[protocol]
    checks = suite(facts.suite)
    assert (ROOT / "gx" / "checkpoints" / f"validate-{facts.suite}.json").is_file()
    assert checks["label_width"]["value"] == facts.label_width
    assert checks["validation_count"]["min_value"] == {"$PARAMETER": "validation_size"}
    assert checks["row_count"]["value"] == {"$PARAMETER": "rows"}
    assert checks["query_count"]["min_value"] == {"$PARAMETER": "queries"}
    if protocol != "cifar10":
        assert "labels_per_image_mean" in checks and "store_all_or_none" in checks


def test_the_folder_suite_takes_the_label_tables_counts_and_checks_ids_are_paths_inside_it(context):
    checks = suite("folder")
    assert checks["row_count"]["value"] == {"$PARAMETER": "rows"}
    assert checks["label_width"]["value"] == {"$PARAMETER": "classes"}
    assert checks["id_is_path"] == {"column_A": "id", "column_B": "image"}
    table, store, parameters = coco_case()
    table["labels"] = table["labels"].str[:5].where(table["labels"].str[:5].str.contains("1"), "10000")
    photos = {**parameters, "classes": 5}
    result = validate_prepared(table, list("abcde"), store, "folder", photos, context)
    assert result.success, result.summary()
    table.loc[4, "image"] = table.loc[4, "id"] = "../outside.jpg"
    table.loc[5, "image"] = "elsewhere.jpg"
    assert failed(validate_prepared(table, list("abcde"), store, "folder", photos, context)) == {
        "image_inside_folder", "id_is_path"}


def test_mosaic_suite_takes_its_counts_as_parameters():
    checks = suite("cifar10-mosaic")
    assert checks["row_count"]["value"] == {"$PARAMETER": "rows"}
    assert checks["query_count"]["min_value"] == {"$PARAMETER": "queries"}
    assert checks["store_height"]["min_value"] == {"$PARAMETER": "image_px"}
    assert checks["classes_per_mosaic"]["max_value"] == {"$PARAMETER": "tiles"}


def test_unknown_protocol_is_a_clear_error(context):
    from dsah.errors import ConfigError

    with pytest.raises(ConfigError, match="no validation suite 'coco2017' \\(protocol coco2017\\).*cifar10-mosaic"):
        validate_prepared(mosaic_case().table, [], None, "coco2017", {}, context)


def leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from leaves(value)
    else:
        yield tree


def test_metrics_file_holds_numbers_and_booleans_only(context, tmp_path):
    case = mosaic_case()
    set_cell(5, "labels", "0" * 10)(case)
    result = case.run(context)
    write_report(result, tmp_path / "reports" / "validation.json", tmp_path / "reports" / "checks.json")
    metrics = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert metrics == {"success": False, "passed": 20, "failed": 2}
    assert all(isinstance(v, (bool, int, float)) for v in leaves(metrics))
    checks = json.loads((tmp_path / "reports" / "checks.json").read_text())
    assert checks["protocol"] == "cifar10-mosaic" and checks["success"] is False
    assert [c["name"] for c in checks["checks"] if not c["success"]] == ["labels_nonzero", "classes_per_mosaic"]
    # the site great_expectations.yml names, beside it, and a stable page forwarding to this run's
    assert checks["data_docs"] == {"site": "data_docs/index.html", "latest": "data_docs/latest.html"}
    latest = (tmp_path / "reports" / "data_docs" / "latest.html").read_text()
    page = latest.split("url=")[1].split("'")[0]
    assert page.startswith("validations/cifar10-mosaic/") and (tmp_path / "reports" / "data_docs" / page).is_file()
    assert str(tmp_path / "reports" / "data_docs" / page) == result.page


def test_module_imports_without_great_expectations():
    code = "import sys, dsah.data.validation; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=stage_env())


# --- the stage script, end to end on a prepared folder --------------------------------------------

def stage_env() -> dict[str, str]:
    env = dict(os.environ, GX_ANALYTICS_ENABLED="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def write_prepared(case: Case, folder: Path) -> Path:
    """The prepare and images stages' outputs for a case, the params they were made with, the gx/ folder."""
    write_table(case.table, folder / "prepared" / "split.csv")
    write_json({"dataset": "cifar10-mosaic", "protocol": "cifar10-mosaic", "base_protocol": "cifar10-mosaic",
                "subset": 0, "classes": list(CIFAR10_CLASSES)}, folder / "prepared" / "meta.json")
    save_array(case.store, folder / "images" / "images.npy")
    write_json({"available": True, "size": 64, "rows": len(case.store), "skipped": 0},
               folder / "images" / "store.json")
    params = {"dataset": "cifar10-mosaic", "bits": 12, "method": "dsah", "seed": 0, "split_seed": 0,
              "prepare": {"validation_size": case.parameters["validation_size"],
                          "cifar10-mosaic": dict(MOSAIC, archive="")},
              "images": {"size": {"cifar10-mosaic": 64}}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    if not (folder / "gx").exists():
        shutil.copytree(ROOT / "gx", folder / "gx", ignore=shutil.ignore_patterns("uncommitted"))
    return folder


def run_stage(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "stages/validate.py", "--prepared", str(folder / "prepared"),
         "--images", str(folder / "images"),
         "--params", str(folder / "params.yaml"), "--context", str(folder / "gx"),
         "--report", str(folder / "reports" / "validation.json"),
         "--checks", str(folder / "reports" / "validation_checks.json"), "--passed", str(folder / "validated.json")],
        cwd=ROOT, env=stage_env(), capture_output=True, text=True, timeout=300)


def test_stage_passes_on_a_valid_folder(tmp_path):
    done = run_stage(write_prepared(mosaic_case(), tmp_path))
    assert done.returncode == 0, done.stderr
    assert "validation passed" in done.stdout
    assert json.loads((tmp_path / "reports" / "validation.json").read_text())["success"] is True
    # The Checkpoint's actions: results stored in the context's uncommitted/ folder, Data Docs built
    # where great_expectations.yml puts them (reports/data_docs, beside the reports).
    assert list((tmp_path / "gx" / "uncommitted" / "validations" / "cifar10-mosaic").rglob("*.json"))
    pages = list((tmp_path / "reports" / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and str(pages[0]) in done.stdout
    assert (tmp_path / "reports" / "data_docs" / "index.html").is_file()
    # The gate for training: the digest of the data that passed, and nothing that changes with the suite.
    assert json.loads((tmp_path / "validated.json").read_text()) == {
        "prepared": folder_digest(tmp_path / "prepared")[1], "images": folder_digest(tmp_path / "images")[1],
        "passed": True}


def test_stage_fails_with_report_on_a_planted_defect(tmp_path):
    case = mosaic_case()
    case.table.loc[2, "split"] = "database"  # 3 queries where params say 4
    done = run_stage(write_prepared(case, tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED query_count: observed 3; expected 4 (queries)" in done.stderr
    assert json.loads((tmp_path / "reports" / "validation.json").read_text()) == {
        "success": False, "passed": 21, "failed": 1}
    checks = json.loads((tmp_path / "reports" / "validation_checks.json").read_text())["checks"]
    assert [c["name"] for c in checks if not c["success"]] == ["query_count"]
    assert not (tmp_path / "validated.json").exists()  # no gate marker: nothing downstream may run


def test_stage_names_a_missing_file(tmp_path):
    folder = write_prepared(mosaic_case(), tmp_path)
    (folder / "prepared" / "meta.json").unlink()
    done = run_stage(folder)
    assert done.returncode == 2
    assert "meta.json not found" in done.stderr
    assert not (folder / "reports" / "validation.json").exists()
