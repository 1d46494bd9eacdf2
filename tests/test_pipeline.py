"""End to end: the real pipeline (`dvc repro`) on CIFAR-10 in a temporary git clone of the project.

One pipeline run is built per test session (the `pipeline` fixture) and shared by these tests.
"""

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.integration


@dataclass
class Repo:
    path: Path
    env: dict
    first_run: str

    def run(self, *args, check=True, cwd=None):
        return subprocess.run(list(args), cwd=cwd or self.path, env=self.env, check=check, text=True,
                              capture_output=True)

    def dvc(self, *args, **kwargs):
        return self.run(sys.executable, "-m", "dvc", *args, **kwargs)

    def status(self, cwd=None):
        return json.loads(self.dvc("status", "--json", cwd=cwd).stdout or "{}")

    @contextmanager
    def params(self, **changes):
        """Temporarily change params.yaml (dotted keys), restoring the file afterwards."""
        path = self.path / "params.yaml"
        original = path.read_text()
        params = yaml.safe_load(original)
        for dotted, value in changes.items():
            *parents, leaf = dotted.replace("__", "-").split(".")
            node = params
            for key in parents:
                node = node[key]
            node[leaf] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        try:
            yield
        finally:
            path.write_text(original)


def copy_project(dest: Path) -> None:
    """The files git would put in a clone (tracked or new, never ignored), without build outputs."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, shared_data) -> Repo:
    base = tmp_path_factory.mktemp("pipeline")
    path = base / "repo"
    path.mkdir()
    copy_project(path)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DSAH_DATA_HOME": str(shared_data),
        "DSAH_CACHE_HOME": str(base / "cache"),
        "GIT_AUTHOR_NAME": "dsah tests", "GIT_AUTHOR_EMAIL": "tests@dsah.invalid",
        "GIT_COMMITTER_NAME": "dsah tests", "GIT_COMMITTER_EMAIL": "tests@dsah.invalid",
    }
    repo = Repo(path, env, "")
    # The tiny profile: the real CIFAR-10 data stages, a few seconds of training.
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["train_imgnet"].update(width=8, outer_iters=2, samples=512, batch=128)
    params["train_lae"].update(steps=200)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repo.run("git", "init", "-q", "-b", "main")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "project")
    repo.dvc("remote", "modify", "--local", "local", "url", str(base / "remote"))
    # Committed metrics would let an unchanged stage skip; remove them so every stage runs.
    for report in (path / "reports").glob("*.json"):
        report.unlink()
    repo.first_run = repo.dvc("repro").stdout
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "pipeline run", "--allow-empty")  # dvc.lock may be unchanged
    return repo


def test_pipeline_prepares_validates_and_trains_on_cifar10(pipeline):
    for stage in ("prepare", "validate", "train_lae", "train_imgnet"):
        assert f"Running stage '{stage}'" in pipeline.first_run
    report = json.loads((pipeline.path / "reports" / "validation.json").read_text())
    assert report["success"] is True and report["checks_failed"] == 0 and report["checks_passed"] >= 10
    meta = json.loads((pipeline.path / "data" / "prepared" / "meta.json").read_text())
    assert meta["counts"] == {"rows": 60_000, "queries": 1_000, "database": 59_000, "validation": 1_000}
    # The source's checksum is part of the output, so dvc.lock changes when the source does.
    assert meta["source"]["sha256"] == subprocess.run(
        ["sha256sum", str(pipeline.env["DSAH_DATA_HOME"] + "/cifar10-jpg.tar.xz")],
        check=True, capture_output=True, text=True).stdout.split()[0]
    lock = yaml.safe_load((pipeline.path / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "validate", "train_lae", "train_imgnet"}
    assert lock["stages"]["prepare"]["params"]["params.yaml"]["prepare.cifar10"] == {"archive": ""}
    metrics = pipeline.dvc("metrics", "show", "--json").stdout
    assert '"success": true' in metrics and '"val_mAP"' in metrics
    codes = np.load(pipeline.path / "models" / "database_codes.npy")
    assert codes.shape == (59_000, 12) and set(np.unique(codes)) == {-1, 1}
    assert not (pipeline.path / "models" / "checkpoints" / "train_imgnet.pt").exists()


def test_training_curves_are_dvc_plots(pipeline, tmp_path):
    pipeline.dvc("plots", "show", "--out", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "training_loss" in page and "validation_mAP" in page
    log = (pipeline.path / "reports" / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("iteration,loss,pairwise") and len(log) == 3


def test_second_repro_reruns_nothing(pipeline):
    out = pipeline.dvc("repro").stdout
    assert "Running stage" not in out and "didn't change, skipping" in out
    assert pipeline.status() == {}


def test_a_params_change_reruns_only_what_it_touches(pipeline):
    with pipeline.params(seed=7):  # the training seed never touches the data stages
        assert set(pipeline.status()) == {"train_lae", "train_imgnet"}
    with pipeline.params(bits=24):
        assert set(pipeline.status()) == {"train_lae", "train_imgnet"}
    with pipeline.params(method="adsh"):
        assert set(pipeline.status()) == {"train_imgnet"}
    with pipeline.params(**{"train_imgnet.eta": 0.0}):
        assert set(pipeline.status()) == {"train_imgnet"}
    with pipeline.params(**{"prepare.cifar10__mosaic.queries": 10}):  # another dataset's knob
        assert pipeline.status() == {}
    with pipeline.params(split_seed=1):
        assert set(pipeline.status()) == {"prepare"}
    with pipeline.params(**{"prepare.validation_size": 500}):
        assert set(pipeline.status()) == {"prepare", "validate"}
    assert pipeline.status() == {}


def test_push_then_pull_into_a_fresh_clone_reruns_nothing(pipeline, tmp_path):
    pipeline.dvc("push")
    clone = tmp_path / "clone"
    pipeline.run("git", "clone", "-q", str(pipeline.path), str(clone))
    remote = pipeline.dvc("remote", "list").stdout.split()[1]
    pipeline.dvc("remote", "modify", "--local", "local", "url", remote, cwd=clone)
    pipeline.dvc("pull", cwd=clone)
    assert (clone / "data" / "prepared" / "images.npy").stat().st_size > 180_000_000
    assert pipeline.status(cwd=clone) == {}
    out = pipeline.dvc("repro", cwd=clone).stdout
    assert "Running stage" not in out


def test_validate_stage_fails_and_names_a_planted_defect(pipeline, tmp_path):
    planted = tmp_path / "prepared"
    shutil.copytree(pipeline.path / "data" / "prepared", planted)
    table = (planted / "split.csv").read_text().splitlines()
    # Turn a database image into a second copy of the first query's row.
    query_row = next(line for line in table[1:] if ",query," in line)
    (planted / "split.csv").write_text("\n".join(table[:-1] + [query_row]) + "\n")
    result = pipeline.run(sys.executable, "stages/validate.py", "--prepared", str(planted), "--params",
                          "params.yaml", "--out", str(tmp_path / "validation.json"), check=False)
    assert result.returncode == 1
    failed = json.loads((tmp_path / "validation.json").read_text())
    assert failed["success"] is False
    names = [name for name, ok in failed["checks"].items() if not ok]
    assert any("unique" in name for name in names)
    assert all(name in result.stderr for name in names)
