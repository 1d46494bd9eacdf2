"""The split table: one row per image, the contract between `prepare` and every later stage.

Columns
    id           unique image id (str)
    split        "query" or "database"
    validation   True for the database images held out of training sampling (model selection)
    labels       multi-hot labels as a string of '0'/'1', one character per class
    image        image reference: a path relative to the image root, or a member of the source archive;
                 for mosaics and scenes, their places row-major joined by '|': a source image's id, or
                 '#rrggbb' for a scene's empty place (its background colour)
    store_index  row of the image in the image store (data/images/images.npy, dsah.data.store), given
                 here at split time; -1 for every row of a labels-only run (no image folder found)

Beside it: meta.json (dataset, protocol, classes, the sources' fingerprints, notes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsah.errors import DataError
from dsah.io import atomic_path

COLUMNS = ("id", "split", "validation", "labels", "image", "store_index")
TABLE_FILE, META_FILE = "split.csv", "meta.json"
EMPTY = "#"  # leads an empty place's colour in a tiled image's reference


def empty_place(colour) -> str:
    return EMPTY + "".join(f"{int(c):02x}" for c in colour)


def labels_to_string(row: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in row)


def labels_to_matrix(labels: pd.Series | list[str]) -> np.ndarray:
    """'0'/'1' strings -> (N, C) uint8 matrix."""
    values = list(labels)
    if not values:
        return np.zeros((0, 0), dtype=np.uint8)
    joined = np.frombuffer("".join(values).encode("ascii"), dtype=np.uint8) - ord("0")
    return joined.reshape(len(values), -1)


def read_table(path: str | Path) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={"id": str, "split": str, "labels": str, "image": str},
                        keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: split table lacks column(s) {', '.join(missing)}")
    return table


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        table.loc[:, list(COLUMNS)].to_csv(tmp, index=False)


def read_meta(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def prepared_meta(folder: str | Path, dataset: str | None = None) -> dict[str, Any]:
    """meta.json of a prepared folder, checked to hold both files (and `dataset`, when given): a missing
    or stale folder is an error saying to run prepare."""
    folder = Path(folder)
    for name in (TABLE_FILE, META_FILE):
        if not (folder / name).is_file():
            raise DataError(f"{folder / name} not found; run the prepare stage first")
    meta = read_meta(folder / META_FILE)
    if dataset is not None and meta.get("dataset") != dataset:
        raise DataError(f"{folder} holds {meta.get('dataset')!r} but params.yaml asks for {dataset!r}; "
                        "run the prepare stage first")
    return meta
