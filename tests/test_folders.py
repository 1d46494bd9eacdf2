"""COCO and NUS-WIDE from image folders, end to end through `dvc repro`: real layouts (official annotations,
concept files, an incomplete NUS-WIDE copy) of real pixels (CIFAR-10 2x2 mosaics at 128 px, JPEG), as
subset protocols on the tiny profile; the store build, search and additions on them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from conftest import Repo, copy_project, set_params
from fixtures import CIFAR_TO_COCO, CIFAR_TO_NUSWIDE, TEST_NETWORK, cifar_sample, jpeg_bytes, make_coco_layout, \
    make_nuswide_layout, mosaic_photos

from dsah.data.protocols import CIFAR10_CLASSES

pytestmark = pytest.mark.integration

TINY = {"train_imgnet": dict(TEST_NETWORK, width=8, outer_iters=2, samples=96, batch=32), "train_lae": dict(steps=200),
        "features": dict(extractor="pixels", size=8)}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def new_repo(base: Path, env: dict, **changes) -> Repo:
    path = base / "repo"
    path.mkdir(parents=True)
    copy_project(path)
    params = yaml.safe_load((path / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    set_params(path / "params.yaml", **changes)
    repo = Repo(path, env, "")
    repo.run("git", "init", "-q", "-b", "main")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "project")
    for report in (path / "reports").glob("*.json"):
        report.unlink()
    return repo


@pytest.fixture(scope="module")
def folders(tmp_path_factory, shared_data):
    """A data home with coco/ (train2014/, val2014/, annotations/) and nuswide/ (the official release files,
    3 images missing and 1 truncated), and a repository run end to end on each."""
    base = tmp_path_factory.mktemp("folders")
    home = base / "home"
    archive = shared_data / "cifar10-jpg.tar.xz"
    coco = make_coco_layout(home / "coco", archive, train=160, val=60, seed=1)
    nus = make_nuswide_layout(home / "nuswide", archive, count=240, missing=3, corrupt=1, seed=2)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DSAH_DATA_HOME": str(home), "DSAH_CACHE_HOME": str(base / "cache"),
           "GIT_AUTHOR_NAME": "dsah tests", "GIT_AUTHOR_EMAIL": "tests@dsah.invalid",
           "GIT_COMMITTER_NAME": "dsah tests", "GIT_COMMITTER_EMAIL": "tests@dsah.invalid"}
    runs = {}
    start = time.monotonic()
    coco_repo = new_repo(base / "coco", env, **{"dataset": "coco", "prepare.coco.subset": 200,
                                                  "prepare.validation_size": 30, "images.size.coco": 64})
    coco_repo.first_run = coco_repo.dvc("repro").stdout
    runs["coco"] = time.monotonic() - start
    # NUS-WIDE: first as users start, no image may be missing; then told to skip up to 4.
    nus_repo = new_repo(base / "nus", env, **{"dataset": "nuswide21", "prepare.nuswide21.subset": 240,
                                                "prepare.validation_size": 30, "images.size.nuswide21": 48})
    refused = nus_repo.dvc("repro", check=False)
    set_params(nus_repo.path / "params.yaml", **{"images.max_skipped": 4})
    nus_repo.first_run = nus_repo.dvc("repro").stdout
    runs["nuswide21"] = time.monotonic() - start - runs["coco"]
    photos = make_photo_folder(home / "photos", archive)
    photo_repo = new_repo(base / "photos", env, **{"dataset": "folder", "prepare.folder.queries": 10,
                                                     "prepare.validation_size": 20, "images.size.folder": 48})
    photo_repo.first_run = photo_repo.dvc("repro").stdout
    runs["folder"] = time.monotonic() - start - runs["coco"] - runs["nuswide21"]
    for repo in (coco_repo, nus_repo, photo_repo):
        repo.run("git", "add", "-A")
        repo.run("git", "commit", "-qm", "pipeline run")
    print("folder pipelines end to end: " + ", ".join(f"{k} {v:.0f} s" for k, v in runs.items()))
    return {"home": home, "coco": (coco_repo, coco), "nuswide21": (nus_repo, nus), "refused": refused,
            "folder": (photo_repo, photos)}


def make_photo_folder(folder: Path, archive: Path, count: int = 140) -> dict:
    """A user's photos: JPEGs in nested folders (mosaics of CIFAR-10 images, 128 px), one of them not
    square and one a grayscale PNG, and labels.csv naming the classes shown, separated by '|'."""
    images, classes = cifar_sample(archive, count * 4, seed=7)
    photos, shown = mosaic_photos(images, classes, count, seed=7)
    rows = []
    for i, (pixels, tiles) in enumerate(zip(photos, shown)):
        name = f"{2020 + i % 3}/{['summer', 'winter'][i % 2]}/img{i:03d}" if i % 4 else f"img{i:03d}"
        image = Image.fromarray(pixels)
        if i == 5:
            image = image.crop((0, 0, 128, 90))  # landscape: its centre square is kept
        if i == 6:
            image, name = image.convert("L"), name + ".png"  # grayscale, decoded to RGB
        path = folder / (name if name.endswith(".png") else name + ".jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        rows.append((path.relative_to(folder).as_posix(), sorted({CIFAR10_CLASSES[c] for c in tiles})))
    (folder / "labels.csv").write_text("path,labels\n" + "".join(f"{p},{'|'.join(n)}\n" for p, n in rows))
    return {"images": [p for p, _ in rows], "labels": [n for _, n in rows]}


def reports(repo: Repo) -> tuple[dict, dict, str]:
    metrics = json.loads((repo.path / "reports" / "evaluation.json").read_text())  # evaluate's whole record
    checks = json.loads((repo.path / "reports" / "validation_checks.json").read_text())
    return metrics, checks, (repo.path / "reports" / "report.md").read_text()


def test_coco_from_its_folder_end_to_end_as_a_named_subset(folders):
    repo, layout = folders["coco"]
    metrics, checks, report = reports(repo)
    assert metrics["protocol"] == "coco-subset-200" and metrics["dataset"] == "coco"
    assert metrics["queries"] == 8 and metrics["database"] == 192  # 5,000 / 122,218 of 200 are queries
    assert 0 < metrics["mAP"] <= 1 and 0 < metrics["mAP@5000"] <= 1 and metrics["val_metric"] == "mAP"
    assert checks["success"] and checks["protocol"] == "coco-subset-200"
    details = {c["name"]: c["details"] for c in checks["checks"]}
    assert details["row_count"].startswith("observed 200; expected 200")
    assert details["store_height"].startswith("all 200 ok; expected 64")
    assert "coco-subset-200" in report and "subset" in report
    store = np.load(repo.path / "data" / "images" / "images.npy", mmap_mode="r")
    assert store.shape == (200, 64, 64, 3)
    table = pd.read_csv(repo.path / "data" / "prepared" / "split.csv", keep_default_na=False)
    assert set(table["image"]) <= set(layout["images"])
    assert repo.status() == {}


def test_nuswide_copy_missing_images_is_refused_then_skipped_within_the_limit(folders):
    repo, layout = folders["nuswide21"]
    refused = folders["refused"]
    assert refused.returncode != 0
    assert "images: error: images under" in refused.stderr and "missing or unreadable" in refused.stderr
    assert "images.max_skipped" in refused.stderr
    skipped = pd.read_csv(repo.path / "data" / "images" / "skipped.csv", keep_default_na=False)
    assert sorted(skipped["image"]) == sorted(layout["missing"] + layout["corrupt"])
    reasons = dict(zip(skipped["image"], skipped["reason"]))
    assert all("no such image file" in reasons[r] for r in layout["missing"])
    assert all("not a decodable image" in reasons[r] for r in layout["corrupt"])
    metrics, checks, report = reports(repo)
    assert metrics["protocol"] == "nuswide21-subset-240-less-4"
    assert metrics["val_metric"] == "mAP@5000" and "val_mAP@5000" in metrics
    details = {c["name"]: c["details"] for c in checks["checks"]}
    assert checks["success"] and details["row_count"].startswith("observed 236; expected 236")
    assert "nuswide21-subset-240-less-4" in report and "skipped" in report


def test_your_own_photos_from_a_folder_and_a_label_table_end_to_end_and_served(folders):
    repo, photos = folders["folder"]
    metrics, checks, report = reports(repo)
    assert metrics["protocol"] == "folder" and metrics["queries"] == 10 and metrics["database"] == 130
    assert checks["success"] and 0 < metrics["mAP"] <= 1
    details = {c["name"]: c["details"] for c in checks["checks"]}
    assert details["row_count"].startswith("observed 140; expected 140")
    assert details["label_width"].startswith("all 140 ok; expected 10")
    meta = json.loads((repo.path / "data" / "prepared" / "meta.json").read_text())
    assert meta["classes"] == sorted(CIFAR10_CLASSES)  # every class named, sorted: the order is recorded
    table = pd.read_csv(repo.path / "data" / "prepared" / "split.csv", keep_default_na=False)
    assert sorted(table["id"]) == sorted(photos["images"]) and (table["id"] == table["image"]).all()
    store = np.load(repo.path / "data" / "images" / "images.npy", mmap_mode="r")
    gray = int(table.index[table["image"] == photos["images"][6]][0])
    assert store.shape == (140, 48, 48, 3) and np.array_equal(store[gray][..., 0], store[gray][..., 2])

    server = subprocess.Popen([sys.executable, "-m", "dsah.cli", "serve", "--port", "0"], cwd=repo.path, env=repo.env,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        url = server.stdout.readline().split(" at ")[1].split()[0]
        entry = table[table["split"] == "database"]["id"].iloc[3]
        with urllib.request.urlopen(f"{url}api/search?id={urllib.parse.quote(entry)}&k=3", timeout=60) as answer:
            hits = json.loads(answer.read())["results"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
    assert hits[0]["distance"] == 0 and len(hits) == 3
    assert set(next(h for h in hits if h["id"] == entry)["labels"]) == set(photos["labels"][photos["images"].index(entry)])


def dsah(repo: Repo, *args, check=True):
    return repo.run(sys.executable, "-m", "dsah.cli", *args, check=check)


@pytest.mark.parametrize("dataset", ["coco", "nuswide21"])
def test_search_by_id_and_by_a_new_image_finds_the_neighbours_with_their_labels(folders, dataset, tmp_path,
                                                                                 shared_data):
    repo, layout = folders[dataset]
    to_name = CIFAR_TO_COCO if dataset == "coco" else CIFAR_TO_NUSWIDE
    table = pd.read_csv(repo.path / "data" / "prepared" / "split.csv", keep_default_na=False)
    entry = table[table["split"] == "database"].iloc[5]
    shown = {to_name[CIFAR10_CLASSES[c]] for c in layout["classes"][layout["images"].index(entry["image"])]}
    hits = json.loads(dsah(repo, "search", "--id", entry["id"], "-k", "5", "--json").stdout)["queries"][0]["results"]
    assert hits[0]["distance"] == 0 and len(hits) == 5
    self_hit = next(h for h in hits if h["id"] == entry["id"])
    assert set(self_hit["labels"]) == shown and self_hit["image"].startswith("store:")

    # A new photo (mosaic tiles never in the dataset), added to a copy of the index, then searched for.
    images, classes = cifar_sample(shared_data / "cifar10-jpg.tar.xz", 4, seed=99)
    photo, _ = mosaic_photos(images, classes, 1, seed=99)
    path = tmp_path / "new.jpg"
    path.write_bytes(jpeg_bytes(photo[0]))
    index = tmp_path / "index"
    shutil.copytree(repo.path / "data" / "index", index)
    labels = sorted({to_name[CIFAR10_CLASSES[c]] for c in classes})
    dsah(repo, "add", "--index", str(index), "--model", str(repo.path / "models" / "model.pt"), str(path),
         "--additions", str(tmp_path / "additions"), "--ids", "my-photo", "--labels", *labels)
    found = json.loads(dsah(repo, "search", "--index", str(index), "--model", str(repo.path / "models" / "model.pt"),
                            str(path), "-k", "3", "--json").stdout)["queries"][0]["results"]
    mine = next(h for h in found if h["id"] == "my-photo")
    assert mine["distance"] == 0 and sorted(mine["labels"]) == labels


def test_a_new_store_size_rebuilds_the_store_never_the_split_and_a_killed_build_resumes(folders):
    """images.size 64 -> 40: only the images stage and what follows rerun (the split table's md5 is unchanged).
    The build is killed midway (SIGKILL of `dvc repro` and its workers); `dvc repro` then resumes it, and
    the store equals a build from scratch, byte for byte."""
    repo, _ = folders["coco"]
    split = md5(repo.path / "data" / "prepared" / "split.csv")
    store = repo.path / "data" / "images" / "images.npy"
    work = repo.path / "data" / ".images-work"
    set_params(repo.path / "params.yaml", **{"images.size.coco": 40})
    try:
        process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "images"], cwd=repo.path, env=repo.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size for p in work.glob("*/chunks.jsonl")):
            assert process.poll() is None and time.monotonic() < deadline, "the build never recorded a chunk"
            time.sleep(0.002)
        os.killpg(process.pid, signal.SIGSTOP)  # freeze the stage and its workers at once, then kill them
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        (journal,) = work.glob("*/chunks.jsonl")
        done = journal.read_text().count("\n")
        assert not store.exists() and done > 0  # killed midway: chunks done, no store yet

        rerun = repo.dvc("repro", "images")
        output = rerun.stdout + rerun.stderr
        assert "images: resuming:" in output and "Stage 'prepare' didn't change" in output
        assert md5(repo.path / "data" / "prepared" / "split.csv") == split
        assert np.load(store, mmap_mode="r").shape == (200, 40, 40, 3)
        assert not list(work.iterdir())  # a finished build leaves nothing to resume
        resumed = md5(store)
        scratch = repo.dvc("repro", "--force", "--no-run-cache", "images")
        assert "resuming" not in scratch.stdout + scratch.stderr
        assert md5(store) == resumed, f"the resumed store differs from a build from scratch (killed after {done} chunks)"
    finally:
        repo.run("git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock")  # DVC stages dvc.lock (autostage)
        repo.dvc("checkout", "--force")
    assert repo.status() == {}
