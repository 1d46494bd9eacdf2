"""Reading the prepared split and its image store back for training, encoding, evaluation and reports.

The images are never loaded whole: `ImageRows` reads the rows asked for from the memory-mapped store, so
a stage's memory does not grow with the dataset, and data-parallel processes share the page cache.
Images the store build skipped (images.max_skipped) are left out of both splits everywhere, and the
protocol is named for it ("<protocol>-less-K").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dsah.data.store import STORE_INFO, open_store, read_skipped
from dsah.data.table import TABLE_FILE, labels_to_matrix, prepared_meta, read_table
from dsah.errors import DataError
from dsah.io import read_json


class ImageRows:
    """Some rows of the image store, in a split's order, read on demand.

    `images[i]`, `images[a:b]` or `images[positions]` (an array or CPU tensor) -> (k, 3, S, S) uint8
    tensor. Reads go through the file in store order (a sampled block touches it front to back); the
    result is a view of the store's NHWC pixels as NCHW, channels-last in memory, as the networks want."""

    def __init__(self, store: np.ndarray, rows: np.ndarray):
        self.store, self.rows = store, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.rows), self.store.shape[3], self.store.shape[1], self.store.shape[2]

    @property
    def nbytes(self) -> int:
        return len(self.rows) * int(np.prod(self.store.shape[1:]))

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        wanted = self.rows[index]
        if isinstance(index, slice) and index.step in (None, 1) and len(wanted) and \
                wanted[-1] - wanted[0] == len(wanted) - 1:  # contiguous rows: one read
            pixels = np.array(self.store[wanted[0]:wanted[-1] + 1])  # a copy: torch wants writable memory
        else:
            wanted = np.atleast_1d(wanted)
            order = np.argsort(wanted, kind="stable")
            pixels = np.empty((len(wanted), *self.store.shape[1:]), dtype=np.uint8)
            pixels[order] = self.store[wanted[order]]
        return torch.from_numpy(pixels).permute(0, 3, 1, 2)


@dataclass
class Split:
    """One side of the split table (database or query), in table order."""

    table: pd.DataFrame
    labels: np.ndarray  # (n, C) float32

    @property
    def ids(self) -> list[str]:
        return self.table["id"].tolist()


@dataclass
class PreparedData:
    folder: Path
    meta: dict[str, Any]
    database: Split
    query: Split
    store: np.ndarray | None  # (N, S, S, 3) uint8, memory-mapped; None: no images (labels-only)
    skipped: pd.DataFrame     # the images the store build skipped (dsah.data.store.SKIPPED_COLUMNS)

    def images(self, split: Split) -> ImageRows:
        """A split's images from the store, read on demand."""
        if self.store is None:
            raise DataError(
                f"{self.folder}: no image store for dataset {self.meta['dataset']!r} (the images stage found "
                "no image folder: labels-only). Give the images' folder (prepare.<dataset>.image_root or "
                "$DSAH_DATA_HOME) and run `dvc repro` again")
        return ImageRows(self.store, split.table["store_index"].to_numpy())

    @property
    def validation(self) -> np.ndarray:
        """Positions (in database order) of the validation slice."""
        return np.flatnonzero(self.database.table["validation"].to_numpy(dtype=bool))

    @property
    def pool(self) -> np.ndarray:
        """Positions (in database order) that training may sample."""
        return np.flatnonzero(~self.database.table["validation"].to_numpy(dtype=bool))


def reduced_name(protocol: str, skipped: int) -> str:
    """The protocol's name once `skipped` images are left out: never mistaken for the whole protocol."""
    return f"{protocol}-less-{skipped}" if skipped else protocol


def load_prepared(folder: str | Path, images: str | Path | None = None) -> PreparedData:
    """The prepared split (data/prepared) and, given the images stage's folder, its image store less the
    images the build skipped. Without `images` nothing is skipped and there is no store (labels only)."""
    folder = Path(folder)
    meta = prepared_meta(folder)
    table = read_table(folder / TABLE_FILE)
    store, skipped = None, read_skipped(None)
    if images is not None:
        info = read_json(Path(images) / STORE_INFO, "images")
        if info.get("available"):
            store = open_store(Path(images))
            if store is None or len(store) != len(table):
                raise DataError(f"{images}: the image store does not match {folder / TABLE_FILE}; run the "
                                "images stage again")
        skipped = read_skipped(Path(images))
        if len(skipped):
            table = table[~table["id"].isin(skipped["id"])]
            meta = {**meta, "protocol": reduced_name(meta["protocol"], len(skipped)), "skipped": len(skipped),
                    "notes": [*meta.get("notes", []), f"{len(skipped)} missing or unreadable images skipped "
                              f"(listed in {Path(images) / 'skipped.csv'}): a reduced protocol"]}
        meta = {**meta, "image_size": info.get("size")}
    splits = {}
    for name in ("database", "query"):
        part = table[table["split"] == name].reset_index(drop=True)
        splits[name] = Split(part, labels_to_matrix(part["labels"]).astype(np.float32))
    return PreparedData(folder, meta, splits["database"], splits["query"], store, skipped)
