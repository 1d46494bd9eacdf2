"""What every dataset loader returns, and how it becomes the split table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dsah.data.protocols import Protocol
from dsah.data.splits import choose_validation
from dsah.data.table import COLUMNS
from dsah.errors import DataError

# The validation slice takes prepare.validation_size database images, but at most a tenth of the database:
# a small collection (your own photos) keeps nine tenths to train on.
VALIDATION_SHARE = 10


def validation_count(requested: int, database: int) -> int:
    """How many database images the validation slice holds: `requested` (prepare.validation_size), at most
    a tenth of the `database` images; a database of fewer than ten images cannot be split at all."""
    if database < VALIDATION_SHARE:
        raise DataError(f"{database} database image(s) are too few to split: the validation slice takes a tenth "
                        f"of the database and training the rest, so at least {VALIDATION_SHARE} are needed")
    return min(requested, database // VALIDATION_SHARE)


@dataclass
class Prepared:
    """A dataset read from its source, split by the protocol.

    labels: (N, C) uint8 multi-hot; query: (N,) bool; image_refs: where each image's pixels are (a path
    under the image folder, an archive member, a mosaic's tiles). images_available: False for a
    labels-only run (the image folder was not found): no image store is built.
    """

    dataset: str
    protocol: Protocol
    classes: list[str]
    ids: list[str]
    labels: np.ndarray
    query: np.ndarray
    image_refs: list[str]
    images_available: bool = True
    base_protocol: str = ""  # the published protocol a subset is drawn from ("" : this is it)
    subset: int = 0
    notes: list[str] = field(default_factory=list)
    sources: dict[str, Any] = field(default_factory=dict)  # their fingerprints (dsah.data.sources)

    def validation_count(self, validation_size: int) -> int:
        return validation_count(validation_size, int((~self.query).sum()))

    def table(self, validation_size: int, split_seed: int) -> pd.DataFrame:
        validation = choose_validation(self.ids, ~self.query, self.validation_count(validation_size), split_seed)
        width = self.labels.shape[1]
        label_strings = np.ascontiguousarray(self.labels.astype(np.uint8) + ord("0")).view(f"S{width}").ravel()
        # Each image's row in the image store is fixed here, at split time; the store stage fills it.
        store_index = np.arange(len(self.ids)) if self.images_available else np.full(len(self.ids), -1)
        table = pd.DataFrame({
            "id": self.ids,
            "split": np.where(self.query, "query", "database"),
            "validation": validation,
            "labels": [s.decode("ascii") for s in label_strings],
            "image": self.image_refs,
            "store_index": store_index,
        })
        return table.loc[:, list(COLUMNS)]

    def meta(self, split_seed: int, validation_size: int) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "protocol": self.protocol.name,
            "base_protocol": self.base_protocol or self.protocol.name,
            "family": self.protocol.suite,  # its validation suite and its headline metric (SELECTION)
            "subset": self.subset,
            "stand_in": self.protocol.stand_in,
            "classes": list(self.classes),
            "num_classes": len(self.classes),
            "counts": {"rows": len(self.ids), "queries": int(self.query.sum()),
                       "database": int((~self.query).sum()), "validation": self.validation_count(validation_size)},
            "validation_size": validation_size,  # the param: the count above is it, or a tenth of the database
            "split_seed": split_seed,
            "images": {"available": self.images_available},
            "sources": self.sources,
            "notes": self.notes,
        }
