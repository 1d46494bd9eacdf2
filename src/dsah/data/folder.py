"""`dataset: folder`: a user's own photos, an image folder plus a label table.

The label table is a CSV (or a TSV: a `.tsv` name, or a tab in its header line) with a header:
    path     the image file, relative to the folder (subfolders allowed; never absolute, never `..`)
    labels   class names separated by `prepare.folder.separator` ("cat|dog"), or a 0/1 string with one
             character per class of `prepare.folder.classes`
    split    optional: query or database; without it `prepare.folder.queries` images are chosen as
             queries by split_seed
Classes are `prepare.folder.classes` in that order (a name outside it is an error), or, when that list is
empty, every name the table uses, sorted. Ids are the relative paths. Every image is decoded by the image
store (a missing or unreadable file is its error, or skipped under images.max_skipped).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from dsah.data.dataset import Prepared
from dsah.data.protocols import Protocol
from dsah.data.sources import DATA_HOME_ENV, Source, data_home
from dsah.data.splits import choose_queries
from dsah.errors import DataError

DEFAULT_ROOT = "photos"  # under $DSAH_DATA_HOME
TABLE_NAMES = ("labels.csv", "labels.tsv")  # looked for in the folder when prepare.folder.labels is ""
SPLITS = ("query", "database")


def locate_folder(root: str, labels: str) -> dict[str, Source]:
    """The label table and the image folder, from params or $DSAH_DATA_HOME/photos."""
    if root:
        folder, origin = Path(root).expanduser(), "params"
    elif data_home() is not None:
        folder, origin = data_home() / DEFAULT_ROOT, DATA_HOME_ENV
    else:
        raise DataError(f"folder: give the photos' folder in prepare.folder.root (an absolute path), or put it "
                        f"at ${DATA_HOME_ENV}/{DEFAULT_ROOT}")
    if not folder.is_dir():
        raise DataError(f"folder: {folder} is not a folder (prepare.folder.root or ${DATA_HOME_ENV}/{DEFAULT_ROOT})")
    if labels:
        table = Path(labels).expanduser()
        if not table.is_file():
            raise DataError(f"folder: the label table given in prepare.folder.labels does not exist: {table}")
    else:
        table = next((folder / name for name in TABLE_NAMES if (folder / name).is_file()), None)
        if table is None:
            raise DataError(f"folder: no label table in {folder} ({' or '.join(TABLE_NAMES)}); make one or set "
                            "prepare.folder.labels")
    return {"labels": Source(table, origin if not labels else "params"), "images": Source(folder, origin)}


def read_folder_table(path: Path) -> pd.DataFrame:
    """The label table as columns path, labels and split ("" where it has none)."""
    with open(path, encoding="utf-8") as f:
        header = f.readline()
    separator = "\t" if path.suffix.lower() == ".tsv" or "\t" in header else ","
    try:
        table = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable label table ({exc})") from None
    missing = [c for c in ("path", "labels") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: the label table needs columns path and labels (and optionally split); "
                        f"missing {', '.join(missing)}, found {', '.join(table.columns)}")
    split = table["split"].str.strip().str.lower() if "split" in table.columns else pd.Series("", index=table.index)
    return pd.DataFrame({"path": table["path"].str.strip(), "labels": table["labels"].str.strip(), "split": split})


def relative_path(value: str, row: int, path: Path) -> str:
    """A table's image path as a clean path relative to the folder; absolute paths and `..` are refused."""
    posix = PurePosixPath(value.replace("\\", "/"))
    if not value or posix.is_absolute() or ".." in posix.parts or (posix.parts and posix.parts[0].endswith(":")):
        raise DataError(f"{path}: row {row}: image path {value!r} is outside the folder (paths are relative to it, "
                        "without ..)")
    return posix.as_posix()


def label_matrix(table: pd.DataFrame, classes: list[str], separator: str, path: Path) -> tuple[np.ndarray, list[str]]:
    """(N, C) 0/1 labels and the class names: from 0/1 strings (with a class list) or from names."""
    cells = table["labels"].tolist()
    for row, cell in enumerate(cells, start=2):
        if not cell or not cell.strip(separator + " "):
            raise DataError(f"{path}: row {row} ({table['path'].iloc[row - 2]}): empty labels; every image needs one")
    bits = bool(classes) and all(len(c) == len(classes) and set(c) <= {"0", "1"} for c in cells)
    if bits:
        labels = np.array([[ch == "1" for ch in cell] for cell in cells], dtype=np.uint8)
        empty = np.flatnonzero(labels.sum(axis=1) == 0)
        if len(empty):
            raise DataError(f"{path}: row {empty[0] + 2} ({table['path'].iloc[empty[0]]}): empty labels (all 0)")
        return labels, list(classes)
    names = [[n.strip() for n in cell.split(separator) if n.strip()] for cell in cells]
    known = list(classes) or sorted({n for row in names for n in row})
    index = {name: k for k, name in enumerate(known)}
    labels = np.zeros((len(cells), len(known)), dtype=np.uint8)
    for row, row_names in enumerate(names):
        unknown = [n for n in row_names if n not in index]
        if unknown:
            raise DataError(f"{path}: row {row + 2} ({table['path'].iloc[row]}): unknown class {unknown[0]!r}; "
                            f"prepare.folder.classes lists {', '.join(known)}")
        labels[row, [index[n] for n in row_names]] = 1
    return labels, known


def folder_protocol(table: pd.DataFrame, queries: int, classes: int) -> Protocol:
    """The folder's counts: its table's rows, and its split column's queries or `queries`."""
    has_split = (table["split"] != "").any()
    return Protocol("folder", rows=len(table), queries=int((table["split"] == "query").sum()) if has_split else queries,
                    label_width=classes, family="folder")


def prepare_folder(own, labels: Source, images: Source, split_seed: int) -> Prepared:
    path = labels.path
    table = read_folder_table(path)
    if table.empty:
        raise DataError(f"{path}: the label table lists no image")
    refs = [relative_path(value, row, path) for row, value in enumerate(table["path"], start=2)]
    duplicated = pd.Series(refs).duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise DataError(f"{path}: row {row + 2}: {refs[row]} is listed twice; each image once")
    matrix, classes = label_matrix(table, list(own.classes), own.separator, path)
    has_split = (table["split"] != "").any()
    if has_split:
        bad = sorted(set(table["split"]) - set(SPLITS))
        if bad:
            raise DataError(f"{path}: split must be query or database, found {', '.join(map(repr, bad))}")
        query = (table["split"] == "query").to_numpy()
    else:
        if own.queries < 1 or own.queries >= len(refs):
            raise DataError(f"prepare.folder.queries: {own.queries}; between 1 and {len(refs) - 1} (the table "
                            f"lists {len(refs)} images)")
        query = choose_queries(refs, own.queries, split_seed)
    protocol = folder_protocol(table, own.queries, len(classes))
    notes = [f"your own photos: {len(refs)} images in {len(classes)} classes"
             + ("" if has_split else f", {own.queries} queries chosen by split_seed")]
    return Prepared(dataset="folder", protocol=protocol, classes=classes, ids=refs, labels=matrix, query=query,
                    image_refs=refs, notes=notes)
