"""Label lists: the formats the hashing literature shares its splits in.

Two formats, one parser:
- a table with a header: tab-separated `image`, `labels` ('0'/'1' string) and optionally a set column
  (`hashnet_set`, `list`, `set` or `split`: query or test, database, train), gzip-compressed or not;
- HashNet-style lists: one file per set (database.txt, test.txt, train.txt), each line
  `<image path> <0|1> <0|1> ...`.
Every row keeps where it came from (`where`: "row 5" of a table, "test.txt line 3" of a list), so an
error can name it. Every label string has one width, of '0'/'1' only; an image listed in two sets is
the reader's (dsah.data.coco.labelled_prepared) to merge or refuse.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dsah.data.table import labels_to_matrix
from dsah.errors import DataError

SET_COLUMNS = ("hashnet_set", "list", "set", "split")
# A set column's values: the lists call the query set "test"; one name for it downstream ("" : not given).
SET_NAMES = {"query": "query", "test": "query", "database": "database", "train": "train", "": ""}
LIST_FILES = {"database.txt": "database", "test.txt": "query", "train.txt": "train"}
EXAMPLES = 3  # rows named in an error before "and N more"


def some(items: Sequence[str], total: int | None = None) -> str:
    """The first few of `items` and how many more: 'a, b, c and 4 more'."""
    total = len(items) if total is None else total
    return ", ".join(items[:EXAMPLES]) + (f" and {total - EXAMPLES} more" if total > EXAMPLES else "")


def named_rows(table: pd.DataFrame, positions, detail=None) -> str:
    """'row 5 (COCO_x.jpg), row 9 (COCO_y.jpg) and 3 more' for table positions; `detail(i)` adds to each."""
    positions = list(positions)
    return some([f"{table['where'].iloc[i]} ({table['image'].iloc[i]}"
                 + (f": {detail(i)}" if detail else "") + ")" for i in positions[:EXAMPLES]], len(positions))


def read_label_table(path: Path) -> pd.DataFrame:
    """Read a label list (file or folder of HashNet lists) into columns image, set, labels (str) and where."""
    if path.is_dir():
        return _read_list_folder(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            table = pd.read_csv(f, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the label table ({exc}); it is corrupt or truncated") from exc
    if "image" not in table.columns or "labels" not in table.columns:
        raise DataError(f"{path}: a label table needs columns 'image' and 'labels', found {list(table.columns)}")
    set_column = next((c for c in SET_COLUMNS if c in table.columns), None)
    sets = table[set_column].str.strip().str.lower() if set_column else pd.Series("", index=table.index)
    table = pd.DataFrame({
        "image": table["image"].str.strip(),
        "set": sets.map(SET_NAMES),
        "labels": table["labels"].str.strip(),
        "where": [f"row {i}" for i in range(2, len(table) + 2)],  # the header is row 1
    })
    unknown = np.flatnonzero(table["set"].isna().to_numpy())
    if len(unknown):
        values = sorted(set(sets.iloc[unknown]))
        raise DataError(f"{path}: column {set_column!r} holds {', '.join(map(repr, values))} at "
                        f"{named_rows(table, unknown)}; a set is query (or test), database or train")
    return check_labels(table, path)


def _read_list_folder(folder: Path) -> pd.DataFrame:
    parts = []
    for name, set_name in LIST_FILES.items():
        if (folder / name).is_file():
            parts.append(read_hashnet_list(folder / name, set_name))
    if not parts:
        raise DataError(f"{folder}: no HashNet lists ({', '.join(LIST_FILES)}) found")
    return check_labels(pd.concat(parts, ignore_index=True), folder)  # one width across the lists too


def read_hashnet_list(path: Path, set_name: str) -> pd.DataFrame:
    images, labels, where = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if any(v not in ("0", "1") for v in fields[1:]) or len(fields) < 2:
                raise DataError(f"{path}:{number}: expected '<image> 0 1 ...', got {line.strip()[:80]!r}")
            images.append(fields[0])
            labels.append("".join(fields[1:]))
            where.append(f"{path.name} line {number}")
    return check_labels(pd.DataFrame({"image": images, "set": set_name, "labels": labels, "where": where}), path)


def check_labels(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Every label string of one width and of '0'/'1' only; the rows that are not are named."""
    if table.empty:
        raise DataError(f"{path}: the label list holds no image")
    widths = table["labels"].str.len()
    counts = widths.value_counts()
    if len(counts) > 1:
        common = int(counts.index[0])  # the most frequent width (value_counts sorts by count)
        bad = np.flatnonzero((widths != common).to_numpy())
        raise DataError(
            f"{path}: label strings have different widths {sorted(counts.index.tolist())}: "
            f"{named_rows(table, bad, lambda i: f'{widths.iloc[i]} characters')} "
            f"{'differs' if len(bad) == 1 else 'differ'} from the other "
            f"{len(table) - len(bad):,} rows' {common} ({len(bad):,} of {len(table):,} rows); every row needs one "
            "0/1 character per class")
    bad = np.flatnonzero(~table["labels"].str.fullmatch(r"[01]+").to_numpy())
    if len(bad):
        raise DataError(f"{path}: {named_rows(table, bad, lambda i: repr(table['labels'].iloc[i]))} "
                        f"{'has' if len(bad) == 1 else 'have'} labels other than '0'/'1'; only '0'/'1' allowed, "
                        "one per class")
    return table


def check_width(table: pd.DataFrame, width: int, what: str, path: Path) -> None:
    """The labels (already of one width) have `width` characters, one per class of `what`."""
    found = len(table["labels"].iloc[0])
    if found != width:
        raise DataError(f"{path}: {what} labels must have {width} characters, one per class; these have {found} "
                        f"({named_rows(table, [0])}: {table['labels'].iloc[0][:100]!r})")


def matrix(table: pd.DataFrame) -> np.ndarray:
    return labels_to_matrix(table["labels"])
