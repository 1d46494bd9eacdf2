"""The prepare step: params -> where the sources are -> split table and meta.json (the `images` stage
then decodes the pixels into the image store, dsah.data.store).

`find_sources` is the one place that says which files a dataset is read from; the `sources` stage
fingerprints what it finds (so a changed source reruns `prepare`) and `prepare` reads the same files.
The output folder is built beside its destination and renamed into place only when complete, so an
interrupted run never leaves a half-written output that looks valid.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dsah.data.cifar10 import locate_cifar10, prepare_cifar10
from dsah.data.coco import locate_coco, prepare_coco
from dsah.data.dataset import Prepared
from dsah.data.folder import locate_folder, prepare_folder
from dsah.data.mosaic import prepare_mosaic
from dsah.data.nuswide import locate_nuswide, prepare_nuswide
from dsah.data.params import PrepareParams
from dsah.data.protocols import PROTOCOLS, Protocol, mosaic_protocol, scenes_protocol
from dsah.data.scenes import prepare_scenes
from dsah.data.sources import Source, fingerprint, obtain
from dsah.data.table import META_FILE, TABLE_FILE, write_table
from dsah.errors import DataError
from dsah.io import write_json


def find_sources(dataset: str, own, download: bool) -> dict[str, Source | None]:
    """The dataset's sources by role (nothing is downloaded here; None: an optional source not found)."""
    if dataset in ("cifar10", "cifar10-mosaic", "cifar10-scenes"):
        return {"images": locate_cifar10(own.archive, download)}
    if dataset == "coco":
        return locate_coco(own.labels, own.image_root, download, own.download_images)
    if dataset == "folder":
        return locate_folder(own.root, own.labels)
    return locate_nuswide(own.labels, own.image_root)


def checked_sources(dataset: str, own, download: bool, expected: dict | None) -> tuple[dict, dict]:
    """The dataset's sources and their fingerprint, refused if they changed since the sources stage
    fingerprinted them (`expected`; None checks nothing)."""
    found = find_sources(dataset, own, download)
    sources = fingerprint(found)
    if expected is not None and sources != expected:
        raise DataError("the sources changed since the sources stage fingerprinted them; run `dvc repro` again")
    return found, sources


def protocol_for(dataset: str, own) -> Protocol:
    """The protocol a dataset is expected to follow (nuswide21 may turn out reduced: see nuswide.py)."""
    if dataset == "cifar10-mosaic":
        return mosaic_protocol(own.queries, own.database, own.grid)
    if dataset == "cifar10-scenes":
        return scenes_protocol(own.queries, own.database)
    return PROTOCOLS[dataset]


def prepare(settings: PrepareParams, expected_sources: dict | None = None) -> Prepared:
    """Read the dataset from its sources and split it. expected_sources: the fingerprint the sources
    stage wrote; the data read must still be that data."""
    dataset, own, split_seed = settings.dataset, settings.own, settings.split_seed
    found, sources = checked_sources(dataset, own, settings.common.download, expected_sources)
    found = {role: obtain(source) if source is not None else None for role, source in found.items()}
    if dataset == "cifar10":
        prepared = prepare_cifar10(PROTOCOLS["cifar10"], found["images"], split_seed, own.subset)
    elif dataset == "cifar10-mosaic":
        prepared = prepare_mosaic(protocol_for(dataset, own), found["images"], split_seed, own.grid)
    elif dataset == "cifar10-scenes":
        prepared = prepare_scenes(protocol_for(dataset, own), found["images"], split_seed, own.grid, own.objects,
                                  own.zipf)
    elif dataset == "coco":
        prepared = prepare_coco(PROTOCOLS["coco"], found["labels"], found["images"], split_seed, own.subset)
    elif dataset == "folder":
        prepared = prepare_folder(own, found["labels"], found["images"], split_seed)
    else:
        prepared = prepare_nuswide(found["labels"], found["images"], split_seed, own.subset)
    prepared.sources = sources
    return prepared


def write_prepared(prepared: Prepared, out: str | Path, split_seed: int, validation_size: int) -> None:
    out = Path(out)
    table = prepared.table(validation_size, split_seed)  # fails (no output touched) if too few images
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_table(table, staging / TABLE_FILE)
    write_json(prepared.meta(split_seed, validation_size), staging / META_FILE)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
