"""`dataset: folder`: a user's own photos, an image folder plus a label table.

The label table is a CSV (or a TSV: a `.tsv` name, or a tab in its header line) with a header:
    path     the image file, relative to the folder (subfolders allowed; never absolute, never `..`);
             a column named `image` or `file` is read as `path`
    labels   class names separated by `prepare.folder.separator` ("cat|dog"), or a 0/1 string with one
             character per class of `prepare.folder.classes` (every row then one, all of that width)
    split    optional: query or database; without it `prepare.folder.queries` images are chosen as
             queries by split_seed
Classes are `prepare.folder.classes` in that order (a name outside it is an error), or, when that list is
empty, every name the table uses, sorted. A name made of 0s and 1s only is taken for a 0/1 string, and
refused as a class name unless `classes` lists it. Ids are the relative paths: an image listed twice is
one image when both rows agree (merged, and prepare says how many), an error naming the rows otherwise.
Every image is decoded by the image store (a missing or unreadable file is its error, or skipped under
images.max_skipped); a symbolic link that leads out of the folder is refused (one inside it is followed).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
# A table's column names (any case), each with the other names it is known by.
TABLE_COLUMNS = {"path": ("path", "image", "file"), "labels": ("labels", "label"), "split": ("split",)}
BITS = re.compile(r"[01]+")  # a 0/1 label string (or a class name that would be mistaken for one)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")
EXAMPLES = 3  # rows named in an error before "and N more"


def some(items: Sequence[str], total: int | None = None) -> str:
    """The first few of `items` and how many more: 'a, b, c and 4 more'."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:EXAMPLES])
    return shown + (f" and {total - EXAMPLES} more" if total > EXAMPLES else "")


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


def table_columns(found: list[str], path: Path) -> dict[str, str]:
    """Which of the table's columns is path, labels and split (split may be absent); a table without a
    path or labels column is an error saying which column to rename."""
    chosen: dict[str, str] = {}
    for role, names in TABLE_COLUMNS.items():
        matches = [c for c in found if c.strip().lower() in names]
        if len(matches) > 1:
            raise DataError(f"{path}: columns {' and '.join(map(repr, matches))} both name the {role}; keep one "
                            "(rename or remove the other)")
        if matches:
            chosen[role] = matches[0]
    missing = [role for role in ("path", "labels") if role not in chosen]
    if not missing:
        return chosen
    others = [c for c in found if c not in chosen.values()]
    listed = f"found {', '.join(map(repr, found))}"
    if len(found) == 1 and any(mark in found[0] for mark in ";|"):
        hint = "the table must be comma- or tab-separated"
    elif any(c.strip().lower().endswith(IMAGE_SUFFIXES) for c in found):
        hint = "its first line is an image, not a header: add the line `path,labels` above it"
    elif len(missing) == 1 and len(others) == 1:
        hint = f"rename column {others[0]!r} to {missing[0]}"
    else:
        hint = "rename " + " and ".join(f"the column that holds the {'image files' if role == 'path' else role} to "
                                        f"{role}" for role in missing)
    raise DataError(f"{path}: the label table needs columns path (or image, file) and labels, and optionally "
                    f"split; missing {' and '.join(missing)} ({listed}): {hint}")


def read_folder_table(path: Path) -> pd.DataFrame:
    """The label table as columns path (a clean path relative to the folder), labels, split ("" where it
    has none) and row (its row in the file, the header being row 1)."""
    with open(path, encoding="utf-8") as f:
        header = f.readline()
    separator = "\t" if path.suffix.lower() == ".tsv" or "\t" in header else ","
    try:
        table = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable label table ({exc})") from None
    columns = table_columns([str(c) for c in table.columns], path)
    split = (table[columns["split"]].str.strip().str.lower() if "split" in columns
             else pd.Series("", index=table.index))
    rows = np.arange(2, len(table) + 2)
    refs = [relative_path(value.strip(), row, path) for row, value in zip(rows, table[columns["path"]])]
    return pd.DataFrame({"path": refs, "labels": table[columns["labels"]].str.strip().to_numpy(),
                         "split": split.to_numpy(), "row": rows})


def relative_path(value: str, row: int, path: Path) -> str:
    """A table's image path as a clean path relative to the folder; absolute paths and `..` are refused."""
    posix = PurePosixPath(value.replace("\\", "/"))
    if not value or posix.is_absolute() or ".." in posix.parts or (posix.parts and posix.parts[0].endswith(":")):
        raise DataError(f"{path}: row {row}: image path {value!r} is outside the folder (paths are relative to it, "
                        "without ..)")
    return posix.as_posix()


def _rows(table: pd.DataFrame, positions) -> str:
    """'row 3 (b.jpg)' or 'rows 3 (b.jpg), 5 (c.jpg), 9 (d.jpg) and 4 more' for table positions."""
    positions = list(positions)
    named = [f"{table['row'].iloc[i]} ({table['path'].iloc[i]})" for i in positions]
    return ("row " if len(named) == 1 else "rows ") + some(named)


def label_matrix(table: pd.DataFrame, classes: list[str], separator: str, path: Path) -> tuple[np.ndarray, list[str]]:
    """(N, C) 0/1 labels and the class names: from 0/1 strings (with a class list of their width) or from
    names. Whichever the table holds, it holds it in every row: a 0/1 string read as a class name (or one
    of the wrong width read as anything) would silently make other classes."""
    cells = table["labels"].tolist()
    empty = [i for i, cell in enumerate(cells) if not cell.strip(separator + " ")]
    if empty:
        raise DataError(f"{path}: {_rows(table, empty)}: empty labels; every image needs one")
    named = set(classes)
    bits = [bool(BITS.fullmatch(cell)) and cell not in named for cell in cells]
    if all(bits):
        return _bit_matrix(table, cells, list(classes), separator, path)
    names = [[n.strip() for n in cell.split(separator) if n.strip()] for cell in cells]
    lookalike = [i for i, row in enumerate(names) if any(BITS.fullmatch(n) and n not in named for n in row)]
    if lookalike:
        first = next(n for n in names[lookalike[0]] if BITS.fullmatch(n) and n not in named)
        others = len(cells) - len(lookalike)
        raise DataError(
            f"{path}: {_rows(table, lookalike)}: labels like {first!r} look like 0/1 strings, not class names"
            + (f", while {others} other {'rows hold' if others != 1 else 'row holds'} class names" if others else "")
            + f"; write every row one way: class names separated by {separator!r}, or 0/1 strings of one width "
            f"with prepare.folder.classes (a class really named {first!r} must be listed in "
            "prepare.folder.classes)")
    known = list(classes) or sorted({n for row in names for n in row})
    index = {name: k for k, name in enumerate(known)}
    labels = np.zeros((len(cells), len(known)), dtype=np.uint8)
    unknown = []
    for row, row_names in enumerate(names):
        strangers = [n for n in row_names if n not in index]
        if strangers:
            unknown.append((row, strangers[0]))
            continue
        labels[row, [index[n] for n in row_names]] = 1
    if unknown:
        row, name = unknown[0]
        where = _rows(table, [r for r, _ in unknown])
        raise DataError(f"{path}: {where}: unknown class {name!r}; prepare.folder.classes lists {', '.join(known)}")
    return labels, known


def _bit_matrix(table: pd.DataFrame, cells: list[str], classes: list[str], separator: str, path: Path
                ) -> tuple[np.ndarray, list[str]]:
    """Labels written as 0/1 strings: every one of the width of prepare.folder.classes."""
    widths = np.array([len(c) for c in cells])
    values, counts = np.unique(widths, return_counts=True)
    common = int(values[counts.argmax()])
    if not classes:
        shape = (f"of width {common}" if len(values) == 1 else
                 f"of different widths ({', '.join(map(str, values.tolist()))})")
        raise DataError(
            f"{path}: the labels are 0/1 strings {shape} (row {table['row'].iloc[0]}: {cells[0]!r}), and "
            "prepare.folder.classes is empty; set it to the class names, one per character in column order "
            f"({common} names), or write the labels as class names separated by {separator!r}")
    wrong = np.flatnonzero(widths != len(classes))
    if len(wrong):
        if len(wrong) == len(cells) and len(values) == 1:
            raise DataError(f"{path}: the labels are 0/1 strings of width {common}, but prepare.folder.classes "
                            f"lists {len(classes)} classes; list exactly {common} class names, one per character "
                            "in column order")
        raise DataError(f"{path}: {_rows(table, wrong)}: 0/1 strings of width "
                        f"{', '.join(map(str, sorted(set(widths[wrong].tolist()))))}, but prepare.folder.classes "
                        f"lists {len(classes)} classes: every row needs one character per class "
                        f"({len(wrong)} of {len(cells)} rows differ)")
    labels = np.frombuffer("".join(cells).encode("ascii"), dtype=np.uint8).reshape(len(cells), len(classes)) - ord("0")
    zero = np.flatnonzero(labels.sum(axis=1) == 0)
    if len(zero):
        raise DataError(f"{path}: {_rows(table, zero)}: empty labels (all 0); every image needs one")
    return np.ascontiguousarray(labels), list(classes)


def merge_duplicates(table: pd.DataFrame, labels: np.ndarray, path: Path) -> tuple[np.ndarray, int]:
    """Rows that list an image already listed: identical ones (same labels, same split) are merged (a mask of
    the rows kept, and how many were dropped); an image with two label sets, or a query that is also in the
    database, is an error naming the images and their rows."""
    repeated = table["path"].duplicated(keep=False).to_numpy()
    if not repeated.any():
        return np.ones(len(table), dtype=bool), 0
    key = pd.Series([row.tobytes() for row in labels], index=table.index)
    groups = table[repeated].assign(_labels=key[repeated]).groupby("path", sort=False)
    clashes = {what: [(image, group["row"].tolist()) for image, group in groups if group[column].nunique() > 1]
               for what, column in (("labels", "_labels"), ("split", "split"))}
    for what, found in clashes.items():
        if found:
            listed = some([f"{image} (rows {', '.join(map(str, rows))})" for image, rows in found])
            problem = ("listed more than once with different labels" if what == "labels" else
                       "in both query and database")
            fix = ("list each image once, with all its labels in one row" if what == "labels" else
                   "an image is a query or in the database, never both")
            count = f"{len(found)} images are" if len(found) > 1 else "an image is"
            raise DataError(f"{path}: {count} {problem}: {listed}; {fix}")
    keep = ~table["path"].duplicated(keep="first").to_numpy()
    return keep, int((~keep).sum())


def outside_links(root: Path, refs: Sequence[str]) -> list[tuple[str, Path]]:
    """The references under `root` that a symbolic link (the file's, or a subfolder's) leads out of it,
    each with where it leads. Table paths are clean (no `..`), so only a link can lead out."""
    base = root.resolve()
    found = []
    for ref in refs:
        target = (root / ref).resolve()
        if not target.is_relative_to(base):
            found.append((ref, target))
    return found


def check_inside(root: Path, refs: Sequence[str]) -> None:
    """Refuse images whose path leads out of the photo folder through a symbolic link (a file or a
    subfolder linked to elsewhere): the store would read, and search would show, files the folder does not
    hold. A link that stays inside the folder is followed."""
    outside = outside_links(root, refs)
    if outside:
        listed = some([f"{ref} -> {target}" for ref, target in outside])
        raise DataError(f"{root}: {len(outside)} image{'s lead' if len(outside) > 1 else ' leads'} out of the photo "
                        f"folder through a symbolic link: {listed}; copy the file{'s' if len(outside) > 1 else ''} "
                        "into the folder (links within the folder are followed)")


def folder_protocol(table: pd.DataFrame, queries: int, classes: int) -> Protocol:
    """The folder's counts: its table's images (an image listed twice counts once), and its split column's
    queries or `queries`."""
    images = table.drop_duplicates("path")
    has_split = (images["split"] != "").any()
    return Protocol("folder", rows=len(images),
                    queries=int((images["split"] == "query").sum()) if has_split else queries,
                    label_width=classes, family="folder")


def prepare_folder(own, labels: Source, images: Source, split_seed: int) -> Prepared:
    path = labels.path
    table = read_folder_table(path)
    if table.empty:
        raise DataError(f"{path}: the label table lists no image")
    matrix, classes = label_matrix(table, list(own.classes), own.separator, path)
    has_split = (table["split"] != "").any()
    if has_split:
        bad = sorted(set(table["split"]) - set(SPLITS))
        if bad:
            rows = np.flatnonzero(~table["split"].isin(SPLITS).to_numpy())
            raise DataError(f"{path}: {_rows(table, rows)}: split must be query or database, found "
                            f"{', '.join(map(repr, bad))}")
    keep, merged = merge_duplicates(table, matrix, path)
    table, matrix = table[keep].reset_index(drop=True), matrix[keep]
    refs = table["path"].tolist()
    check_inside(images.path, refs)
    if has_split:
        query = (table["split"] == "query").to_numpy()
    else:
        if own.queries < 1 or own.queries >= len(refs):
            raise DataError(f"prepare.folder.queries: {own.queries}; between 1 and {len(refs) - 1} (the table "
                            f"lists {len(refs)} images)")
        query = choose_queries(refs, own.queries, split_seed)
    protocol = folder_protocol(table, own.queries, len(classes))
    notes = [f"your own photos: {len(refs)} images in {len(classes)} classes"
             + ("" if has_split else f", {own.queries} queries chosen by split_seed")]
    if merged:
        notes.append(f"merged {merged} duplicate row{'s' if merged > 1 else ''} of {path.name}: an image listed "
                     "again with the same labels and split is one image")
    return Prepared(dataset="folder", protocol=protocol, classes=classes, ids=refs, labels=matrix, query=query,
                    image_refs=refs, notes=notes)
