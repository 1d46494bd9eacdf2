"""Reading a prepared folder back for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dsah.data.table import META_FILE, STORE_FILE, TABLE_FILE, labels_to_matrix, open_store, read_meta, read_table
from dsah.errors import DataError


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
    store: np.ndarray | None

    def images(self, split: Split) -> torch.Tensor:
        """(n, 3, H, W) uint8 images of a split, from the image store."""
        if self.store is None:
            raise DataError(
                f"{self.folder}: dataset {self.meta['dataset']!r} keeps its images in a folder "
                f"(images available: {self.meta['images']['available']}); training from image folders is "
                "not supported yet: use cifar10 or cifar10-mosaic")
        rows = split.table["store_index"].to_numpy()
        return torch.from_numpy(np.ascontiguousarray(self.store[rows].transpose(0, 3, 1, 2)))

    @property
    def validation(self) -> np.ndarray:
        """Positions (in database order) of the validation slice."""
        return np.flatnonzero(self.database.table["validation"].to_numpy(dtype=bool))

    @property
    def pool(self) -> np.ndarray:
        """Positions (in database order) that training may sample."""
        return np.flatnonzero(~self.database.table["validation"].to_numpy(dtype=bool))


def load_prepared(folder: str | Path) -> PreparedData:
    folder = Path(folder)
    for name in (TABLE_FILE, META_FILE):
        if not (folder / name).is_file():
            raise DataError(f"{folder / name} not found; run the prepare stage first")
    table = read_table(folder / TABLE_FILE)
    splits = {}
    for name in ("database", "query"):
        part = table[table["split"] == name].reset_index(drop=True)
        splits[name] = Split(part, labels_to_matrix(part["labels"]).astype(np.float32))
    store = open_store(folder / STORE_FILE) if (folder / STORE_FILE).is_file() else None
    return PreparedData(folder, read_meta(folder / META_FILE), splits["database"], splits["query"], store)
