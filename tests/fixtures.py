"""Builders of small source archives in the formats users hand to `prepare`, tiny training data, folders
in the COCO and NUS-WIDE layouts made of real CIFAR-10 pixels, and the project's own params.yaml as config
objects (the one place defaults live, for the tests too)."""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import io
import json
import multiprocessing
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dsah.config import load_params
from dsah.data.coco import COCO_CLASSES
from dsah.data.mosaic import tile
from dsah.data.protocols import CIFAR10_CLASSES
from dsah.settings import FROM_SCRATCH

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")


def project_config(dotted: str, kind: type, **changes: Any):
    """A section of the project's params.yaml as its config type, with some fields changed."""
    return dataclasses.replace(PARAMS.section(dotted, kind), **changes)


def method_config(method: str, **changes: Any):
    """params.yaml's methods.<method> settings, with some fields changed."""
    from dsah.settings import method_settings

    return dataclasses.replace(method_settings(PARAMS, method), **changes)


# The tests' network: the CIFAR ResNet from scratch at the images' own size (seconds on 2 cores), whatever
# params.yaml's default network is.
TEST_NETWORK = dict(FROM_SCRATCH)


def train_config(**changes: Any):
    from dsah.settings import TrainConfig

    return project_config("train_imgnet", TrainConfig, **{**TEST_NETWORK, **changes})


def lae_config(**changes: Any):
    from dsah.settings import LAEConfig

    return project_config("train_lae", LAEConfig, **changes)


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def class_image(rng: np.random.Generator, cls: int, size: int = 32) -> np.ndarray:
    """A flat colour per class plus a little noise: classes stay distinguishable after JPEG."""
    base = np.array([(cls * 25) % 256, (cls * 70) % 256, (255 - cls * 25) % 256], dtype=np.int16)
    noise = rng.integers(-8, 9, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_cifar_jpg_archive(path: Path, train_per_class: int, test_per_class: int, seed: int = 0,
                           prefix: str = "") -> Path:
    """An image-folder archive `train|test/<class>/NNNN.jpg` like ../shared/data/cifar10-jpg.tar.xz."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:xz" if path.name.endswith(".xz") else "w:gz") as tar:
        for subset, count in (("train", train_per_class), ("test", test_per_class)):
            for cls, name in enumerate(CIFAR10_CLASSES):
                for i in range(count):
                    add_bytes(tar, f"{prefix}{subset}/{name}/{i:04d}.jpg", jpeg_bytes(class_image(rng, cls)))
    return path


def make_cifar_python_archive(path: Path, per_batch: int, seed: int = 0) -> tuple[Path, np.ndarray, list[int]]:
    """The official python layout (cifar-10-batches-py/data_batch_1..5, test_batch), tiny batches.

    Returns the archive, the (N, 3072) pixel rows in batch order and the labels.
    """
    rng = np.random.default_rng(seed)
    all_rows, all_labels = [], []
    with tarfile.open(path, "w:gz") as tar:
        for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            rows = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
            payload = pickle.dumps({b"batch_label": batch.encode(), b"labels": labels, b"data": rows,
                                    b"filenames": [b"x.png"] * per_batch}, protocol=2)
            add_bytes(tar, f"cifar-10-batches-py/{batch}", payload)
            all_rows.append(rows)
            all_labels += labels
    return path, np.concatenate(all_rows), all_labels


# Folders in the COCO and NUS-WIDE layouts, made of real pixels: no COCO or NUS-WIDE image is at hand here,
# so each image is a 2x2 mosaic of CIFAR-10 images (as the cifar10-mosaic stand-in), labelled by the classes
# shown through the mappings below.

# CIFAR-10 class -> COCO category name. Deer and frog have no COCO counterpart: sheep and teddy bear are
# arbitrary choices, fixed so that labels are reproducible.
CIFAR_TO_COCO = {"airplane": "airplane", "automobile": "car", "bird": "bird", "cat": "cat", "deer": "sheep",
                 "dog": "dog", "frog": "teddy bear", "horse": "horse", "ship": "boat", "truck": "truck"}
# CIFAR-10 class -> NUS-WIDE concept (frog has none of its own: "animal").
CIFAR_TO_NUSWIDE = {"airplane": "plane", "automobile": "cars", "bird": "birds", "cat": "cat", "deer": "elk",
                    "dog": "dog", "frog": "animal", "horse": "horses", "ship": "boats", "truck": "vehicle"}
# The official instances_*2014.json categories: (id, name, supercategory), ids 1..90 with the official gaps.
COCO_CATEGORIES = tuple((cid, name, sup) for sup, members in (
    ("person", ((1, "person"),)),
    ("vehicle", ((2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
                 (8, "truck"), (9, "boat"))),
    ("outdoor", ((10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"),
                 (15, "bench"))),
    ("animal", ((16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"),
                (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"))),
    ("accessory", ((27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"))),
    ("sports", ((34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"),
                (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
                (43, "tennis racket"))),
    ("kitchen", ((44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"),
                 (51, "bowl"))),
    ("food", ((52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
              (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"))),
    ("furniture", ((62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"),
                   (70, "toilet"))),
    ("electronic", ((72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
                    (77, "cell phone"))),
    ("appliance", ((78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"))),
    ("indoor", ((84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
                (89, "hair drier"), (90, "toothbrush"))),
) for cid, name in members)
COCO_MAX_IMAGE_ID = 581_929  # COCO 2014 image ids run from 1 to about this
# Concepts81.txt of the official release: alphabetical, one per line.
NUSWIDE_CONCEPTS = tuple("""airport animal beach bear birds boats book bridge buildings cars castle cat cityscape
clouds computer coral cow dancing dog earthquake elk fire fish flags flowers food fox frost garden glacier grass
harbor horses house lake leaf map military moon mountain nighttime ocean person plane plants police protest
railroad rainbow reflection road rocks running sand sign sky snow soccer sports statue street sun sunset surf
swimmers tattoo temple tiger tower town toy train tree valley vehicle water waterfall wedding whales window
zebra""".split())
CIFAR_IMAGES = 60_000


def cifar_sample(archive: Path, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of `count` images from a CIFAR-10 image-folder archive (`.../<class>/NNNN.jpg`):
    uint8 (count, 32, 32, 3) pixels and class indices (official order), sorted by member name.

    One pass over the archive; only the chosen members are kept and decoded. The sample is the `count`
    members with the smallest seeded hash of their name, so it does not depend on the archive's order.
    """
    if count <= 0:
        return np.zeros((0, 32, 32, 3), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    chosen: list[tuple[int, str, bytes]] = []  # a max-heap on the hash (negated): the `count` smallest so far
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 2 or parts[-2] not in CIFAR10_CLASSES:
                continue
            key = -int.from_bytes(hashlib.blake2b(f"{seed}/{member.name}".encode(), digest_size=8).digest(), "big")
            if len(chosen) < count:
                heapq.heappush(chosen, (key, member.name, tar.extractfile(member).read()))
            elif key > chosen[0][0]:
                heapq.heapreplace(chosen, (key, member.name, tar.extractfile(member).read()))
    if len(chosen) < count:
        raise ValueError(f"{archive}: {len(chosen)} CIFAR-10 images, fewer than the {count} asked for")
    chosen.sort(key=lambda item: item[1])
    images = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for _, _, data in chosen])
    classes = np.array([CIFAR10_CLASSES.index(name.split("/")[-2]) for _, name, _ in chosen], dtype=np.int64)
    return images, classes


def _mosaics(images: np.ndarray, count: int, grid: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` upscaled mosaics and their (count, grid*grid) tile indices, row-major."""
    n, k = len(images), grid * grid
    rng = np.random.default_rng(seed)
    if count * k <= n:  # enough images: none is used twice
        picks = rng.permutation(n)[:count * k].reshape(count, k)
    else:  # distinct within a mosaic; a tile may recur across mosaics
        picks = np.stack([rng.choice(n, k, replace=False) for _ in range(count)])
    mosaics = [np.asarray(Image.fromarray(m).resize((size, size), Image.Resampling.BICUBIC))
               for m in tile(images, picks, grid)]
    return (np.stack(mosaics) if mosaics else np.zeros((0, size, size, 3), dtype=np.uint8)), picks


def mosaic_photos(images: np.ndarray, classes: np.ndarray, count: int, grid: int = 2, size: int = 128,
                  seed: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """`count` seeded mosaics of grid x grid distinct images, upscaled (bicubic) to size x size, and for
    each the sorted class indices it shows."""
    mosaics, picks = _mosaics(images, count, grid, size, seed)
    return mosaics, [sorted(set(classes[row].tolist())) for row in picks]


def _layout_mosaics(archive: Path, count: int, seed: int, size: int, grid: int = 2):
    """Mosaics for a layout builder and their tiles' classes: no CIFAR-10 image is used twice until the
    archive's 60,000 run out (so the archive needs count * grid**2 images, or all 60,000)."""
    images, classes = cifar_sample(archive, min(count * grid * grid, CIFAR_IMAGES), seed)
    mosaics, picks = _mosaics(images, count, grid, size, seed)
    return mosaics, classes[picks]


def make_coco_layout(root: Path, archive: Path, train: int, val: int, seed: int = 0, size: int = 128) -> dict:
    """The official COCO 2014 layout, of CIFAR-10 mosaics: train2014/COCO_train2014_<id>.jpg,
    val2014/COCO_val2014_<id>.jpg, annotations/instances_{train,val}2014.json (official instances format,
    all 80 categories, one box per class shown: its first tile's, row-major) and coco-hashing-labels.tsv.

    Labels go through CIFAR_TO_COCO (deer -> sheep and frog -> teddy bear are arbitrary: no COCO
    counterpart). Returns images (`train2014/COCO_train2014_....jpg`), labels (80-char strings in
    COCO_CLASSES order) and classes (the CIFAR-10 classes shown), aligned, train first.
    """
    grid = 2
    mosaics, tiles = _layout_mosaics(archive, train + val, seed, size, grid)
    # Distinct ids in COCO's range; the file name is the id, zero-padded, as in the real release.
    ids = np.random.default_rng([seed, 2014]).choice(COCO_MAX_IMAGE_ID, train + val, replace=False) + 1
    category = {name: cid for cid, name, _ in COCO_CATEGORIES}
    cell = size / grid
    built: dict[str, list] = {"images": [], "labels": [], "classes": []}
    annotation_id = 0
    for subset, rows in (("train2014", range(train)), ("val2014", range(train, train + val))):
        (root / subset).mkdir(parents=True, exist_ok=True)
        doc = {
            "info": {"description": "COCO 2014 layout of CIFAR-10 mosaics (a stand-in, tests/fixtures.py)",
                     "url": "", "version": "1.0", "year": 2014, "contributor": "dsah tests",
                     "date_created": "2014/09/01"},
            "licenses": [{"id": 1, "name": "CIFAR-10", "url": "https://www.cs.toronto.edu/~kriz/cifar.html"}],
            "images": [], "annotations": [],
            "categories": [{"id": cid, "name": name, "supercategory": sup} for cid, name, sup in COCO_CATEGORIES],
        }
        for i in rows:
            image_id, file_name = int(ids[i]), f"COCO_{subset}_{int(ids[i]):012d}.jpg"
            (root / subset / file_name).write_bytes(jpeg_bytes(mosaics[i]))
            doc["images"].append({"id": image_id, "file_name": file_name, "width": size, "height": size,
                                  "license": 1})
            first: dict[int, int] = {}  # class -> the first tile showing it
            for position, cls in enumerate(tiles[i].tolist()):
                first.setdefault(cls, position)
            label = ["0"] * len(COCO_CLASSES)
            for cls, position in sorted(first.items()):
                name = CIFAR_TO_COCO[CIFAR10_CLASSES[cls]]
                label[COCO_CLASSES.index(name)] = "1"
                y, x = (v * cell for v in divmod(position, grid))
                annotation_id += 1
                doc["annotations"].append({
                    "id": annotation_id, "image_id": image_id, "category_id": category[name],
                    "bbox": [x, y, cell, cell], "area": cell * cell, "iscrowd": 0,
                    "segmentation": [[x, y, x + cell, y, x + cell, y + cell, x, y + cell]]})
            built["images"].append(f"{subset}/{file_name}")
            built["labels"].append("".join(label))
            built["classes"].append(sorted(first))
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(doc))
    # The label-table form of the same labels (the shared coco-hashing-labels.tsv.gz lists bare file names).
    table = sorted(zip((i.split("/")[1] for i in built["images"]), built["labels"]))
    (root / "coco-hashing-labels.tsv").write_text(
        "image\thashnet_set\tlabels\n" + "".join(f"{name}\t\t{label}\n" for name, label in table))
    return built


def make_nuswide_layout(root: Path, archive: Path, count: int, missing: int = 3, corrupt: int = 1, seed: int = 0,
                        size: int = 128) -> dict:
    """The official NUS-WIDE release layout, of CIFAR-10 mosaics: Concepts81.txt, ImageList/Imagelist.txt
    (`folder\\NNNN_<flickr id>.jpg`, relative to Flickr/), Groundtruth/AllLabels/Labels_<concept>.txt and
    Flickr/<folder>/<name>.jpg; incomplete as real copies are: `missing` listed images absent, `corrupt`
    truncated.

    Labels go through CIFAR_TO_NUSWIDE; an image's folder (a Flickr query tag in the real release) is the
    concept of its first tile. Returns images (`Flickr/<folder>/<name>.jpg`, list order), labels (81-char
    strings in Concepts81 order), classes (the CIFAR-10 classes shown), missing and corrupt (references).
    """
    mosaics, tiles = _layout_mosaics(archive, count, seed, size)
    rng = np.random.default_rng([seed, 81])
    flickr_ids = rng.choice(9 * 10**9, count, replace=False) + 10**9  # 10 digits
    folders = [CIFAR_TO_NUSWIDE[CIFAR10_CLASSES[row[0]]] for row in tiles.tolist()]
    # The list is grouped by folder, images numbered within their folder.
    order = sorted(range(count), key=lambda i: (folders[i], i))
    numbers: dict[str, int] = {}
    names = {}
    for i in order:
        numbers[folders[i]] = numbers.get(folders[i], 0) + 1
        names[i] = f"{numbers[folders[i]]:04d}_{flickr_ids[i]}.jpg"
    broken = rng.choice(count, missing + corrupt, replace=False)
    missing_rows, corrupt_rows = set(broken[:missing].tolist()), set(broken[missing:].tolist())
    built: dict[str, list] = {"images": [], "labels": [], "classes": [], "missing": [], "corrupt": []}
    for i in order:
        reference = f"Flickr/{folders[i]}/{names[i]}"
        shown = sorted(set(tiles[i].tolist()))
        concepts = {CIFAR_TO_NUSWIDE[CIFAR10_CLASSES[c]] for c in shown}
        built["images"].append(reference)
        built["labels"].append("".join("1" if c in concepts else "0" for c in NUSWIDE_CONCEPTS))
        built["classes"].append(shown)
        if i in missing_rows:
            built["missing"].append(reference)
            continue
        (root / reference).parent.mkdir(parents=True, exist_ok=True)
        data = jpeg_bytes(mosaics[i])
        if i in corrupt_rows:  # an interrupted download: the header survives, the scan data is cut
            data = data[:len(data) * 2 // 5]
            built["corrupt"].append(reference)
        (root / reference).write_bytes(data)
    (root / "Concepts81.txt").write_text("".join(f"{c}\n" for c in NUSWIDE_CONCEPTS))
    (root / "ImageList").mkdir(parents=True, exist_ok=True)
    (root / "ImageList" / "Imagelist.txt").write_text(
        "".join(f"{folders[i]}\\{names[i]}\n" for i in order))
    (root / "Groundtruth" / "AllLabels").mkdir(parents=True, exist_ok=True)
    for k, concept in enumerate(NUSWIDE_CONCEPTS):
        (root / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt").write_text(
            "".join(f"{label[k]}\n" for label in built["labels"]))
    return built


# COCO-like photos: 640x480 of native-resolution CIFAR-10 tiles, a few pasted at 2x off the grid, encoded
# to about the size of real COCO photos (150 KB), so that they cost about as much to decode: flat or smoothly
# upscaled images decode far faster than photos and would flatter a store-building benchmark.
COCO_LIKE_GRID = (15, 20)  # rows, columns of 32-px tiles: 480 x 640
COCO_LIKE_LARGE = 4  # tiles pasted at 2x (pixel-doubled, no smoothing) at seeded positions
COCO_LIKE_JPEG = {"quality": 93, "subsampling": 2}  # 4:2:0 like most camera JPEGs; mean ~148 KB
COCO_LIKE_POOL = 10_000  # CIFAR-10 images to draw tiles from: photos share tiles, never within one
_coco_like_pool: np.ndarray | None = None


def _set_coco_like_pool(pool: np.ndarray) -> None:
    global _coco_like_pool
    _coco_like_pool = pool


def _write_coco_like_jpeg(job: tuple[Path, int, int]) -> None:
    path, seed, index = job
    pool = _coco_like_pool
    rows, cols = COCO_LIKE_GRID
    rng = np.random.default_rng([seed, index])  # per photo: the same bytes whichever worker writes it
    picks = rng.choice(len(pool), rows * cols + COCO_LIKE_LARGE, replace=False)
    photo = pool[picks[:rows * cols]].reshape(rows, cols, 32, 32, 3).transpose(0, 2, 1, 3, 4)
    photo = np.ascontiguousarray(photo.reshape(rows * 32, cols * 32, 3))
    for j in picks[rows * cols:]:
        y, x = rng.integers(0, rows * 32 - 63), rng.integers(0, cols * 32 - 63)
        photo[y:y + 64, x:x + 64] = pool[j].repeat(2, axis=0).repeat(2, axis=1)
    Image.fromarray(photo).save(path, format="JPEG", **COCO_LIKE_JPEG)


def make_coco_like_jpegs(folder: Path, archive: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` COCO-like photos (640x480, about 150 KB, real CIFAR-10 pixels at native scale) named
    COCO_train2014_<id>.jpg in `folder`, for benchmarks that must decode photo-like JPEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = COCO_LIKE_GRID
    pool, _ = cifar_sample(archive, min(max(count, 1) * (rows * cols + COCO_LIKE_LARGE), COCO_LIKE_POOL), seed)
    ids = np.random.default_rng([seed, 2014]).choice(COCO_MAX_IMAGE_ID, count, replace=False) + 1
    paths = [folder / f"COCO_train2014_{int(i):012d}.jpg" for i in ids]
    jobs = [(path, seed, index) for index, path in enumerate(paths)]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cpus, count // 200)
    if workers > 1:  # worth the start-up only for many photos
        with multiprocessing.Pool(workers, _set_coco_like_pool, (pool,)) as workers_pool:
            workers_pool.map(_write_coco_like_jpeg, jobs, chunksize=64)
    else:
        _set_coco_like_pool(pool)
        for job in jobs:
            _write_coco_like_jpeg(job)
    return paths


def easy_two_class_data(database: int = 160, queries: int = 40, bits: int = 8, seed: int = 0):
    """Two classes any network separates (flat colours plus noise), as TrainData and query images/labels."""
    import torch

    from dsah.training.lae import train_lae
    from dsah.training.loop import TrainData

    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 2, database + queries)
    images = np.stack([class_image(rng, 3 * int(c)) for c in classes]).transpose(0, 3, 1, 2)
    labels = np.eye(2, dtype=np.float32)[classes]
    lae = train_lae(labels[:database], bits, lae_config(steps=200), seed=seed, progress=False)
    data = TrainData(
        images=torch.from_numpy(np.ascontiguousarray(images[:database])), labels=torch.from_numpy(labels[:database]),
        pool=torch.arange(20, database), validation=torch.arange(20),
        label_codes=torch.from_numpy(lae.label_codes), decoder=lae.model.decoder)
    return data, (torch.from_numpy(np.ascontiguousarray(images[database:])), labels[database:])


def build_search_index(folder: Path, bits: int = 16, store: str = "../store.npy") -> tuple[Path, Path, bytes]:
    """An index of 60 images of 6 classes under `folder` (index/, the image store at index/`store`) and an
    ITQ hash function fitted on their pixels, saved as the train stage saves a classic model (model.pt).
    -> (index folder, model file, a PNG of image 7, which the index holds)."""
    import torch

    from dsah.methods.classic import fit_classic
    from dsah.nets.features import pixels
    from dsah.search.index import write_index

    rng = np.random.default_rng(0)
    classes = np.arange(60) % 6
    images = np.stack([class_image(rng, int(c)) for c in classes])
    (folder / "index" / store).parent.mkdir(parents=True, exist_ok=True)
    np.save(folder / "index" / store, images)
    features = pixels(torch.from_numpy(images).permute(0, 3, 1, 2), size=8)
    hash_function, _ = fit_classic("itq", method_config("itq"), bits, features, np.eye(6)[classes], seed=0)
    torch.save({"kind": "classic", "method": "itq", "bits": bits, "hash_function": hash_function.state(),
                "features": {"extractor": "pixels", "size": 8, "weights": "", "batch": 64}}, folder / "model.pt")
    write_index(folder / "index", hash_function.encode(features), [f"img{i}" for i in range(60)],
                np.eye(6, dtype=np.uint8)[classes], [f"store:{i}" for i in range(60)],
                {"bits": bits, "classes": [f"c{i}" for i in range(6)], "store": store, "image_shape": [32, 32, 3]})
    query = io.BytesIO()
    Image.fromarray(images[7]).save(query, format="PNG")
    return folder / "index", folder / "model.pt", query.getvalue()



def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every markdown table row in `markdown` (tabulate pads them: stripped here)."""
    rows = []
    for line in markdown.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|") and not set(line) <= set("|:- "):
            rows.append([cell.strip().replace("\\|", "|") for cell in line[1:-1].split(" |")])
    return rows


def has_row(markdown: str, *cells: str) -> bool:
    """Whether a table row of `markdown` starts with `cells`."""
    return any(row[:len(cells)] == list(cells) for row in table_rows(markdown))
