"""The prepare step: params -> split table, image store and meta.json in one folder.

The folder is built beside its destination and renamed into place only when complete, so an
interrupted run never leaves a half-written output that looks valid.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dsah.config import section
from dsah.data.cifar10 import locate_cifar10, prepare_cifar10
from dsah.data.coco import prepare_coco
from dsah.data.dataset import Prepared
from dsah.data.mosaic import prepare_mosaic
from dsah.data.nuswide import prepare_nuswide
from dsah.data.protocols import PROTOCOLS, Protocol, mosaic_protocol
from dsah.data.table import META_FILE, STORE_FILE, TABLE_FILE, write_json, write_store, write_table

# Schema of params.yaml's `prepare` section: defaults fix each key's type.
DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"archive": ""},
    "coco": {"labels": "", "image_root": ""},
    "nuswide21": {"labels": "", "image_root": ""},
    "cifar10-mosaic": {"archive": "", "queries": 1000, "database": 20000, "grid": 2},
}
COMMON = {"download": True, "validation_size": 1000}


def prepare_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(common prepare params, the chosen dataset's params), checked against the schema."""
    common = section(params, "prepare", {**COMMON, **{name: {} for name in DEFAULTS}})
    dataset = params["dataset"]
    return common, section(params, f"prepare.{dataset}", DEFAULTS[dataset])


def protocol_for(dataset: str, dataset_params: dict[str, Any]) -> Protocol:
    """The protocol a dataset is expected to follow (nuswide21 may turn out reduced: see nuswide.py)."""
    if dataset == "cifar10-mosaic":
        return mosaic_protocol(dataset_params["queries"], dataset_params["database"], dataset_params["grid"])
    return PROTOCOLS[dataset]


def prepare(params: dict[str, Any]) -> Prepared:
    common, own = prepare_params(params)
    dataset, split_seed, download = params["dataset"], params["split_seed"], common["download"]
    if dataset == "cifar10":
        return prepare_cifar10(PROTOCOLS["cifar10"], locate_cifar10(own["archive"], download), split_seed)
    if dataset == "cifar10-mosaic":
        return prepare_mosaic(protocol_for(dataset, own), locate_cifar10(own["archive"], download),
                              split_seed, own["grid"])
    if dataset == "coco":
        return prepare_coco(PROTOCOLS["coco"], own, split_seed, download)
    return prepare_nuswide(own, split_seed)


def write_prepared(prepared: Prepared, out: str | Path, split_seed: int, validation_size: int) -> None:
    out = Path(out)
    table = prepared.table(validation_size, split_seed)  # fails (no output touched) if too few images
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_table(table, staging / TABLE_FILE)
    if prepared.images is not None:
        write_store(prepared.images, staging / STORE_FILE)
    write_json(prepared.meta(split_seed, validation_size), staging / META_FILE)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
