"""MS-COCO 2014: the official instance annotations, or the common hashing label lists.

Labels are 80-dim multi-hot in the order the hashing lists use (category names alphabetically);
images without any category are dropped (122,218 remain). Queries are the lists' query set where the
source has one, else a seeded choice of 5,000. Images stay in the user's folder (train2014/, val2014/).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from dsah.data.dataset import Prepared
from dsah.data.labels import check_width, matrix, read_label_table, some
from dsah.data.protocols import Protocol, subset_protocol
from dsah.data.archives import read_zip_members
from dsah.data.checksums import RemoteFile, cache_home
from dsah.data.sources import DATA_HOME_ENV, Source, data_home, locate
from dsah.data.splits import choose_queries, choose_subset
from dsah.errors import DataError

# Sizes (bytes): the Content-Length images.cocodataset.org serves for each file; messages only.
ANNOTATIONS = RemoteFile(
    name="annotations_trainval2014.zip",
    url="http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
    md5="0a379cfc70b0e71301e0f377548639bd",
    size=252_872_794,
)
IMAGES = (
    RemoteFile("train2014.zip", "http://images.cocodataset.org/zips/train2014.zip",
               md5="0da8c0bd3d6becc4dcb32757491aca88", size=13_510_573_713),
    RemoteFile("val2014.zip", "http://images.cocodataset.org/zips/val2014.zip",
               md5="a3d79f5ed8d289b7a7554ce06a5782b3", size=6_645_013_297),
)
# Looked for in $DSAH_DATA_HOME: a label table, a folder of HashNet lists, the official annotations.
LOCAL_NAMES = ("coco-hashing-labels.tsv.gz", "coco-hashing-labels.tsv", "coco/lists",
               "annotations_trainval2014.zip", "coco/annotations")
INSTANCE_FILES = ("instances_train2014.json", "instances_val2014.json")
COCO_CLASSES = tuple(sorted((
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)))
COCO_NAME = re.compile(r"COCO_(train|val)2014_\d+\.jpg$")


def labels_from_instances(documents: dict[str, bytes]) -> pd.DataFrame:
    """Official instances_*.json documents -> image, set, labels (80-dim, alphabetical categories), where.
    An image id or file listed twice, or an annotation of an image that is not listed, is an error."""
    rows: dict[str, set[int]] = {}
    where: dict[str, str] = {}
    for name, raw in documents.items():
        doc = json.loads(raw)
        by_id = {c["id"]: c["name"] for c in doc["categories"]}
        if sorted(by_id.values()) != list(COCO_CLASSES):
            raise DataError(f"{name}: categories differ from the 80 COCO categories")
        index = {cid: COCO_CLASSES.index(cname) for cid, cname in by_id.items()}
        files: dict[int, str] = {}
        for img in doc["images"]:
            if img["id"] in files:
                raise DataError(f"{name}: image id {img['id']} is listed twice ({files[img['id']]} and "
                                f"{img['file_name']}); each image once")
            if img["file_name"] in where:
                first = next((i for i, f in files.items() if f == img["file_name"]), None)
                raise DataError(f"{name}: {img['file_name']} is listed twice (image ids "
                                f"{first if first is not None else where[img['file_name']]} and {img['id']}); "
                                "each image once")
            files[img["id"]] = img["file_name"]
            where[img["file_name"]] = f"{name} image id {img['id']}"
            rows[img["file_name"]] = set()
        for ann in doc["annotations"]:
            if ann["image_id"] not in files:
                raise DataError(f"{name}: annotation {ann.get('id', '?')} is of image id {ann['image_id']}, which "
                                "the file does not list; the annotations file is corrupt")
            rows[files[ann["image_id"]]].add(index[ann["category_id"]])
    images = sorted(rows)
    labels = np.zeros((len(images), len(COCO_CLASSES)), dtype=np.uint8)
    for i, image in enumerate(images):
        labels[i, sorted(rows[image])] = 1
    strings = ["".join(map(str, row)) for row in labels]
    return pd.DataFrame({"image": images, "set": "", "labels": strings, "where": [where[i] for i in images]})


def read_coco_labels(path: Path) -> pd.DataFrame:
    if path.name == ANNOTATIONS.name:
        try:
            members = read_zip_members(path, [f"annotations/{n}" for n in INSTANCE_FILES])  # within the limits
            return labels_from_instances(dict(zip(INSTANCE_FILES, members)))
        except (zipfile.BadZipFile, KeyError) as exc:
            raise DataError(f"{path}: not the COCO 2014 annotations archive ({exc})") from exc
    if path.is_dir() and all((path / n).is_file() for n in INSTANCE_FILES):
        return labels_from_instances({n: (path / n).read_bytes() for n in INSTANCE_FILES})
    table = read_label_table(path)
    check_width(table, len(COCO_CLASSES), "COCO", path)
    return table


def references(table: pd.DataFrame, to_reference, source: Path | str) -> list[str]:
    """Each row's image as a reference under the image folder; a name that is not one is an error naming
    its row."""
    out = []
    for position, name in enumerate(table["image"]):
        try:
            out.append(to_reference(name))
        except DataError as exc:
            raise DataError(f"{source}: {table['where'].iloc[position]}: {exc}") from None
    return out


def merge_listed_twice(table: pd.DataFrame, source: Path | str) -> tuple[pd.DataFrame, int]:
    """One row per image, sorted by image. An image listed again with the same labels and on the same side
    (query, or database: train is a part of it) is one image, its rows merged (how many were dropped is
    returned); listed with other labels, or both as a query and in the database, it is an error naming
    the images and their rows."""
    repeated = table["image"].duplicated(keep=False).to_numpy()
    if repeated.any():
        twice = table[repeated].assign(_query=table["set"][repeated].eq("query"))
        groups = twice.groupby("image", sort=True)
        for column, problem, fix in (
                ("labels", "listed more than once with different labels",
                 "each image has one set of labels: correct or remove the wrong rows"),
                ("_query", "both a query and in the database (or train)",
                 "a query image must not be in the database: remove it from one of the lists")):
            clashes = groups[column].nunique()
            clashes = clashes[clashes > 1].index
            if len(clashes):
                listed = [f"{image} ({', '.join(twice.loc[twice['image'] == image, 'where'])})"
                          for image in clashes[:3]]
                count = f"{len(clashes):,} images are" if len(clashes) > 1 else "an image is"
                raise DataError(f"{source}: {count} {problem}: {some(listed, len(clashes))}; {fix}")
    # The row kept for an image listed twice: a query's, then a database's, then train's.
    order = table["set"].map({"query": 0, "database": 1}).fillna(2)
    table = table.assign(_order=order).sort_values(["_order", "image"], kind="stable")
    merged = table.drop_duplicates("image").drop(columns="_order").sort_values("image", kind="stable")
    return merged, len(table) - len(merged)


def image_reference(name: str) -> str:
    """'.../COCO_val2014_000000000042.jpg' -> 'val2014/COCO_val2014_000000000042.jpg'."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    match = COCO_NAME.search(base)
    if not match:
        raise DataError(f"{name!r} is not a COCO 2014 image name (COCO_train2014_*.jpg / COCO_val2014_*.jpg)")
    return f"{match.group(1)}2014/{base}"


def locate_coco(labels: str, image_root: str, download: bool, download_images: bool = False
                ) -> dict[str, Source | None]:
    """The label source and the folder holding train2014/ and val2014/ (None: not found, labels-only).
    `download` fetches the annotations; the images (two zips, 19 GB, unpacked into the cache) only with
    their own switch, `download_images`, so a labels-only run never starts a 19 GB download."""
    found = {"labels": locate("MS-COCO labels", LOCAL_NAMES, explicit=labels, remotes=[ANNOTATIONS],
                              download=download)}
    candidates = [(Path(image_root), "params")] if image_root else []
    if data_home() is not None:
        candidates.append((data_home() / "coco", DATA_HOME_ENV))
    unpacked = cache_home() / "coco"  # where prepare unpacks the official zips
    candidates.append((unpacked, "cache"))
    found["images"] = None
    for path, origin in candidates:
        if (path / "train2014").is_dir() and (path / "val2014").is_dir():
            # Unpacked by us, the folder is the official zips: their checksums name it.
            found["images"] = Source(path, origin, IMAGES, unpack=True) if path == unpacked else Source(path, origin)
            break
    if found["images"] is None and download_images:
        found["images"] = Source(unpacked, "download", IMAGES, unpack=True)
    return found


def prepare_coco(protocol: Protocol, labels: Source, images: Source | None, split_seed: int,
                 subset: int = 0) -> Prepared:
    notes = [] if images is not None else [
        "COCO images not found (train2014/ and val2014/ in prepare.coco.image_root, $DSAH_DATA_HOME/coco or the "
        "download cache); labels-only: set prepare.coco.image_root, or prepare.coco.download_images: true to "
        "download them (19 GB)"]
    return labelled_prepared("coco", protocol, list(COCO_CLASSES), read_coco_labels(labels.path), split_seed,
                             image_reference, images is not None, notes, subset, source=labels.path)


def labelled_prepared(dataset: str, protocol: Protocol, classes: list[str], table: pd.DataFrame,
                      split_seed: int, to_reference, images_available: bool, notes: list[str],
                      subset: int = 0, source: Path | str = "") -> Prepared:
    """Shared by the list-based datasets: merge or refuse images listed twice, drop unlabelled rows, take
    the subset, pick queries. `table` holds image, set, labels and where (each row's place in `source`).
    Whether each image file exists and decodes is the image store's to find out (dsah.data.store)."""
    notes = list(notes)
    table = table.assign(image=references(table, to_reference, source))
    table, merged = merge_listed_twice(table, source)
    if merged:
        notes.append(f"merged {merged:,} rows that list an image already listed, with the same labels (as the "
                     "public lists do: train is a part of the database): each is one image")
    labels = matrix(table)
    empty = labels.sum(axis=1) == 0
    if empty.any():
        notes.append(f"dropped {int(empty.sum())} images without any label")
        table, labels = table[~empty], labels[~empty]
    source_queries = (table["set"] == "query").to_numpy() if (table["set"] == "query").any() else None
    base = protocol
    if subset:
        protocol = subset_protocol(base, subset)
        if subset > len(table):
            raise DataError(f"prepare.{dataset}.subset: {subset} images, but the source has {len(table)}")
        keep = choose_subset(table["image"].tolist(), source_queries, subset, protocol.queries, split_seed)
        table, labels = table[keep], labels[keep]
        source_queries = None if source_queries is None else source_queries[keep]
        notes.append(f"subset: {subset} of the {base.name} protocol's images (seeded by split_seed), "
                     f"{protocol.queries} queries; not the full protocol")
    images = table["image"].tolist()
    query = source_queries if source_queries is not None else choose_queries(images, protocol.queries, split_seed)
    return Prepared(dataset=dataset, protocol=protocol, classes=classes, ids=images, labels=labels,
                    query=query, image_refs=images, images_available=images_available, notes=notes,
                    base_protocol=base.name, subset=subset)
