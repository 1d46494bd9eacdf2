"""The additions store (dsah.search.additions): what users add and remove, kept apart from the index, and how an
index build merges it back in. Fast: files in a temporary folder, no model (the merge's encoder is a
stand-in function of the file bytes); one test runs the `additions` stage with DVC in a copy of the project."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import copy_project
from PIL import Image

from dsah.search.additions import ADDED, AdditionsError, add_images, create_store, merge, read_store, remove_ids
from dsah.search.index import HammingIndex, write_index


@pytest.fixture
def photos(tmp_path):
    """Three small PNG files; c.png has the same bytes as a.png."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in (("a", (255, 0, 0)), ("b", (0, 255, 0))):
        Image.new("RGB", (6, 6), colour).save(folder / f"{name}.png")
    (folder / "c.png").write_bytes((folder / "a.png").read_bytes())
    return folder


def test_a_new_store_is_empty_and_creating_it_again_keeps_what_it_holds(tmp_path, photos):
    store = create_store(tmp_path / "additions")
    assert store.added == () and store.removed == ()
    assert (tmp_path / "additions" / ADDED).read_text() == "id,dataset,labels,file\n"
    add_images(tmp_path / "additions", "cifar10", [photos / "a.png"], ["mine"])
    assert [a.id for a in create_store(tmp_path / "additions").added] == ["mine"]


def test_a_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(AdditionsError, match=r"not an additions store \(added.csv missing\); `dvc checkout .*additions` "
                                             r"\(or `dvc pull`\) restores the versioned one"):
        read_store(tmp_path / "additions")


def test_added_images_are_kept_byte_for_byte_with_their_labels(tmp_path, photos):
    folder = tmp_path / "additions"
    create_store(folder)
    added = add_images(folder, "cifar10", [photos / "a.png", photos / "b.png"], ["red", "green/1"], ["cat", "dog"])
    store = read_store(folder)
    assert store.added == tuple(added)
    digest = hashlib.sha256((photos / "a.png").read_bytes()).hexdigest()[:32]
    assert added[0].file == f"images/{digest}.png" and added[0].ref == f"added/{digest}.png"
    assert store.path(added[1]).read_bytes() == (photos / "b.png").read_bytes()
    assert [(a.id, a.dataset, a.labels) for a in store.added] == [("red", "cifar10", ("cat", "dog")),
                                                                   ("green/1", "cifar10", ("cat", "dog"))]


def test_bad_additions_are_refused_and_leave_the_store_as_it_was(tmp_path, photos):
    folder = tmp_path / "additions"
    create_store(folder)
    add_images(folder, "cifar10", [photos / "a.png"], ["red"])
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(AdditionsError, match="already added to .*: red; remove them first"):
        add_images(folder, "cifar10", [photos / "b.png"], ["red"])
    with pytest.raises(AdditionsError, match="given twice: x"):
        add_images(folder, "cifar10", [photos / "b.png", photos / "c.png"], ["x", "x"])
    with pytest.raises(AdditionsError, match="nope.png: cannot read it"):
        add_images(folder, "cifar10", [photos / "b.png", photos / "nope.png"], ["g", "n"])
    with pytest.raises(AdditionsError, match="may not be empty or hold '|'"):
        add_images(folder, "cifar10", [photos / "b.png"], ["g"], ["cat|dog"])
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    add_images(folder, "coco", [photos / "b.png"], ["red"])  # ids are per dataset
    assert [(a.id, a.dataset) for a in read_store(folder).added] == [("red", "cifar10"), ("red", "coco")]


def test_removing_deletes_added_images_and_tombstones_pipeline_ones(tmp_path, photos):
    folder = tmp_path / "additions"
    create_store(folder)
    a, c = add_images(folder, "cifar10", [photos / "a.png", photos / "c.png"], ["red", "red-again"])
    assert a.file == c.file  # the same bytes: one file
    assert remove_ids(folder, "cifar10", ["red", "test/cat/0001"]) == (["red"], ["test/cat/0001"])
    assert (folder / c.file).is_file()  # still named by red-again
    assert remove_ids(folder, "cifar10", ["red-again", "test/cat/0001"]) == (["red-again"], [])
    store = read_store(folder)
    assert store.added == () and store.removed == (("test/cat/0001", "cifar10"),)
    assert list((folder / "images").iterdir()) == []
    assert store.of("cifar10") == ([], {"test/cat/0001"}) and store.of("coco") == ([], set())


def test_a_deleted_image_file_is_named_when_the_store_is_read(tmp_path, photos):
    folder = tmp_path / "additions"
    create_store(folder)
    (added,) = add_images(folder, "cifar10", [photos / "a.png"], ["red"])
    (folder / added.file).unlink()
    with pytest.raises(AdditionsError, match=rf"1 added image file\(s\) missing \({added.file}\); `dvc checkout"):
        read_store(folder)


def fake_codes(bits):
    """A stand-in encoder: a code from each file's bytes (what matters here is which files it is given)."""
    calls = []

    def encode(files):
        calls.append(list(files))
        digests = [np.frombuffer(hashlib.sha256(f.read_bytes()).digest(), np.uint8) for f in files]
        return np.stack([np.where(np.unpackbits(d)[:bits], 1, -1).astype(np.int8) for d in digests])
    return encode, calls


def pipeline_entries(n=5, bits=12):
    codes = np.where(np.random.default_rng(0).random((n, bits)) < 0.5, -1, 1).astype(np.int8)
    labels = np.eye(3, dtype=np.uint8)[np.arange(n) % 3]
    return [f"db{i}" for i in range(n)], codes, labels, [f"store:{i}" for i in range(n)]


def test_a_build_leaves_out_removed_ids_and_encodes_the_additions_with_its_model(tmp_path, photos):
    folder = tmp_path / "additions"
    create_store(folder)
    add_images(folder, "cifar10", [photos / "a.png"], ["red"], ["fish"])
    add_images(folder, "coco", [photos / "b.png"], ["elsewhere"], ["person"])  # another dataset's: left out
    remove_ids(folder, "cifar10", ["db1", "db3"])
    remove_ids(folder, "coco", ["db0"])
    ids, codes, labels, refs = pipeline_entries()
    for bits in (12, 16):  # a new code length: the same image, encoded again
        encode, calls = fake_codes(bits)
        codes_now = np.concatenate([codes, np.ones((5, bits - 12), np.int8)], axis=1)
        merged = merge(read_store(folder), "cifar10", ["cat", "dog", "fish"], ids, codes_now, labels, refs, encode)
        (red,) = read_store(folder).of("cifar10")[0]
        assert calls == [[folder / red.file]] and merged.codes.shape == (4, bits)
        assert merged.ids == ["db0", "db2", "db4", "red"] and (merged.added, merged.removed) == (1, 2)
        assert np.array_equal(merged.codes[:3], codes_now[[0, 2, 4]])
        assert np.array_equal(merged.codes[3], encode([folder / red.file])[0])
        assert merged.labels.tolist()[3] == [0, 0, 1] and merged.refs == ["store:0", "store:2", "store:4", red.ref]
        assert merged.files == {red.ref: folder / red.file}

    write_index(tmp_path / "index", merged.codes, merged.ids, merged.labels, merged.refs,
                {"bits": 16, "classes": ["cat", "dog", "fish"]}, merged.files)
    index = HammingIndex.load(tmp_path / "index")
    hit = index.search(merged.codes[3], k=1)[0][0]
    assert (hit.id, hit.labels, hit.image) == ("red", ["fish"], red.ref)
    assert (tmp_path / "index" / red.ref).read_bytes() == (photos / "a.png").read_bytes()


def test_a_build_without_additions_never_loads_a_model(tmp_path):
    create_store(tmp_path / "additions")
    ids, codes, labels, refs = pipeline_entries()
    encode, calls = fake_codes(12)
    merged = merge(read_store(tmp_path / "additions"), "cifar10", ["cat", "dog", "fish"], ids, codes, labels, refs,
                   encode)
    assert calls == [] and merged.ids == ids and np.array_equal(merged.codes, codes) and merged.files == {}


def test_a_build_refuses_additions_it_cannot_place(tmp_path, photos):
    folder = tmp_path / "additions"
    create_store(folder)
    ids, codes, labels, refs = pipeline_entries()
    encode, _ = fake_codes(12)
    add_images(folder, "cifar10", [photos / "a.png"], ["db2"])  # a database id (a new split brought it back)
    with pytest.raises(AdditionsError, match="added image id.s. db2 are also database ids of the pipeline"):
        merge(read_store(folder), "cifar10", ["cat", "dog", "fish"], ids, codes, labels, refs, encode)
    remove_ids(folder, "cifar10", ["db2"])
    add_images(folder, "cifar10", [photos / "b.png"], ["unicorn-photo"], ["unicorn"])
    with pytest.raises(AdditionsError, match="added image unicorn-photo has label.s. unicorn, not classes of cifar10"):
        merge(read_store(folder), "cifar10", ["cat", "dog", "fish"], ids, codes, labels, refs, encode)
    wrong, _ = fake_codes(16)
    remove_ids(folder, "cifar10", ["unicorn-photo"])
    add_images(folder, "cifar10", [photos / "b.png"], ["green"])
    with pytest.raises(AdditionsError, match="database codes have 12 bits; rerun train and encode"):
        merge(read_store(folder), "cifar10", ["cat", "dog", "fish"], ids, codes, labels, refs, wrong)


def test_dsah_additions_lists_the_store_and_starts_one_where_there_is_none(tmp_path, photos, capsys):
    from dsah.cli import main

    main(["additions", "--additions", str(tmp_path / "additions")])
    out = capsys.readouterr().out
    assert "0 added image(s), 0 removed database image(s) (an empty store, started now)" in out
    assert "is outside any DVC project: nothing versions it" in out
    add_images(tmp_path / "additions", "cifar10", [photos / "a.png"], ["red"], ["cat", "fish"])
    remove_ids(tmp_path / "additions", "cifar10", ["test/cat/0001"])
    main(["additions", "--additions", str(tmp_path / "additions")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["added", "cifar10", "red", "cat,"] and lines[1].split() == ["removed", "cifar10",
                                                                                                  "test/cat/0001"]
    assert lines[2].endswith("1 added image(s), 1 removed database image(s)")


def test_the_additions_stage_starts_the_store_a_fresh_clone_lacks_and_reruns_keep_what_users_added(tmp_path, photos):
    """The store is the `additions` stage's persistent output: in a fresh clone (no store, nothing in DVC's
    cache) `dvc repro` starts the empty store dvc.lock records; a rerun (as a change to its code would
    cause) keeps what users added and records it, and a checkout restores it."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # stages' python

    def dvc(*args):
        done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    repo, store = tmp_path / "clone", tmp_path / "clone" / "data" / "additions"
    copy_project(repo)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"]):
        subprocess.run(command, cwd=repo, check=True)
    committed = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["additions"]["outs"]
    assert not store.exists() and not (repo / ".dvc" / "cache").exists()

    assert "(none yet: an empty store, started now)" in dvc("repro", "additions").stdout
    assert read_store(store).added == () and read_store(store).removed == ()
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["additions"]["outs"] == committed

    add_images(store, "cifar10", [photos / "a.png"], ["mine"], ["cat"])
    remove_ids(store, "cifar10", ["test/cat/0001"])
    assert "additions" in json.loads(dvc("status", "--json", "additions").stdout)
    assert "1 added image(s), 1 removed database image(s)" in dvc("repro", "--force", "additions").stdout
    recorded = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["additions"]["outs"][0]
    assert recorded["nfiles"] == 3 and json.loads(dvc("status", "--json", "additions").stdout) == {}
    shutil.rmtree(store)
    dvc("checkout", "data/additions")
    assert [a.id for a in read_store(store).added] == ["mine"] and read_store(store).removed == (("test/cat/0001", "cifar10"),)
