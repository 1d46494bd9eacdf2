"""The image store's format: every image of a prepared split, decoded once, in one memory-mapped uint8
array that training, encoding, the report and search read rows from (dsah.data.build writes it).

The `images` stage writes data/images/:
    images.npy   (N, S, S, 3) uint8; row r holds the image whose split-table `store_index` is r, decoded by
                 dsah.data.imaging's policy at S = images.size.<dataset> px
    skipped.csv  id, image, split, validation, store_index, reason: images that could not be read, skipped
                 (only with images.max_skipped > 0; their rows stay black and no stage uses them)
    store.json   available (false: a labels-only run, no images.npy), size, rows, skipped, policy, source
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

STORE_FILE, STORE_INFO, SKIPPED_FILE = "images.npy", "store.json", "skipped.csv"
SKIPPED_COLUMNS = ("id", "image", "split", "validation", "store_index", "reason")


@dataclass(frozen=True)
class Skip:
    row: int
    reason: str


def read_skipped(folder: Path | None) -> pd.DataFrame:
    """The images the store build skipped (empty when none were, or without a store folder)."""
    path = Path(folder) / SKIPPED_FILE if folder is not None else None
    if path is None or not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=int if c == "store_index" else str) for c in SKIPPED_COLUMNS})
    return pd.read_csv(path, dtype={"id": str, "image": str, "split": str, "reason": str}, keep_default_na=False)


def open_store(folder: Path) -> np.ndarray | None:
    """The store memory-mapped read-only (never unpickled), or None where the images are absent."""
    path = Path(folder) / STORE_FILE
    return np.load(path, mmap_mode="r", allow_pickle=False) if path.is_file() else None
