"""Label lists: the formats the hashing literature shares its splits in.

Two formats, one parser:
- a table with a header: tab-separated `image`, `labels` ('0'/'1' string) and optionally a set column
  (`hashnet_set`, `list`, `set` or `split`), gzip-compressed or not;
- HashNet-style lists: one file per set (database.txt, test.txt, train.txt), each line
  `<image path> <0|1> <0|1> ...`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from dsah.data.table import labels_to_matrix
from dsah.errors import DataError

SET_COLUMNS = ("hashnet_set", "list", "set", "split")
LIST_FILES = {"database.txt": "database", "test.txt": "query", "train.txt": "train"}


def read_label_table(path: Path) -> pd.DataFrame:
    """Read a label list (file or folder of HashNet lists) into columns image, set, labels (str)."""
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
    table = pd.DataFrame({
        "image": table["image"],
        # The lists call the query set "test"; one name for it downstream.
        "set": table[set_column].str.lower().replace({"test": "query"}) if set_column else "",
        "labels": table["labels"].str.strip(),
    })
    return check_labels(table, path)


def _read_list_folder(folder: Path) -> pd.DataFrame:
    parts = []
    for name, set_name in LIST_FILES.items():
        if (folder / name).is_file():
            parts.append(read_hashnet_list(folder / name, set_name))
    if not parts:
        raise DataError(f"{folder}: no HashNet lists ({', '.join(LIST_FILES)}) found")
    return pd.concat(parts, ignore_index=True)


def read_hashnet_list(path: Path, set_name: str) -> pd.DataFrame:
    images, labels = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if any(v not in ("0", "1") for v in fields[1:]) or len(fields) < 2:
                raise DataError(f"{path}:{number}: expected '<image> 0 1 ...', got {line.strip()[:80]!r}")
            images.append(fields[0])
            labels.append("".join(fields[1:]))
    return check_labels(pd.DataFrame({"image": images, "set": set_name, "labels": labels}), path)


def check_labels(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    widths = table["labels"].str.len().unique()
    if len(widths) != 1:
        raise DataError(f"{path}: label strings have different widths {sorted(widths.tolist())}")
    bad = ~table["labels"].str.fullmatch(r"[01]+")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: row {row + 1} has labels {table['labels'].iloc[row]!r}: only '0'/'1' allowed")
    return table


def matrix(table: pd.DataFrame) -> np.ndarray:
    return labels_to_matrix(table["labels"])
