"""What users add survives the pipeline: an image added with `dsah add` and a database image removed with
`dsah remove`, in a clone of the shared pipeline run, then an experiment at another code length
(`dvc exp run -S bits=16`), and the baseline and the experiment checked out in turn (`dvc checkout`,
`dvc exp apply`)."""

import json
import sys

import numpy as np
import pytest
import yaml
from conftest import clone_with_outputs
from PIL import Image

from dsah.search.additions import read_store
from dsah.data.loading import load_prepared
from dsah.search.index import HammingIndex

pytestmark = pytest.mark.integration


def dsah(pipeline, clone, *args, check=True):
    return pipeline.run(sys.executable, "-m", "dsah.cli", *args, check=check, cwd=clone)


def found_by_image(pipeline, clone, image, entry) -> dict:
    """The hit for `entry` when its image is the query (k: the whole index), and the hits before it."""
    count = len(HammingIndex.load(clone / "data" / "index"))
    hits = json.loads(dsah(pipeline, clone, "search", str(image), "-k", str(count), "--json").stdout
                      )["queries"][0]["results"]
    rank = next(i for i, h in enumerate(hits) if h["id"] == entry)
    return {**hits[rank], "before": hits[:rank]}


@pytest.fixture(scope="module")
def edited(pipeline, tmp_path_factory):
    """A clone of the pipeline run where a user added a photo (a query image, so not in the database) and
    removed a database image."""
    folder = tmp_path_factory.mktemp("additions")
    clone = clone_with_outputs(pipeline, folder / "clone")
    data = load_prepared(clone / "data" / "prepared", clone / "data" / "images")
    photo = folder / "photo.png"
    Image.fromarray(np.asarray(data.store[data.query.table["store_index"][0]])).save(photo)
    gone = data.database.ids[123]
    added = dsah(pipeline, clone, "add", str(photo), "--ids", "my-photo", "--labels", "cat").stdout
    removed = dsah(pipeline, clone, "remove", gone).stdout
    return clone, photo, gone, added + removed


def test_dsah_add_and_remove_keep_their_changes_in_the_versioned_store(pipeline, edited):
    clone, photo, gone, out = edited
    assert "the index holds 59001" in out and "the index holds 59000" in out
    assert "1 database image(s) recorded in its removed.csv" in out
    assert out.count("versioned: `dvc commit data/additions` recorded it in dvc.lock") == 2
    store = read_store(clone / "data" / "additions")
    (mine,) = store.added
    assert (mine.id, mine.dataset, mine.labels) == ("my-photo", "cifar10", ("cat",))
    assert store.path(mine).read_bytes() == photo.read_bytes() and store.removed == ((gone, "cifar10"),)
    status = pipeline.status(cwd=clone)
    assert "additions" not in status  # cached and recorded in dvc.lock: the stage's output is up to date
    assert "index" in status  # its dep changed: the next repro rebuilds it, with the additions
    recorded = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]["additions"]["outs"][0]
    assert recorded["nfiles"] == 3  # the two tables and the image
    assert "dvc.lock" in pipeline.run("git", "diff", "--name-only", cwd=clone).stdout.split()  # ready to commit


@pytest.fixture(scope="module")
def experiment(pipeline, edited):
    clone, *_ = edited
    run = pipeline.dvc("exp", "run", "-S", "bits=16", cwd=clone, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_a_rebuild_at_another_code_length_keeps_the_added_image_and_the_removal(pipeline, edited, experiment):
    clone, photo, gone, _ = edited
    assert "Running stage 'index'" in experiment and "Running stage 'train'" in experiment
    index = HammingIndex.load(clone / "data" / "index")
    assert index.bits == 16 and len(index) == 59_000 and gone not in index.ids.tolist()
    row = int(index.rows_of(["my-photo"])[0])
    assert row == len(index) - 1 and index.label_names(row) == ["cat"]
    assert (clone / "data" / "index" / str(index.refs[row])).read_bytes() == photo.read_bytes()
    # Encoded again, by the 16-bit model: its own image finds it at distance 0, behind only the database
    # images whose codes are the same (ties go by database order, and the addition comes last).
    hit = found_by_image(pipeline, clone, photo, "my-photo")
    assert hit["distance"] == 0 and all(h["distance"] == 0 for h in hit["before"])
    by_id = json.loads(dsah(pipeline, clone, "search", "--id", "my-photo", "-k", "1", "--json").stdout)
    assert by_id["bits"] == 16 and by_id["queries"][0]["results"][0]["distance"] == 0
    missing = dsah(pipeline, clone, "search", "--id", gone, check=False)
    assert missing.returncode == 2 and "unknown id(s)" in missing.stderr


def test_checking_out_the_baseline_and_applying_the_experiment_brings_them_back(pipeline, edited, experiment):
    clone, _, gone, _ = edited
    pipeline.run("git", "reset", "-q", "--hard", "HEAD", cwd=clone)  # the baseline: before the user's edits
    pipeline.dvc("checkout", "--force", cwd=clone)
    baseline = HammingIndex.load(clone / "data" / "index")
    assert baseline.bits == 12 and "my-photo" not in baseline.ids.tolist() and gone in baseline.ids.tolist()
    assert read_store(clone / "data" / "additions").added == ()
    (name,) = pipeline.dvc("exp", "list", "--name-only", cwd=clone).stdout.split()
    pipeline.dvc("exp", "apply", name, cwd=clone)
    index = HammingIndex.load(clone / "data" / "index")
    assert index.bits == 16 and "my-photo" in index.ids.tolist() and gone not in index.ids.tolist()
    assert [a.id for a in read_store(clone / "data" / "additions").added] == ["my-photo"]
    assert pipeline.status(cwd=clone) == {}
