"""NUS-WIDE, 21 most frequent concepts.

Images cannot be downloaded anonymously: users obtain the image archive and the concept files from the
dataset's authors (docs/data.md, "NUS-WIDE and COCO images") and point prepare at them. Accepted sources:
- the official folder: Concepts81.txt, Groundtruth/AllLabels/Labels_<concept>.txt, ImageList/Imagelist.txt
  (full protocol: images with one of the 21 most frequent concepts, 195,834; 2,100 seeded queries);
- the common lists with a database list (full protocol, the test list as queries);
- the public train (10,500) + test (2,100) lists alone: the "nuswide21-reduced" protocol, named so.
Concepts are ordered by frequency (index 0 the most frequent), as in the common lists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dsah.data.coco import labelled_prepared
from dsah.data.dataset import Prepared
from dsah.data.labels import check_width, read_label_table
from dsah.data.protocols import get_protocol
from dsah.data.sources import DATA_HOME_ENV, Source, data_home, locate
from dsah.errors import DataError

LOCAL_NAMES = ("nuswide21-hashing-labels.tsv.gz", "nuswide21-hashing-labels.tsv", "nuswide/lists",
               "nuswide", "NUS-WIDE")
TOP_CONCEPTS = 21


def read_official(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """The official concept files -> image, set, labels over the 21 most frequent concepts, where."""
    concepts = (folder / "Concepts81.txt").read_text().split()
    listed = [(number, line.strip().replace("\\", "/")) for number, line in
              enumerate((folder / "ImageList" / "Imagelist.txt").read_text().splitlines(), 1) if line.strip()]
    images = [name for _, name in listed]
    columns = []
    for concept in concepts:
        path = folder / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt"
        try:
            values = np.loadtxt(path, dtype=np.int64, ndmin=1)
        except ValueError as exc:
            raise DataError(f"{path}: not one 0 or 1 per line ({exc})") from None
        if len(values) != len(images):
            raise DataError(f"{path}: {len(values)} rows, but Imagelist.txt lists {len(images)} images")
        bad = np.flatnonzero((values != 0) & (values != 1))
        if len(bad):
            more = f" and {len(bad) - 1} more rows" if len(bad) > 1 else ""
            raise DataError(f"{path}: value {values[bad[0]]} at row {bad[0] + 1} ({images[bad[0]]}){more}; each row "
                            "is 0 or 1 (the image of that row of Imagelist.txt has the concept or not)")
        columns.append(values.astype(np.uint8))
    labels = np.stack(columns, axis=1)
    frequency = labels.sum(axis=0, dtype=np.int64)
    top = sorted(range(len(concepts)), key=lambda k: (-frequency[k], concepts[k]))[:TOP_CONCEPTS]
    labels = np.ascontiguousarray(labels[:, top])
    strings = ["".join(map(str, row)) for row in labels]
    table = pd.DataFrame({"image": [f"Flickr/{i}" for i in images], "set": "", "labels": strings,
                          "where": [f"ImageList/Imagelist.txt line {number}" for number, _ in listed]})
    return table, [concepts[k] for k in top]


def locate_nuswide(labels: str, image_root: str) -> dict[str, Source | None]:
    """The label source (lists or the official folder) and the image folder (None: labels-only)."""
    found = {"labels": locate("NUS-WIDE", LOCAL_NAMES, explicit=labels)}
    root, origin = (Path(image_root), "params") if image_root else (
        (data_home() / "nuswide", DATA_HOME_ENV) if data_home() else (None, ""))
    found["images"] = Source(root, origin) if root is not None and root.is_dir() else None
    return found


def prepare_nuswide(labels: Source, images: Source | None, split_seed: int, subset: int = 0) -> Prepared:
    path = labels.path
    if path.is_dir() and (path / "Concepts81.txt").is_file():
        table, classes = read_official(path)
        protocol = get_protocol("nuswide21")
    else:
        table = read_label_table(path)
        classes = [f"concept_{k:02d}" for k in range(TOP_CONCEPTS)]  # the lists do not name them
        sets = set(table["set"])
        if "query" not in sets:
            raise DataError(f"{path}: the lists have no test/query set (sets found: {sorted(sets)})")
        full = "database" in sets
        if not full:
            table = table.assign(set=table["set"].replace({"train": "database"}))
        protocol = get_protocol("nuswide21" if full else "nuswide21-reduced")
    check_width(table, TOP_CONCEPTS, "NUS-WIDE-21", path)
    notes = [] if images is not None else [
        "NUS-WIDE images not found (prepare.nuswide21.image_root or $DSAH_DATA_HOME/nuswide); labels-only"]
    if protocol.name.endswith("-reduced"):
        notes.append("reduced protocol: only the public 10,500 train + 2,100 test lists")
    return labelled_prepared("nuswide21", protocol, classes, table, split_seed,
                             lambda name: name.replace("\\", "/"), images is not None, notes, subset, source=path)
