"""Dataset readers and deterministic splits, on tiny archives made here and on the real label tables."""

import dataclasses
import gzip
import io
import json
import pickle
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest
from fixtures import add_bytes, make_cifar_jpg_archive, make_cifar_python_archive

from dsah.data.build import build_images
from dsah.data.cifar10 import _ArraysOnly, prepare_cifar10, read_cifar10
from dsah.data.coco import COCO_CLASSES, locate_coco, prepare_coco, read_coco_labels
from dsah.data.labels import read_label_table
from dsah.data.mosaic import prepare_mosaic, store_images
from dsah.data.nuswide import locate_nuswide, prepare_nuswide
from dsah.data.prepare import write_prepared
from dsah.data.params import CIFAR10Source
from dsah.data.protocols import PROTOCOLS, Protocol, mosaic_protocol, subset_protocol
from dsah.data.sources import Source
from dsah.data.splits import choose_queries, choose_queries_per_class, choose_validation
from dsah.data.store import open_store
from dsah.data.table import labels_to_matrix, read_meta, read_table
from dsah.errors import ConfigError, DataError

TINY = Protocol("tiny-cifar", rows=120, queries=20, label_width=10, queries_per_class=2)


def source(path):
    return Source(path, "params")


def test_cifar_image_folder_archive(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.xz", 8, 4, prefix="cifar10/")
    data = read_cifar10(archive)
    assert len(data.ids) == 120 and data.images.shape == (120, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.ids == sorted(data.ids)
    assert data.ids[0] == "test/airplane/0000" and data.refs[0] == "cifar10/test/airplane/0000.jpg"
    assert np.bincount(data.classes).tolist() == [12] * 10
    # The class colour survives JPEG: the decoded pixels are those that were written.
    cat = data.images[data.ids.index("train/cat/0003")].reshape(-1, 3).mean(0)
    assert np.allclose(cat, [75, 210, 180], atol=3)


def test_cifar_image_folder_on_disk_reads_like_the_archive(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 2, 1)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "folder", filter="data")
    a, b = read_cifar10(archive), read_cifar10(tmp_path / "folder")
    assert a.ids == b.ids and np.array_equal(a.images, b.images)


def test_cifar_python_archive(tmp_path):
    archive, rows, labels = make_cifar_python_archive(tmp_path / "cifar-10-python.tar.gz", per_batch=5)
    data = read_cifar10(archive)
    assert data.ids[:2] == ["test/00000", "test/00001"] and data.ids[-1] == "train/40004"
    order = [data.ids.index(f"train/{10_000 * b + i:05d}") for b in range(5) for i in range(5)] + \
            [data.ids.index(f"test/{i:05d}") for i in range(5)]
    expected = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert np.array_equal(data.images[order], expected)
    assert data.classes[order].tolist() == labels


def test_pickle_with_anything_but_arrays_is_refused():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        _ArraysOnly(io.BytesIO(pickle.dumps({b"data": Evil()})), encoding="bytes").load()


def test_corrupt_and_truncated_images_are_named(tmp_path):
    archive = tmp_path / "c.tar"
    good = make_cifar_jpg_archive(tmp_path / "g.tar.gz", 1, 0)
    with tarfile.open(good) as tar:
        jpeg = tar.extractfile("train/cat/0000.jpg").read()
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, "train/cat/0000.jpg", jpeg)
        add_bytes(tar, "train/dog/0007.jpg", jpeg[: len(jpeg) // 2])
    with pytest.raises(DataError, match=r"train/dog/0007.jpg: cannot decode image .*truncated"):
        read_cifar10(archive)
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, "train/dog/0008.jpg", b"definitely not a jpeg")
    with pytest.raises(DataError, match="train/dog/0008.jpg: cannot decode"):
        read_cifar10(archive)


def test_wrong_image_size_and_unknown_class_are_refused(tmp_path):
    from fixtures import jpeg_bytes
    archive = tmp_path / "c.tar"
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, "train/cat/0000.jpg", jpeg_bytes(np.zeros((16, 16, 3), np.uint8)))
    with pytest.raises(DataError, match="is 16x16, expected 32x32"):
        read_cifar10(archive)
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, "train/unicorn/0000.jpg", jpeg_bytes(np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(DataError, match="unknown class folder 'unicorn'"):
        read_cifar10(archive)


def test_splits_depend_only_on_split_seed_and_ids():
    ids = [f"img{i:04d}" for i in range(500)]
    classes = np.arange(500) % 5
    a = choose_queries_per_class(ids, classes, 7, seed=3)
    assert np.bincount(classes[a]).tolist() == [7] * 5
    # Same ids in another order -> the same images are chosen.
    perm = np.random.default_rng(0).permutation(500)
    b = choose_queries_per_class([ids[i] for i in perm], classes[perm], 7, seed=3)
    assert sorted(np.array(ids)[a]) == sorted(np.array(ids)[perm][b])
    assert not np.array_equal(a, choose_queries_per_class(ids, classes, 7, seed=4))
    validation = choose_validation(ids, ~a, 50, seed=3)
    assert validation.sum() == 50 and not (validation & a).any()
    with pytest.raises(DataError, match="need 501 images but only 500"):
        choose_queries(ids, 501, seed=0)


def test_prepare_cifar10_writes_table_and_meta_and_the_store_its_pixels(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 8, 4)
    prepared = prepare_cifar10(TINY, source(archive), split_seed=0)
    write_prepared(prepared, tmp_path / "prepared", split_seed=0, validation_size=10)
    table = read_table(tmp_path / "prepared" / "split.csv")
    meta = read_meta(tmp_path / "prepared" / "meta.json")
    assert (table["split"] == "query").sum() == 20 and table["validation"].sum() == 10
    assert not table.loc[table["validation"], "split"].eq("query").any()
    assert table["store_index"].tolist() == list(range(120))  # each image's store row, given at split time
    labels = labels_to_matrix(table["labels"])
    assert labels.sum(axis=1).tolist() == [1] * 120
    assert np.bincount(labels[table["split"].eq("query").to_numpy()].argmax(1)).tolist() == [2] * 10
    assert meta["protocol"] == "tiny-cifar" and meta["classes"][0] == "airplane"
    assert meta["sources"] == {}  # the prepare step records the fingerprint of what it read (prepare.py)
    assert not list(tmp_path.glob(".prepared*")), "the staging folder is gone after success"
    assert not (tmp_path / "prepared" / "images.npy").exists()  # pixels are the images stage's

    skips = build_images("cifar10", None, tmp_path / "prepared" / "split.csv", table, archive, 32,
                         tmp_path / "images", tmp_path / "work", 0, "digest", progress=False)
    store = open_store(tmp_path / "images")
    assert skips == [] and store.shape == (120, 32, 32, 3)
    pixels = read_cifar10(archive)
    for row in (0, 57, 119):  # each row holds the image its split-table row names, bit for bit
        assert np.array_equal(store[row], pixels.images[pixels.refs.index(table["image"][row])])
    assert json.loads((tmp_path / "images" / "store.json").read_text())["size"] == 32


def test_failed_prepare_leaves_the_previous_output_intact(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 8, 4)
    prepared = prepare_cifar10(TINY, source(archive), split_seed=0)
    write_prepared(prepared, tmp_path / "prepared", split_seed=0, validation_size=10)
    before = (tmp_path / "prepared" / "split.csv").read_bytes()
    too_small = dataclasses.replace(prepared, query=np.arange(len(prepared.ids)) >= 9)  # 9 database images
    with pytest.raises(DataError, match="^9 database image.s. are too few to split: .* at least 10 are needed"):
        write_prepared(too_small, tmp_path / "prepared", split_seed=1, validation_size=1000)
    assert (tmp_path / "prepared" / "split.csv").read_bytes() == before


def test_the_validation_slice_is_at_most_a_tenth_of_the_database(tmp_path):
    """prepare.validation_size is an upper bound: small collections keep nine tenths to train on, and
    meta.json says both the count used and the param."""
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 8, 4)
    prepared = prepare_cifar10(TINY, source(archive), split_seed=0)
    database = int((~prepared.query).sum())
    for asked, used in ((1000, database // 10), (3, 3), (database // 10, database // 10)):
        write_prepared(prepared, tmp_path / "prepared", split_seed=0, validation_size=asked)
        table = read_table(tmp_path / "prepared" / "split.csv")
        meta = read_meta(tmp_path / "prepared" / "meta.json")
        assert int(table["validation"].sum()) == used == meta["counts"]["validation"]
        assert meta["validation_size"] == asked
        assert not table.loc[table["validation"], "split"].eq("query").any()


def test_mosaic_has_no_leakage_and_labels_match_tiles(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 8, 4)
    protocol = mosaic_protocol(queries=6, database=30, grid=2)
    prepared = prepare_mosaic(protocol, source(archive), split_seed=0, grid=2, cifar_protocol=TINY)
    cifar = prepare_cifar10(TINY, source(archive), split_seed=0)
    cifar_query = {i for i, q in zip(cifar.ids, cifar.query) if q}
    tiles = [ref.split("|") for ref in prepared.image_refs]
    for tile_ids, is_query in zip(tiles, prepared.query):
        assert len(set(tile_ids)) == 4
        assert all((t in cifar_query) == is_query for t in tile_ids)
    classes = [{cifar.labels[cifar.ids.index(t)].argmax() for t in tile_ids} for tile_ids in tiles]
    assert [set(np.flatnonzero(row)) for row in prepared.labels] == classes
    # The store's mosaics: the top-left tile of each is the first listed source image.
    pixels = read_cifar10(archive)
    mosaics = dict(store_images(archive, prepared.image_refs, 64, grid=2))
    first = pixels.images[[pixels.ids.index(t[0]) for t in tiles]]
    assert np.array_equal(np.stack([mosaics[r] for r in range(36)])[:, :32, :32], first)
    assert mosaics[0].shape == (64, 64, 3) and prepared.protocol.stand_in
    assert dict(store_images(archive, prepared.image_refs[:2], 48, grid=2))[1].shape == (48, 48, 3)


def test_coco_hashing_table_gives_the_protocol_counts(shared_data):
    found = locate_coco(str(shared_data / "coco-hashing-labels.tsv.gz"), "", download=False)
    prepared = prepare_coco(PROTOCOLS["coco"], found["labels"], found["images"], split_seed=0)
    assert int(prepared.query.sum()) == 5_000 and int((~prepared.query).sum()) == 117_218
    assert prepared.labels.shape == (122_218, 80) and prepared.labels.sum(axis=1).min() >= 1
    assert not prepared.images_available
    # Label order is alphabetical by category: person (index 49) is the most frequent.
    assert COCO_CLASSES[49] == "person" and prepared.labels.sum(axis=0).argmax() == 49


def test_coco_images_are_downloaded_only_on_their_own_switch(shared_data, isolated_homes):
    """prepare.download fetches small official files; the 19 GB of images need prepare.coco.download_images."""
    labels = str(shared_data / "coco-hashing-labels.tsv.gz")
    assert locate_coco(labels, "", download=True)["images"] is None  # labels-only, no download planned
    planned = locate_coco(labels, "", download=True, download_images=True)["images"]
    assert planned.origin == "download" and [r.name for r in planned.officials] == ["train2014.zip", "val2014.zip"]
    assert sum(r.size for r in planned.officials) > 19e9  # stated before any byte is fetched


def test_subsets_are_seeded_protocols_of_their_own_with_queries_in_proportion(shared_data):
    found = locate_coco(str(shared_data / "coco-hashing-labels.tsv.gz"), "", download=False)
    subset = prepare_coco(PROTOCOLS["coco"], found["labels"], found["images"], split_seed=0, subset=2000)
    assert subset.protocol.name == "coco-subset-2000" and subset.protocol.suite == "coco"
    assert len(subset.ids) == 2000 and int(subset.query.sum()) == 82  # 5,000 / 122,218 of 2,000
    full = prepare_coco(PROTOCOLS["coco"], found["labels"], found["images"], split_seed=0)
    queries = {i for i, q in zip(full.ids, full.query) if q}
    assert {i for i, q in zip(subset.ids, subset.query) if q} <= queries  # the lists' own query set
    again = prepare_coco(PROTOCOLS["coco"], found["labels"], found["images"], split_seed=0, subset=2000)
    assert again.ids == subset.ids
    other = prepare_coco(PROTOCOLS["coco"], found["labels"], found["images"], split_seed=1, subset=2000)
    assert other.ids != subset.ids
    meta = subset.meta(split_seed=0, validation_size=100)
    assert meta["protocol"] == "coco-subset-2000" and meta["base_protocol"] == "coco" and meta["subset"] == 2000
    assert any(n.startswith("subset: 2000") for n in meta["notes"])
    with pytest.raises(ConfigError, match="subset: 200000 images; a subset of coco has 1 to 122217"):
        prepare_coco(PROTOCOLS["coco"], found["labels"], found["images"], split_seed=0, subset=200_000)


def test_a_cifar10_subset_keeps_its_classes_balanced_and_its_queries_per_class_in_proportion(tmp_path):
    """prepare.cifar10.subset: N / 10 images of each class, queries per class as 100 of 6,000 (at least 1)."""
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 8, 4)  # 12 images per class
    subset = prepare_cifar10(PROTOCOLS["cifar10"], source(archive), split_seed=0, subset=60)
    assert subset.protocol.name == "cifar10-subset-60" and subset.protocol.suite == "cifar10"
    assert subset.protocol.queries_per_class == 1 and int(subset.query.sum()) == 10
    classes = subset.labels.argmax(1)
    assert np.bincount(classes).tolist() == [6] * 10 and np.bincount(classes[subset.query]).tolist() == [1] * 10
    assert subset.image_refs == [f"{i}.jpg" for i in subset.ids]  # each id keeps its own image
    assert prepare_cifar10(PROTOCOLS["cifar10"], source(archive), split_seed=0, subset=60).ids == subset.ids
    assert prepare_cifar10(PROTOCOLS["cifar10"], source(archive), split_seed=1, subset=60).ids != subset.ids
    meta = subset.meta(split_seed=0, validation_size=5)
    assert meta["protocol"] == "cifar10-subset-60" and meta["base_protocol"] == "cifar10" and meta["subset"] == 60
    assert any(n.startswith("subset: 60 of the cifar10 protocol's images") for n in meta["notes"])
    assert subset_protocol(PROTOCOLS["cifar10"], 6000).queries == 100  # 10 of each class
    with pytest.raises(ConfigError, match="prepare.cifar10.subset: 65 is not allowed; allowed: 0 or a multiple of 10 "
                                          "from 20 to 59990"):
        CIFAR10Source(archive="", subset=65)  # refused with the params, before any stage runs
    with pytest.raises(DataError, match="subset of class 0: need 13 images but only 12"):
        prepare_cifar10(PROTOCOLS["cifar10"], source(archive), split_seed=0, subset=130)


def test_coco_official_annotations_and_hashnet_lists(tmp_path):
    categories = [{"id": 1, "name": "person"}] + [{"id": 100 + k, "name": n}
                                                  for k, n in enumerate(c for c in COCO_CLASSES if c != "person")]
    doc = {"categories": categories,
           "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg"},
                      {"id": 2, "file_name": "COCO_train2014_000000000002.jpg"},
                      {"id": 3, "file_name": "COCO_train2014_000000000003.jpg"}],
           "annotations": [{"image_id": 1, "category_id": 1}, {"image_id": 1, "category_id": 100},
                           {"image_id": 3, "category_id": 1}]}
    empty = {**doc, "images": [], "annotations": []}
    archive = tmp_path / "annotations_trainval2014.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("annotations/instances_train2014.json", json.dumps(doc))
        zf.writestr("annotations/instances_val2014.json", json.dumps(empty))
    table = read_coco_labels(archive)
    labels = labels_to_matrix(table["labels"])
    assert labels[0, COCO_CLASSES.index("person")] == 1 and labels[0, COCO_CLASSES.index("airplane")] == 1
    assert labels[1].sum() == 0  # image 2 has no annotation: prepare drops it
    lists = tmp_path / "lists"
    lists.mkdir()
    row = " ".join("1" if c == "dog" else "0" for c in COCO_CLASSES)
    (lists / "test.txt").write_text(f"/data/train2014/COCO_train2014_000000000005.jpg {row}\n")
    (lists / "database.txt").write_text(f"val2014/COCO_val2014_000000000006.jpg {row}\n")
    table = read_label_table(lists)
    assert table["set"].tolist() == ["database", "query"]
    (lists / "test.txt").write_text("COCO_train2014_000000000005.jpg 0 1 2\n")
    with pytest.raises(DataError, match=r"test.txt:1: expected"):
        read_label_table(lists)


def test_nuswide_public_lists_form_the_reduced_protocol(shared_data):
    found = locate_nuswide(str(shared_data / "nuswide21-hashing-labels.tsv.gz"), "")
    prepared = prepare_nuswide(found["labels"], found["images"], split_seed=0)
    assert prepared.protocol.name == "nuswide21-reduced"
    assert int(prepared.query.sum()) == 2_100 and len(prepared.ids) == 12_600
    assert prepared.labels.shape[1] == 21 and prepared.labels.sum(axis=1).min() >= 1
    assert any("reduced protocol" in note for note in prepared.notes)


def test_nuswide_official_concept_files_keep_the_21_most_frequent(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "nuswide"
    (folder / "Groundtruth" / "AllLabels").mkdir(parents=True)
    (folder / "ImageList").mkdir()
    concepts = [f"c{k:02d}" for k in range(30)]
    (folder / "Concepts81.txt").write_text("\n".join(concepts) + "\n")
    n = 400
    (folder / "ImageList" / "Imagelist.txt").write_text("".join(f"actor\\{i:04d}.jpg\n" for i in range(n)))
    frequency = np.linspace(0.3, 0.01, 30)[rng.permutation(30)]
    columns = (rng.random((n, 30)) < frequency).astype(int)
    columns[:, 0] = 0  # a concept nobody tagged must rank last, not first
    for k, concept in enumerate(concepts):
        (folder / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt").write_text(
            "\n".join(map(str, columns[:, k])) + "\n")
    from dsah.data.nuswide import read_official
    table, classes = read_official(folder)
    top = sorted(range(30), key=lambda k: -columns[:, k].sum())[:21]
    assert classes == [concepts[k] for k in top]
    assert table["image"].iloc[3] == "Flickr/actor/0003.jpg"
    assert np.array_equal(labels_to_matrix(table["labels"]), columns[:, top])


def test_label_table_with_bad_rows_is_refused(tmp_path):
    path = tmp_path / "t.tsv.gz"
    with gzip.open(path, "wt") as f:
        pd.DataFrame({"image": ["a", "b"], "list": ["train", "test"], "labels": ["0101", "01x1"]}).to_csv(
            f, sep="\t", index=False)
    with pytest.raises(DataError, match=r"row 3 \(b: '01x1'\) has labels other than '0'/'1'"):
        read_label_table(path)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_label_table(path)


def photo_folder(tmp_path, rows: list[tuple[str, str]]):
    """A folder with a label table (the photos themselves are the image store's to read)."""
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    lines = ["path,labels"] + [f"{path},{labels}" for path, labels in rows]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def prepare_photos(folder, **own):
    from dsah.data.folder import locate_folder, prepare_folder
    from dsah.data.params import FolderSource

    settings = FolderSource(**{"root": str(folder), "labels": "", "classes": [], "separator": "|", "queries": 2,
                               **own})
    found = locate_folder(settings.root, settings.labels)
    return prepare_folder(settings, found["labels"], found["images"], split_seed=0)


def test_a_folder_of_photos_with_class_names_or_01_strings(tmp_path):
    rows = [("trips/beach/a.jpg", "sea|sky"), ("trips/b.png", "sky"), ("c.jpg", "dog"), ("d.jpg", "dog|sea"),
            ("e.jpg", "sky")]
    prepared = prepare_photos(photo_folder(tmp_path, rows))
    assert prepared.classes == ["dog", "sea", "sky"]  # every name used, sorted
    assert prepared.ids == [r[0] for r in rows] and prepared.image_refs == prepared.ids
    assert prepared.labels.tolist() == [[0, 1, 1], [0, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert int(prepared.query.sum()) == 2 and prepared.protocol.name == "folder"
    ordered = prepare_photos(photo_folder(tmp_path, rows), classes=["sky", "sea", "dog"])
    assert ordered.labels[0].tolist() == [1, 1, 0]  # the class order params.yaml gives
    bits = prepare_photos(photo_folder(tmp_path, [(p, s) for p, s in zip("abcd", ["100", "011", "001", "110"])]),
                          classes=["x", "y", "z"])
    assert bits.classes == ["x", "y", "z"] and bits.labels.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]]
    folder = tmp_path / "photos"  # a TSV with a split column: it decides the queries
    (folder / "labels.csv").write_text("path\tlabels\tsplit\na.jpg\tsky\tquery\nb.jpg\tsea\tdatabase\nc.jpg\tsky\tdatabase\n")
    tabbed = prepare_photos(folder)
    assert tabbed.query.tolist() == [True, False, False] and tabbed.protocol.queries == 1


@pytest.mark.parametrize("rows, own, message", [
    ([("a.jpg", "cat"), ("b.jpg", "cow")], {"classes": ["cat", "dog"]}, r"row 3 \(b.jpg\): unknown class 'cow'"),
    ([("a.jpg", "cat"), ("b.jpg", " ")], {}, r"row 3 \(b.jpg\): empty labels"),
    ([("a.jpg", "10"), ("b.jpg", "00")], {"classes": ["x", "y"]}, r"row 3 \(b.jpg\): empty labels \(all 0\)"),
    ([("a.jpg", "cat"), ("/etc/passwd", "cat")], {}, r"row 3: image path '/etc/passwd' is outside the folder"),
    ([("a.jpg", "cat"), ("x/../../secret.jpg", "cat")], {}, r"is outside the folder"),
    ([("a.jpg", "cat"), ("./a.jpg", "dog")], {}, r"an image is listed more than once with different labels: a.jpg "
                                                 r"\(rows 2, 3\); list each image once"),
    ([("a.jpg", "cat"), ("b.jpg", "dog")], {"queries": 2}, r"prepare.folder.queries: 2; between 1 and 1"),
])
def test_a_bad_label_table_is_a_clear_error(tmp_path, rows, own, message):
    with pytest.raises(DataError, match=message):
        prepare_photos(photo_folder(tmp_path, rows), **{"queries": 1, **own})


def test_a_folder_without_a_label_table_or_folder_says_what_to_give(tmp_path, isolated_homes):
    from dsah.data.folder import locate_folder

    with pytest.raises(DataError, match=r"prepare.folder.root .* \$DSAH_DATA_HOME/photos"):
        locate_folder("", "")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no label table in .*empty \\(labels.csv or labels.tsv\\)"):
        locate_folder(str(tmp_path / "empty"), "")


# --- Label tables cannot be misread (issue 34): 0/1 strings, column names, images listed twice ---

def write_table(tmp_path, text: str):
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    (folder / "labels.csv").write_text(text)
    return folder


@pytest.mark.parametrize("rows, own, message", [
    # 0/1 strings with no class list were read as class names ("1500 images in 368 classes"): refused.
    ([("a.jpg", "0110"), ("b.jpg", "1000"), ("c.jpg", "0001")], {},
     r"labels are 0/1 strings of width 4 \(row 2: '0110'\), and prepare.folder.classes is empty; set it to the "
     r"class names, one per character in column order \(4 names\)"),
    ([("a.jpg", "0110"), ("b.jpg", "1000")], {"classes": ["x", "y", "z"]},
     r"labels are 0/1 strings of width 4, but prepare.folder.classes lists 3 classes; list exactly 4"),
    ([("a.jpg", "011"), ("b.jpg", "1000"), ("c.jpg", "001")], {"classes": ["x", "y", "z"]},
     r"row 3 \(b.jpg\): 0/1 strings of width 4, but prepare.folder.classes lists 3 classes"),
    ([("a.jpg", "0110"), ("b.jpg", "100"), ("c.jpg", "0001")], {},
     r"0/1 strings of different widths \(3, 4\) .* prepare.folder.classes is empty"),
    # A class name made of 0s and 1s among names: refused unless the class list names it.
    ([("a.jpg", "cat"), ("b.jpg", "dog|101"), ("c.jpg", "0110")], {},
     r"rows 3 \(b.jpg\), 4 \(c.jpg\): labels like '101' look like 0/1 strings, not class names, while 1 other "
     r"row holds class names"),
    ([("a.jpg", "0|1"), ("b.jpg", "1")], {}, r"rows 2 \(a.jpg\), 3 \(b.jpg\): labels like '0' look like 0/1 strings, "
                                             r"not class names; write every row one way"),
    ([("a.jpg", "cat"), ("b.jpg", "dog|101")], {"classes": ["cat", "dog"]}, r"row 3 \(b.jpg\): labels like '101'"),
    # Many bad rows: a few named, and how many more.
    ([(f"{i}.jpg", "cat" if i < 2 else " ") for i in range(8)], {}, r"rows 4 \(2.jpg\), 5 \(3.jpg\), 6 \(4.jpg\) "
                                                                     r"and 3 more: empty labels"),
])
def test_labels_that_could_be_misread_are_refused_with_the_rows_named(tmp_path, rows, own, message):
    with pytest.raises(DataError, match=message):
        prepare_photos(photo_folder(tmp_path, rows), **{"queries": 1, **own})


def test_01_lookalike_class_names_are_read_as_names_when_the_class_list_names_them(tmp_path):
    prepared = prepare_photos(photo_folder(tmp_path, [("a.jpg", "cat|101"), ("b.jpg", "101"), ("c.jpg", "cat")]),
                              classes=["cat", "101"], queries=1)
    assert prepared.classes == ["cat", "101"] and prepared.labels.tolist() == [[1, 1], [0, 1], [1, 0]]


@pytest.mark.parametrize("header", ["path,labels", "image,labels", "file,labels", "Image,Label", " FILE , Labels "])
def test_the_image_column_may_be_called_path_image_or_file(tmp_path, header):
    folder = write_table(tmp_path, f"{header}\na.jpg,cat\nb.jpg,dog|cat\nc.jpg,dog\n")
    prepared = prepare_photos(folder, queries=1)
    assert prepared.ids == ["a.jpg", "b.jpg", "c.jpg"] and prepared.labels.tolist() == [[1, 0], [1, 1], [0, 1]]


@pytest.mark.parametrize("text, message", [
    ("photo,labels\na.jpg,cat\n", r"missing path \(found 'photo', 'labels'\): rename column 'photo' to path"),
    ("path,tags\na.jpg,cat\n", r"missing labels \(found 'path', 'tags'\): rename column 'tags' to labels"),
    ("path,image,labels\na.jpg,a.jpg,cat\n", r"columns 'path' and 'image' both name the path; keep one"),
    ("a.jpg,cat\nb.jpg,dog\n", r"its first line is an image, not a header: add the line `path,labels` above it"),
    ("name,what,labels_\na.jpg,x,cat\n", r"missing path and labels \(found 'name', 'what', 'labels_'\): rename the "
                                         r"column that holds the image files to path and the column that holds "
                                         r"the labels to labels"),
    ("name,labels,what\na.jpg,cat,x\n", r"rename the column that holds the image files to path$"),
    ("path;labels\na.jpg;cat\n", r"the table must be comma- or tab-separated"),
])
def test_a_table_without_its_columns_says_which_to_rename(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        prepare_photos(write_table(tmp_path, text), queries=1)


def test_a_photo_listed_twice_is_one_image_or_an_error_naming_its_rows(tmp_path):
    from dsah.data.folder import folder_protocol, label_matrix, read_folder_table

    rows = [("a.jpg", "cat|dog"), ("b.jpg", "dog"), ("c.jpg", "cat"), ("./a.jpg", "dog|cat"), ("b.jpg", "dog")]
    folder = photo_folder(tmp_path, rows)
    prepared = prepare_photos(folder, queries=1)
    assert prepared.ids == ["a.jpg", "b.jpg", "c.jpg"] and prepared.labels.tolist() == [[1, 1], [0, 1], [1, 0]]
    assert any(n.startswith("merged 2 duplicate rows of labels.csv") for n in prepared.notes)
    # validate re-reads the table for the counts it expects: they are prepare's.
    table = read_folder_table(folder / "labels.csv")
    classes = label_matrix(table, [], "|", folder / "labels.csv")[1]
    assert folder_protocol(table, 1, len(classes)).rows == len(prepared.ids) == prepared.protocol.rows == 3

    (folder / "labels.csv").write_text("path,labels,split\na.jpg,cat,query\nb.jpg,dog,database\nc.jpg,cat,database\n"
                                       "a.jpg,cat,database\nd.jpg,dog,query\nd.jpg,dog,database\n")
    with pytest.raises(DataError, match=r"2 images are in both query and database: a.jpg \(rows 2, 5\), d.jpg "
                                        r"\(rows 6, 7\); an image is a query or in the database, never both"):
        prepare_photos(folder)
    (folder / "labels.csv").write_text("path,labels,split\na.jpg,cat,query\nb.jpg,dog,database\nb.jpg,cat,database\n")
    with pytest.raises(DataError, match=r"an image is listed more than once with different labels: b.jpg \(rows 3, 4\)"):
        prepare_photos(folder)
    (folder / "labels.csv").write_text("path,labels,split\na.jpg,cat,query\nb.jpg,dog,databse\n")
    with pytest.raises(DataError, match=r"row 3 \(b.jpg\): split must be query or database, found 'databse'"):
        prepare_photos(folder)


def test_a_symbolic_link_out_of_the_photo_folder_is_refused_one_inside_followed(tmp_path):
    folder = photo_folder(tmp_path, [("a.jpg", "cat"), ("alias.jpg", "dog"), ("sub/b.jpg", "dog"), ("c.jpg", "cat")])
    (folder / "a.jpg").write_bytes(b"photo")
    (folder / "sub").mkdir()
    (folder / "alias.jpg").symlink_to(folder / "a.jpg")  # inside: followed
    (folder / "sub" / "b.jpg").symlink_to("../a.jpg")
    assert prepare_photos(folder, queries=1).ids == ["a.jpg", "alias.jpg", "sub/b.jpg", "c.jpg"]
    secret = tmp_path / "private" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(b"not yours")
    (folder / "c.jpg").symlink_to(secret)
    with pytest.raises(DataError, match=r"photos: 1 image leads out of the photo folder through a symbolic link: "
                                        r"c.jpg -> .*private/secret.jpg; copy the file into the folder"):
        prepare_photos(folder, queries=1)
    (folder / "c.jpg").unlink()
    (folder / "sub" / "b.jpg").unlink()
    (folder / "sub").rmdir()
    (folder / "sub").symlink_to(secret.parent)  # a linked subfolder leads out just the same
    (folder / "sub" / "b.jpg").write_bytes(b"also not yours")
    with pytest.raises(DataError, match=r"sub/b.jpg -> .*private/b.jpg"):
        prepare_photos(folder, queries=1)


COCO_A, COCO_B, COCO_C = (f"COCO_val2014_00000000000{i}.jpg" for i in (1, 2, 3))


def coco_label(*names: str) -> str:
    return "".join("1" if c in names else "0" for c in COCO_CLASSES)


def coco_table(tmp_path, rows: list[tuple[str, str, str]]):
    path = tmp_path / "coco-hashing-labels.tsv"
    path.write_text("image\thashnet_set\tlabels\n" + "".join(f"{i}\t{s}\t{l}\n" for i, s, l in rows))
    return path


def prepare_coco_from(path, **kwargs):
    return prepare_coco(PROTOCOLS["coco"], source(path), None, split_seed=0, **kwargs)


def test_a_coco_image_in_query_and_database_or_with_two_label_sets_is_an_error_naming_it(tmp_path):
    cat, dog = coco_label("cat"), coco_label("dog")
    both = coco_table(tmp_path, [(COCO_A, "query", cat), (COCO_B, "database", dog), (COCO_A, "database", cat)])
    with pytest.raises(DataError, match=r"coco-hashing-labels.tsv: an image is both a query and in the database "
                                        r"\(or train\): val2014/COCO_val2014_000000000001.jpg \(row 2, row 4\)"):
        prepare_coco_from(both)
    twice = coco_table(tmp_path, [(COCO_A, "query", cat), (COCO_B, "database", dog), (COCO_B, "train", cat),
                                  (COCO_C, "database", dog), (COCO_C, "database", cat)])
    with pytest.raises(DataError, match=r"2 images are listed more than once with different labels: "
                                        r"val2014/COCO_val2014_000000000002.jpg \(row 3, row 4\), "
                                        r"val2014/COCO_val2014_000000000003.jpg \(row 5, row 6\)"):
        prepare_coco_from(twice)


def test_the_public_coco_lists_with_train_inside_the_database_give_the_table_s_split(tmp_path, shared_data):
    """The HashNet lists repeat the train images in database.txt with the same labels: each is one image, the
    split the same as from the label table (which lists each image once), and prepare says how many it merged."""
    with gzip.open(shared_data / "coco-hashing-labels.tsv.gz", "rt") as f:
        table = pd.read_csv(f, sep="\t", dtype=str, keep_default_na=False)
    table = table.groupby("hashnet_set").head(400)  # 400 of each set
    table.to_csv(tmp_path / "slice.tsv", sep="\t", index=False)
    lists = tmp_path / "lists"
    lists.mkdir()
    for name, sets in (("test.txt", ["query"]), ("database.txt", ["database", "train"]), ("train.txt", ["train"])):
        part = table[table["hashnet_set"].isin(sets)]
        (lists / name).write_text("".join(f"{i} {' '.join(l)}\n" for i, l in zip(part["image"], part["labels"])))
    from_table, from_lists = prepare_coco_from(tmp_path / "slice.tsv"), prepare_coco_from(lists)
    assert from_lists.ids == from_table.ids and len(from_table.ids) == 1200
    assert np.array_equal(from_lists.query, from_table.query) and int(from_lists.query.sum()) == 400
    assert np.array_equal(from_lists.labels, from_table.labels)
    assert any(n.startswith("merged 400 rows that list an image already listed, with the same labels")
               for n in from_lists.notes)
    assert not any("merged" in n for n in from_table.notes)


def test_the_shared_coco_table_is_split_as_before_with_nothing_to_merge(shared_data):
    """Each image of the shared table is listed once (its train set is a part of the database, not a copy):
    the split is the same as before the duplicate checks, to the last image."""
    import hashlib

    found = locate_coco(str(shared_data / "coco-hashing-labels.tsv.gz"), "", download=False)
    prepared = prepare_coco(PROTOCOLS["coco"], found["labels"], found["images"], split_seed=0)
    digest = hashlib.md5()
    digest.update("\n".join(prepared.ids).encode())
    digest.update(prepared.query.tobytes())
    digest.update(np.ascontiguousarray(prepared.labels).tobytes())
    assert len(prepared.ids) == 122_218 and not any("merged" in n for n in prepared.notes)
    assert digest.hexdigest() == "e89855c5863b4f4a623716b6a04ef65c"


@pytest.mark.parametrize("rows, message", [
    ([(COCO_A, "query", coco_label("cat")), (COCO_B, "database", coco_label("dog")[:-1]),
      (COCO_C, "database", coco_label("dog"))],
     r"label strings have different widths \[79, 80\]: row 3 \(COCO_val2014_000000000002.jpg: 79 characters\) "
     r"differs from the other 2 rows' 80 \(1 of 3 rows\)"),
    ([(COCO_A, "query", coco_label("cat")[:-1]), (COCO_B, "database", coco_label("dog")[:-1])],
     r"COCO labels must have 80 characters, one per class; these have 79 \(row 2 \(COCO_val2014_000000000001.jpg\)"),
    ([(COCO_A, "qeury", coco_label("cat")), (COCO_B, "database", coco_label("dog"))],
     r"column 'hashnet_set' holds 'qeury' at row 2 \(COCO_val2014_000000000001.jpg\); a set is query"),
    ([(COCO_A, "query", coco_label("cat")), ("IMG_0001.jpg", "database", coco_label("dog"))],
     r"row 3: 'IMG_0001.jpg' is not a COCO 2014 image name"),
])
def test_a_bad_coco_label_table_names_its_rows(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        prepare_coco_from(coco_table(tmp_path, rows))


def test_hashnet_lists_of_two_widths_name_the_lines(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "database.txt").write_text(f"{COCO_A} {' '.join(coco_label('cat'))}\n{COCO_B} {' '.join(coco_label('dog'))}\n")
    (lists / "test.txt").write_text(f"\n{COCO_C} {' '.join(coco_label('dog')[:-1])}\n")
    with pytest.raises(DataError, match=r"lists: label strings have different widths \[79, 80\]: test.txt line 2 "
                                        r"\(COCO_val2014_000000000003.jpg: 79 characters\)"):
        read_label_table(lists)


def test_coco_annotations_listing_an_image_twice_are_refused(tmp_path):
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(COCO_CLASSES)]
    folder = tmp_path / "annotations"
    folder.mkdir()
    images = [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg"},
              {"id": 2, "file_name": "COCO_train2014_000000000001.jpg"}]
    (folder / "instances_train2014.json").write_text(json.dumps({"categories": categories, "images": images,
                                                                 "annotations": []}))
    (folder / "instances_val2014.json").write_text(json.dumps({"categories": categories, "images": [],
                                                               "annotations": []}))
    with pytest.raises(DataError, match=r"instances_train2014.json: COCO_train2014_000000000001.jpg is listed twice "
                                        r"\(image ids 1 and 2\)"):
        read_coco_labels(folder)
    (folder / "instances_train2014.json").write_text(json.dumps({"categories": categories, "images": images[:1],
                                                                 "annotations": [{"id": 7, "image_id": 5,
                                                                                  "category_id": 1}]}))
    with pytest.raises(DataError, match=r"annotation 7 is of image id 5, which the file does not list"):
        read_coco_labels(folder)


def test_nuswide_images_listed_twice_are_errors_naming_the_lines(tmp_path):
    label = "1" + "0" * 20
    path = tmp_path / "nus.tsv"
    path.write_text("image\tlist\tlabels\nFlickr/a/1.jpg\ttrain\t" + label + "\nFlickr/a/2.jpg\ttest\t" + label +
                    "\nFlickr/a/1.jpg\ttest\t" + label + "\n")
    with pytest.raises(DataError, match=r"nus.tsv: an image is both a query and in the database \(or train\): "
                                        r"Flickr/a/1.jpg \(row 2, row 4\)"):
        prepare_nuswide(source(path), None, split_seed=0)
    folder = tmp_path / "nuswide"
    (folder / "Groundtruth" / "AllLabels").mkdir(parents=True)
    (folder / "ImageList").mkdir()
    concepts = [f"c{k:02d}" for k in range(22)]
    (folder / "Concepts81.txt").write_text("\n".join(concepts) + "\n")
    (folder / "ImageList" / "Imagelist.txt").write_text("a\\1.jpg\na\\2.jpg\na\\1.jpg\n")
    for k, concept in enumerate(concepts):
        (folder / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt").write_text("1\n1\n0\n" if k else "1\n1\n1\n")
    with pytest.raises(DataError, match=r"an image is listed more than once with different labels: Flickr/a/1.jpg "
                                        r"\(ImageList/Imagelist.txt line 1, ImageList/Imagelist.txt line 3\)"):
        prepare_nuswide(source(folder), None, split_seed=0)
    (folder / "Groundtruth" / "AllLabels" / "Labels_c05.txt").write_text("1\n2\n0\n")
    with pytest.raises(DataError, match=r"Labels_c05.txt: value 2 at row 2 \(a/2.jpg\); each row is 0 or 1"):
        prepare_nuswide(source(folder), None, split_seed=0)


def test_a_truncated_or_foreign_image_in_a_cifar_archive_is_named_by_prepare(tmp_path):
    """prepare names the broken file, not the class it leaves short of queries ("queries of class 0: need
    100 images but only 3 are eligible")."""
    good = make_cifar_jpg_archive(tmp_path / "good.tar.gz", 3, 1)
    with tarfile.open(good) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    png = io.BytesIO()
    from PIL import Image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(png, format="PNG")
    archive = tmp_path / "cifar10-jpg.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in members:
            if name == "train/cat/0001.jpg":
                data = data[: len(data) * 2 // 3]
            elif name == "train/dog/0002.jpg":
                data = b"<html>not found</html>"
            elif name == "test/frog/0000.jpg":
                data = png.getvalue()  # a whole PNG under a .jpg name decodes: not an error
            add_bytes(tar, name, data)
    with pytest.raises(DataError, match=r"cifar10-jpg.tar: 2 image files are corrupt or truncated: train/cat/0001.jpg: "
                                        r"truncated JPEG: its [\d,]+ bytes end before the end-of-image marker; "
                                        r"train/dog/0002.jpg: not a JPEG or PNG image \(it starts with b'<html>no'\)"):
        prepare_cifar10(PROTOCOLS["cifar10"], source(archive), split_seed=0)
    with tarfile.open(archive, "w") as tar:
        for name, data in members:
            add_bytes(tar, name, png.getvalue()[:-8] if name == "test/frog/0000.jpg" else data)
    with pytest.raises(DataError, match=r"1 image file is corrupt or truncated: test/frog/0000.jpg: truncated PNG"):
        prepare_cifar10(PROTOCOLS["cifar10"], source(archive), split_seed=0)
    small = Protocol("tiny", rows=40, queries=10, label_width=10, queries_per_class=1)
    with tarfile.open(archive, "w") as tar:
        for name, data in members:
            add_bytes(tar, name, png.getvalue() if name == "test/frog/0000.jpg" else data)
    assert len(prepare_cifar10(small, source(archive), split_seed=0).ids) == 40


def test_an_image_twice_in_a_cifar_copy_is_named(tmp_path):
    from fixtures import jpeg_bytes

    archive = tmp_path / "c.tar"
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, "train/cat/0000.jpg", jpeg_bytes(np.zeros((32, 32, 3), np.uint8)))
        add_bytes(tar, "train/cat/0000.png", jpeg_bytes(np.ones((32, 32, 3), np.uint8)))
        add_bytes(tar, "train/dog/0001.jpg", jpeg_bytes(np.ones((32, 32, 3), np.uint8)))
    with pytest.raises(DataError, match=r"c.tar: 1 image is in the copy twice \(one id, two files\): "
                                        r"train/cat/0000.jpg and train/cat/0000.png; keep one of each"):
        read_cifar10(archive, pixels=False)


def test_a_cifar_copy_too_small_for_its_protocol_says_which_classes_are_short(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 3, 1)
    with pytest.raises(DataError, match=r"c.tar.gz: too few images of 10 classes \(airplane 4, automobile 4, .*\) for "
                                        r"the cifar10 protocol, which takes 100 queries from each class .*\(40 images "
                                        r"in the copy; CIFAR-10 has 6,000 per class\): an incomplete copy"):
        prepare_cifar10(PROTOCOLS["cifar10"], source(archive), split_seed=0)
