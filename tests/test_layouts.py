"""The COCO and NUS-WIDE layout builders of tests/fixtures.py: the project's own readers read them back, with
the labels of the CIFAR-10 classes shown, and the COCO-like photos have the size of real ones."""

import json
import re
import tarfile

import numpy as np
import pytest
from fixtures import (CIFAR_TO_COCO, CIFAR_TO_NUSWIDE, COCO_CATEGORIES, NUSWIDE_CONCEPTS, add_bytes, cifar_sample,
                      class_image, make_cifar_jpg_archive, make_coco_layout, make_coco_like_jpegs,
                      make_nuswide_layout, mosaic_photos)
from PIL import Image

from dsah.data.coco import COCO_CLASSES, image_reference, read_coco_labels
from dsah.data.nuswide import read_official
from dsah.data.protocols import CIFAR10_CLASSES

SIZE = 96


@pytest.fixture(scope="module")
def archive(shared_data):
    return shared_data / "cifar10-jpg.tar.xz"


@pytest.fixture(scope="module")
def coco(tmp_path_factory, archive):
    root = tmp_path_factory.mktemp("coco")
    return root, make_coco_layout(root, archive, train=30, val=10, seed=3, size=SIZE)


@pytest.fixture(scope="module")
def nuswide(tmp_path_factory, archive):
    root = tmp_path_factory.mktemp("nuswide")
    return root, make_nuswide_layout(root, archive, count=40, missing=3, corrupt=1, seed=5, size=SIZE)


def decodes_to(path, size):
    with Image.open(path) as image:
        image.load()
        return image.mode == "RGB" and image.size == (size, size)


def test_cifar_sample_is_seeded_and_ignores_member_order(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "a.tar.gz", 6, 2)
    with tarfile.open(archive) as tar:  # the same members, in reverse order
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    with tarfile.open(tmp_path / "b.tar.xz", "w:xz") as tar:
        for name, data in reversed(members):
            add_bytes(tar, name, data)
    images, classes = cifar_sample(archive, 40, seed=1)
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8 and len(classes) == 40
    assert len(set(classes.tolist())) > 5  # spread over the archive, not its first folder
    again = cifar_sample(tmp_path / "b.tar.xz", 40, seed=1)
    assert np.array_equal(images, again[0]) and np.array_equal(classes, again[1])
    assert not np.array_equal(classes, cifar_sample(archive, 40, seed=2)[1])
    with pytest.raises(ValueError, match="fewer than"):
        cifar_sample(archive, 81)


def test_mosaics_show_their_classes():
    rng = np.random.default_rng(0)
    classes = np.arange(40) % 10
    images = np.stack([class_image(rng, int(c)) for c in classes])
    mosaics, shown = mosaic_photos(images, classes, count=10, grid=2, size=64, seed=2)
    assert mosaics.shape == (10, 64, 64, 3) and all(s == sorted(set(s)) and 1 <= len(s) <= 4 for s in shown)
    # Each quadrant has the flat colour of one class shown.
    colours = {int(c): images[classes == c].reshape(-1, 3).mean(0) for c in range(10)}
    for mosaic, classes_shown in zip(mosaics, shown):
        for quadrant in (mosaic[8:24, 8:24], mosaic[8:24, 40:56], mosaic[40:56, 8:24], mosaic[40:56, 40:56]):
            mean = quadrant.reshape(-1, 3).mean(0)
            assert min(np.abs(mean - colours[c]).max() for c in classes_shown) < 6
    again = mosaic_photos(images, classes, count=10, grid=2, size=64, seed=2)
    assert np.array_equal(mosaics, again[0]) and shown == again[1]


def test_coco_layout_is_read_by_the_project(coco):
    root, built = coco
    expected = sorted(zip(built["images"], built["labels"]))
    for source in (root / "annotations", root / "coco-hashing-labels.tsv"):
        table = read_coco_labels(source)
        assert sorted(zip(table["image"].map(image_reference), table["labels"])) == expected, source
    # The labels are the classes shown, through the documented mapping.
    for label, classes in zip(built["labels"], built["classes"]):
        names = {CIFAR_TO_COCO[CIFAR10_CLASSES[c]] for c in classes}
        assert label == "".join("1" if name in names else "0" for name in COCO_CLASSES)
    assert sum(ref.startswith("train2014/COCO_train2014_") for ref in built["images"]) == 30
    assert all(re.fullmatch(r"(?P<s>train|val)2014/COCO_(?P=s)2014_\d{12}\.jpg", ref) for ref in built["images"])
    assert len(set(built["images"])) == 40
    assert all(decodes_to(root / ref, SIZE) for ref in built["images"])


def test_coco_layout_is_the_official_instances_format(coco):
    root, built = coco
    doc = json.loads((root / "annotations" / "instances_val2014.json").read_text())
    assert {"info", "licenses", "images", "annotations", "categories"} <= set(doc)
    ids = [c["id"] for c in doc["categories"]]
    assert len(ids) == 80 and ids == sorted(ids) and ids[-1] == 90
    assert sorted(set(range(1, 91)) - set(ids)) == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    assert {c["name"] for c in doc["categories"]} == set(COCO_CLASSES)
    assert doc["categories"] == [{"id": i, "name": n, "supercategory": s} for i, n, s in COCO_CATEGORIES]
    images = {image["id"]: image for image in doc["images"]}
    assert all(image["file_name"] == f"COCO_val2014_{i:012d}.jpg" for i, image in images.items())
    per_image = {}
    for ann in doc["annotations"]:
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE and ann["area"] == w * h
        assert ann["iscrowd"] == 0 and len(ann["segmentation"][0]) == 8
        per_image.setdefault(ann["image_id"], []).append(ann["category_id"])
    # One annotation per class shown.
    label = dict(zip(built["images"], built["labels"]))
    for image_id, categories in per_image.items():
        assert len(categories) == len(set(categories)) == label[f"val2014/{images[image_id]['file_name']}"].count("1")


def test_layouts_are_deterministic(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 25, 6)  # 310 images: one COCO-like photo's tiles
    built = []
    for run in ("a", "b"):
        root = tmp_path / run
        built.append((make_coco_layout(root / "coco", archive, 8, 4, seed=1, size=64),
                      make_nuswide_layout(root / "nuswide", archive, 20, seed=1, size=64),
                      make_coco_like_jpegs(root / "photos", archive, 1, seed=1)))
    assert built[0][:2] == built[1][:2]  # the photos' paths differ, their bytes not
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 40
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_nuswide_layout_is_read_by_the_project(nuswide):
    root, built = nuswide
    table, concepts = read_official(root)
    assert table["image"].tolist() == built["images"]
    # The 10 mapped concepts are the only ones present, so they lead the 21 most frequent.
    assert set(concepts[:10]) == set(CIFAR_TO_NUSWIDE.values()) and len(concepts) == 21
    columns = [NUSWIDE_CONCEPTS.index(c) for c in concepts]
    assert table["labels"].tolist() == ["".join(label[k] for k in columns) for label in built["labels"]]
    for label, classes in zip(built["labels"], built["classes"]):
        names = {CIFAR_TO_NUSWIDE[CIFAR10_CLASSES[c]] for c in classes}
        assert label == "".join("1" if name in names else "0" for name in NUSWIDE_CONCEPTS)
    listed = (root / "ImageList" / "Imagelist.txt").read_text().splitlines()
    assert all(re.fullmatch(r"[a-z]+\\\d{4}_\d{10}\.jpg", line) for line in listed)


def test_nuswide_layout_is_incomplete_like_real_copies(nuswide):
    root, built = nuswide
    assert len(built["missing"]) == 3 and len(built["corrupt"]) == 1
    assert not set(built["missing"]) & set(built["corrupt"])
    for ref in built["images"]:
        if ref in built["missing"]:
            assert not (root / ref).exists()
        elif ref in built["corrupt"]:
            with pytest.raises(OSError):
                decodes_to(root / ref, SIZE)
        else:
            assert decodes_to(root / ref, SIZE)


def test_coco_like_jpegs_are_photo_sized(archive, tmp_path):
    paths = make_coco_like_jpegs(tmp_path, archive, count=20, seed=0)
    assert len(set(paths)) == 20 and all(re.fullmatch(r"COCO_train2014_\d{12}\.jpg", p.name) for p in paths)
    sizes = [p.stat().st_size for p in paths]
    assert 120_000 <= np.mean(sizes) <= 180_000
    for path in paths[:5]:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        assert pixels.shape == (480, 640, 3)
        # Photo-like detail (native-resolution tiles), not flat or smoothly upscaled areas.
        assert np.abs(np.diff(pixels, axis=1)).mean() > 8
