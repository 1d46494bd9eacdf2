"""The search index: exact top-k (bit-exact with the evaluation's ranking), memory-mapped files, adding
and removing entries, reading query images."""

import json

import numpy as np
import pytest
from PIL import Image

from dsah.search.image_encoder import read_images
from dsah.errors import DataError
from dsah.search.index import HammingIndex, add_entries, remove_entries, write_index
from dsah.codes import pack_words
from dsah.evaluation.metrics import hamming_distances


def random_codes(n, bits, seed=0):
    return np.where(np.random.default_rng(seed).random((n, bits)) < 0.5, -1, 1).astype(np.int8)


def reference_ranking(query_codes, db_codes):
    """The evaluation's ranking: by Hamming distance, ties by database index."""
    distances = hamming_distances(query_codes, db_codes)
    return [np.lexsort((np.arange(len(db_codes)), row)) for row in distances], distances


@pytest.fixture
def index(tmp_path):
    codes = random_codes(300, 12)  # 12 bits over 300 codes: many ties
    labels = np.eye(3, dtype=np.uint8)[np.arange(300) % 3]
    write_index(tmp_path / "index", codes, [f"img{i}" for i in range(300)], labels,
                [f"store:{i}" for i in range(300)], {"bits": 12, "classes": ["cat", "dog", "fish"]})
    return HammingIndex.load(tmp_path / "index"), codes


@pytest.mark.parametrize("bits, n, k", [(8, 400, 1), (8, 400, 37), (12, 300, 300), (12, 300, 1000), (64, 2000, 100),
                                        (100, 500, 10)])
def test_top_k_is_the_head_of_the_evaluation_ranking(tmp_path, bits, n, k):
    db, queries = random_codes(n, bits, 1), random_codes(7, bits, 2)
    write_index(tmp_path / "i", db, [str(i) for i in range(n)], np.zeros((n, 1)), [""] * n,
                {"bits": bits, "classes": ["x"]})
    rows, distances = HammingIndex.load(tmp_path / "i").search_words(pack_words(queries), k)
    ranking, full = reference_ranking(queries, db)
    assert rows.shape == (7, min(k, n))
    for a in range(7):
        assert np.array_equal(rows[a], ranking[a][:min(k, n)])
        assert np.array_equal(distances[a], full[a][ranking[a][:min(k, n)]])


def test_index_files_load_memory_mapped_and_round_trip(index):
    idx, codes = index
    assert isinstance(idx.words, np.memmap) and idx.words.dtype == np.uint64 and len(idx) == 300
    assert np.array_equal(idx.codes_of(np.arange(300)), codes)
    assert idx.label_names(4) == ["dog"] and idx.rows_of(["img7", "img2"]).tolist() == [7, 2]
    hits = idx.search(codes[5], k=3)[0]
    assert hits[0].id == "img5" and hits[0].distance == 0 and hits[0].image == "store:5"
    assert [h.rank for h in hits] == [1, 2, 3] and hits[0].labels == ["fish"]


def test_each_hit_names_its_own_rows_id_labels_and_image_in_plain_values(tmp_path):
    """Hits are read for all rows at once (multi-label rows over two packed bytes here); each must still name
    its own row's entry, in the plain ints and strings the JSON API sends."""
    codes, classes = random_codes(200, 16, 3), [f"c{j}" for j in range(11)]
    labels = (np.random.default_rng(4).random((200, 11)) < 0.3).astype(np.uint8)
    write_index(tmp_path / "i", codes, [f"img{i}" for i in range(200)], labels, [f"store:{i}" for i in range(200)],
                {"bits": 16, "classes": classes})
    queries = random_codes(4, 16, 5)
    found = HammingIndex.load(tmp_path / "i").search(queries, k=25)
    assert [len(hits) for hits in found] == [25] * 4
    for query, hits in zip(queries, found):
        assert [hit.rank for hit in hits] == list(range(1, 26))
        for hit in hits:
            assert hit.id == f"img{hit.row}" and hit.image == f"store:{hit.row}"
            assert hit.labels == [classes[j] for j in np.flatnonzero(labels[hit.row])]
            assert hit.distance == int(np.sum(codes[hit.row] != query))
        assert json.loads(json.dumps([vars(hit) for hit in hits])) == [vars(hit) for hit in hits]


def test_adding_appends_and_removing_deletes_without_touching_the_rest(index, tmp_path):
    idx, codes = index
    folder = idx.folder
    new = -codes[:2]
    for name in ("a.png", "b.png"):
        Image.new("RGB", (4, 4), (len(name), 0, 0)).save(tmp_path / name)
    added = add_entries(folder, new, ["new0", "new1"], np.array([[1, 0, 0], [0, 0, 1]]), ["added/a.png", "added/b.png"],
                        {"added/a.png": tmp_path / "a.png", "added/b.png": tmp_path / "b.png"})
    assert len(added) == 302 and added.rows_of(["new1"]).tolist() == [301]
    exact = [h for h in added.search(new[1], k=302)[0] if h.distance == 0]
    assert ("new1", ["fish"], "added/b.png") in [(h.id, h.labels, h.image) for h in exact]
    assert (folder / "added" / "b.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    removed = remove_entries(folder, ["img0", "new0"])
    assert len(removed) == 300 and "img0" not in removed.ids.tolist()
    assert np.array_equal(removed.codes_of(removed.rows_of(["img1", "new1"])), np.stack([codes[1], new[1]]))
    assert sorted(p.name for p in (folder / "added").iterdir()) == ["b.png"]  # a removed entry's copy goes too


def test_an_added_entry_without_its_image_file_is_refused(index, tmp_path):
    idx, codes = index
    with pytest.raises(DataError, match="the image of added/gone.png is missing"):
        add_entries(idx.folder, codes[:1], ["new"], np.zeros((1, 3)), ["added/gone.png"])
    assert len(HammingIndex.load(idx.folder)) == 300 and not idx.folder.with_name("index.staging").exists()


def test_bad_additions_and_removals_are_refused_and_leave_the_index_intact(index):
    idx, codes = index
    before = {p.name: p.read_bytes() for p in idx.folder.iterdir()}
    with pytest.raises(DataError, match="already in the index: img3"):
        add_entries(idx.folder, codes[:1], ["img3"], np.zeros((1, 3)), ["added/x.png"])
    with pytest.raises(DataError, match="unknown id.s. in .*: nope"):
        remove_entries(idx.folder, ["nope"])
    assert {p.name: p.read_bytes() for p in idx.folder.iterdir()} == before


def test_a_damaged_index_is_a_clear_error(index):
    idx, _ = index
    (idx.folder / "ids.npy").unlink()
    with pytest.raises(DataError, match="not an index .ids.npy missing.; run the index stage first"):
        HammingIndex.load(idx.folder)


def test_query_images_are_decoded_resized_and_refused_when_broken(tmp_path):
    Image.new("RGB", (50, 40), (255, 0, 0)).save(tmp_path / "red.png")
    Image.new("L", (8, 8), 128).save(tmp_path / "grey.jpg")
    images = read_images([tmp_path / "red.png", tmp_path / "grey.jpg"], (32, 32))
    assert images.shape == (2, 3, 32, 32) and images.dtype.is_floating_point is False
    assert images[0, 0].min() == 255 and images[0, 1].max() == 0
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png: not a decodable image"):
        read_images([tmp_path / "broken.png"], (32, 32))
    with pytest.raises(DataError, match="missing.png: no such image file"):
        read_images([tmp_path / "missing.png"], (32, 32))
