"""What users add to the search index and remove from it, kept apart from the index: the index stage's
output is rebuilt (or checked out) whole, so anything written only there would be dropped by the
next `dvc repro`, `dvc checkout` or `dvc exp apply`. Each index build merges this store back in.

A store folder (the project's is data/additions/, the persistent output of the `additions` stage, so DVC
versions it in dvc.lock; that stage starts it empty on a fresh clone: no store means no additions):
    added.csv    id, dataset, labels, file: one row per added image, in the order added; labels are class
                 names joined by '|'; file is the image under images/
    removed.csv  id, dataset: the pipeline's database images users removed (tombstones)
    images/      the added image files, byte for byte as given, named by their content (sha256)

The images are the source of truth, never their codes: codes belong to one model, so every index build
encodes the additions with the model it indexes (a new `bits` gives them the new code length). Each row
names the dataset of the index it was made against; a build on another dataset leaves it out.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsah.errors import DataError

ADDED, REMOVED, IMAGES = "added.csv", "removed.csv", "images"
ADDED_COLUMNS = ("id", "dataset", "labels", "file")
REMOVED_COLUMNS = ("id", "dataset")
LABEL_SEPARATOR = "|"


class AdditionsError(DataError):
    """The additions store is missing or damaged, or was asked for something it cannot hold."""


@dataclass(frozen=True)
class Addition:
    id: str
    dataset: str
    labels: tuple[str, ...]
    file: str  # relative to the store: images/<sha256><suffix>

    @property
    def ref(self) -> str:
        """Its image reference in an index (the index keeps a copy under added/)."""
        return f"added/{Path(self.file).name}"


@dataclass(frozen=True)
class Additions:
    folder: Path
    added: tuple[Addition, ...]
    removed: tuple[tuple[str, str], ...]  # (id, dataset)

    def of(self, dataset: str) -> tuple[list[Addition], set[str]]:
        """The additions and the removed ids that apply to an index of `dataset`."""
        return ([a for a in self.added if a.dataset == dataset],
                {i for i, d in self.removed if d == dataset})

    def path(self, addition: Addition) -> Path:
        return self.folder / addition.file


def _read_table(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise AdditionsError(f"{path.parent}: not an additions store ({path.name} missing); `dvc checkout "
                             f"{path.parent}` (or `dvc pull`) restores the versioned one; where there is no folder, "
                             "`dvc repro additions`, `dsah add` or `dsah remove` starts one")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != columns:
            raise AdditionsError(f"{path}: columns {reader.fieldnames}, expected {', '.join(columns)}")
        return list(reader)


def _write_table(path: Path, columns: tuple[str, ...], rows: Sequence[Sequence[str]]) -> None:
    """Atomic (a temporary file renamed over the table): a failure leaves the previous table."""
    staging = path.with_name(path.name + ".tmp")
    with open(staging, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    os.replace(staging, path)


def read_store(folder: str | Path) -> Additions:
    folder = Path(folder)
    added = tuple(Addition(r["id"], r["dataset"], tuple(filter(None, r["labels"].split(LABEL_SEPARATOR))), r["file"])
                  for r in _read_table(folder / ADDED, ADDED_COLUMNS))
    removed = tuple((r["id"], r["dataset"]) for r in _read_table(folder / REMOVED, REMOVED_COLUMNS))
    missing = [a.file for a in added if not (folder / a.file).is_file()]
    if missing:
        raise AdditionsError(f"{folder}: {len(missing)} added image file(s) missing ({', '.join(missing[:3])}); "
                             f"`dvc checkout {folder}` restores the versioned store")
    return Additions(folder, added, removed)


def create_store(folder: str | Path) -> Additions:
    """The store, started empty where it does not exist yet (an existing table is never rewritten)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, columns in ((ADDED, ADDED_COLUMNS), (REMOVED, REMOVED_COLUMNS)):
        if not (folder / name).exists():
            _write_table(folder / name, columns, [])
    return read_store(folder)


def _save(store: Additions, added: Sequence[Addition], removed: Sequence[tuple[str, str]]) -> Additions:
    _write_table(store.folder / ADDED, ADDED_COLUMNS,
                 [(a.id, a.dataset, LABEL_SEPARATOR.join(a.labels), a.file) for a in added])
    _write_table(store.folder / REMOVED, REMOVED_COLUMNS, removed)
    kept = {a.file for a in added}
    for file in {a.file for a in store.added} - kept:  # no row names it any more
        (store.folder / file).unlink(missing_ok=True)
    return Additions(store.folder, tuple(added), tuple(removed))


def add_images(folder: str | Path, dataset: str, images: Sequence[str | Path], ids: Sequence[str],
               labels: Sequence[str] = ()) -> list[Addition]:
    """Copy image files into the store and record them (all carry `labels`); refuses ids added before."""
    store = read_store(folder)
    if len(ids) != len(images):
        raise AdditionsError(f"{len(images)} images but {len(ids)} ids")
    twice = sorted({i for i in ids if list(ids).count(i) > 1})
    if twice:
        raise AdditionsError(f"id(s) given twice: {', '.join(twice[:5])}")
    before = {a.id for a in store.of(dataset)[0]}
    clash = [i for i in ids if i in before]
    if clash:
        raise AdditionsError(f"id(s) already added to {store.folder}: {', '.join(clash[:5])}; "
                             "remove them first or pick other ids")
    bad = [name for name in labels if LABEL_SEPARATOR in name or not name]
    if bad:
        raise AdditionsError(f"label names may not be empty or hold {LABEL_SEPARATOR!r}: {bad}")
    contents = []
    for image in images:  # all read before anything is written
        try:
            contents.append(Path(image).read_bytes())
        except OSError as exc:
            raise AdditionsError(f"{image}: cannot read it ({exc.strerror})") from None
    (store.folder / IMAGES).mkdir(exist_ok=True)
    new = []
    for image, entry, data in zip(images, ids, contents):
        file = f"{IMAGES}/{hashlib.sha256(data).hexdigest()[:32]}{Path(image).suffix.lower()}"
        target = store.folder / file
        if not target.is_file():  # the same bytes added twice share one file
            staging = target.with_name(target.name + ".tmp")
            staging.write_bytes(data)
            os.replace(staging, target)
        new.append(Addition(str(entry), dataset, tuple(labels), file))
    _save(store, [*store.added, *new], store.removed)
    return new


def remove_ids(folder: str | Path, dataset: str, ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Delete added images by id; any other id is a pipeline image, recorded as removed (a tombstone,
    which every later index build honours). -> (ids deleted from the store, ids newly tombstoned)."""
    store = read_store(folder)
    asked = set(ids)
    mine = {a.id for a in store.of(dataset)[0]}
    deleted = [i for i in dict.fromkeys(ids) if i in mine]
    already = {i for i, d in store.removed if d == dataset}
    tombstoned = [i for i in dict.fromkeys(ids) if i not in mine and i not in already]
    added = [a for a in store.added if not (a.dataset == dataset and a.id in asked)]
    _save(store, added, [*store.removed, *((i, dataset) for i in tombstoned)])
    return deleted, tombstoned


@dataclass
class Merged:
    """Index entries: the pipeline's, less the removed ones, then the additions."""
    codes: np.ndarray      # (n, c) +-1 int8
    ids: list[str]
    labels: np.ndarray     # (n, C) 0/1
    refs: list[str]
    files: dict[str, Path]  # ref -> the store's file, for the index's added/ folder
    added: int
    removed: int


def merge(store: Additions, dataset: str, classes: Sequence[str], ids: Sequence[str], codes: np.ndarray,
          labels: np.ndarray, refs: Sequence[str], encode: Callable[[list[Path]], np.ndarray]) -> Merged:
    """The index stage's entries. encode: image files -> (n, c) +-1 codes from the model being indexed
    (called only when there are additions)."""
    added, removed = store.of(dataset)
    keep = np.array([i not in removed for i in ids], dtype=bool)
    kept_ids = [i for i, k in zip(ids, keep) if k]
    clash = sorted({a.id for a in added} & set(kept_ids))
    if clash:
        raise AdditionsError(f"{store.folder}: added image id(s) {', '.join(clash[:5])} are also database ids "
                             "of the pipeline; `dsah remove` the addition and add it again under another id")
    position = {name: column for column, name in enumerate(classes)}
    extra = np.zeros((len(added), len(classes)), dtype=np.uint8)
    for row, addition in enumerate(added):
        unknown = [name for name in addition.labels if name not in position]
        if unknown:
            raise AdditionsError(f"{store.folder}: added image {addition.id} has label(s) {', '.join(unknown)}, "
                                 f"not classes of {dataset}")
        extra[row, [position[name] for name in addition.labels]] = 1
    new_codes = encode([store.path(a) for a in added]) if added else np.zeros((0, codes.shape[1]), np.int8)
    if new_codes.shape != (len(added), codes.shape[1]):
        raise AdditionsError(f"the model encoded {len(added)} added image(s) as {new_codes.shape} codes, but the "
                             f"database codes have {codes.shape[1]} bits; rerun train and encode")
    return Merged(np.concatenate([np.asarray(codes)[keep], new_codes.astype(np.int8)]),
                  [*kept_ids, *(a.id for a in added)], np.concatenate([np.asarray(labels)[keep], extra]),
                  [*(r for r, k in zip(refs, keep) if k), *(a.ref for a in added)],
                  {a.ref: store.path(a) for a in added}, len(added), int((~keep).sum()))
