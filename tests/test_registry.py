"""The model registry: GTO's versions and stages of dvc.yaml's model artifact, and `dsah search --stage`
reading a version's model and index through DVC's artifact API, from the cache or from the DVC remote only."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, digest
from fixtures import build_search_index

from dsah.experiments import registry


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def dvc(repo: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout


def dsah(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsah.cli", *args], cwd=repo, check=check, capture_output=True,
                          text=True)


def answers(search: subprocess.CompletedProcess) -> dict:
    """`dsah search --json`'s answer, less where the index was and how long it took."""
    return {k: v for k, v in json.loads(search.stdout).items() if k not in ("index", "seconds")}


def register(repo: Path, stage: str) -> str:
    """The commit as the next version, assigned `stage` (as the promotion does); -> the version."""
    from gto.api import assign, register

    version = register(str(repo), registry.ARTIFACT, "HEAD").version
    assign(str(repo), registry.ARTIFACT, stage, version=version)
    return version


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A git + DVC project whose model, index and image store are DVC outputs, with the project's own
    `artifacts:` section and a local DVC remote; no version registered yet."""
    for key, value in (("NAME", "dsah tests"), ("EMAIL", "tests@dsah.invalid")):  # GTO's tags are annotated
        monkeypatch.setenv(f"GIT_AUTHOR_{key}", value)
        monkeypatch.setenv(f"GIT_COMMITTER_{key}", value)
    repo = tmp_path / "project"
    (repo / "models").mkdir(parents=True)
    index, model, _ = build_search_index(repo / "data", store="../images/store.npy")
    shutil.move(model, repo / "models" / "model.pt")
    git(repo, "init", "-q", "-b", "main")
    dvc(repo, "init", "-q")
    dvc(repo, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"artifacts": artifacts}))
    dvc(repo, "add", "-q", "models/model.pt", "data/index", "data/images/store.npy")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a model and its index")
    monkeypatch.setenv("DSAH_CACHE_HOME", str(tmp_path / "cache"))
    return repo


def test_search_by_stage_reads_that_versions_model_and_index(project, tmp_path):
    missing = dsah(project, "search", "--stage", "prod", "--id", "img3", check=False)
    assert missing.returncode != 0 and f"{project}: no stage 'prod' of dsah-model" in missing.stderr
    assert registry.stage_commit(project) is None
    assert register(project, "prod") == "v0.0.1"
    dvc(project, "push", "-q")  # as the promotion does
    prod = git(project, "rev-parse", "HEAD").strip()
    assert registry.stage_commit(project) == prod

    # A later commit changes the workspace's index: the stage still answers from its own commit's.
    here = answers(dsah(project, "search", "--id", "img7", "-k", "5", "--json"))
    index = project / "data" / "index"
    dvc(project, "unprotect", "data/index")
    meta = json.loads((index / "meta.json").read_text())
    (index / "meta.json").write_text(json.dumps({**meta, "method": "something newer"}))
    dvc(project, "add", "-q", "data/index")
    git(project, "commit", "-qam", "a newer index")
    staged = dsah(project, "search", "--stage", "prod", "--id", "img7", "-k", "5", "--json")
    assert answers(staged) == here
    assert f"the index of commit {prod[:8]}" in staged.stderr
    fetched = tmp_path / "cache" / "artifacts" / prod
    assert digest(fetched / "models" / "model.pt") == digest(project / "models" / "model.pt")
    assert "method" not in json.loads((fetched / "data" / "index" / "meta.json").read_text())
    assert not (fetched / "data" / "images").exists()  # search shows no thumbnails: the store stays behind

    # Elsewhere, with the DVC remote only (no cache): the same model, by version.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    shutil.rmtree(tmp_path / "cache")
    by_version = dsah(clone, "search", "--version", "v0.0.1", "--id", "img7", "-k", "5", "--json")
    assert answers(by_version) == here
    unknown = dsah(clone, "search", "--version", "v9.9.9", "--id", "img7", check=False)
    assert unknown.returncode != 0 and "no version 'v9.9.9' of dsah-model" in unknown.stderr
    # `dsah serve --stage` shows thumbnails: the commit's image store comes along, where the index says.
    served = registry.fetch(clone, version="v0.0.1", store=True)
    assert digest(served.index.parent / "images" / "store.npy") == digest(project / "data" / "images" / "store.npy")

    # Outputs in neither the cache nor the remote: a clear error, nothing half-fetched left behind.
    shutil.rmtree(tmp_path / "cache")
    shutil.rmtree(tmp_path / "remote")
    gone = dsah(clone, "search", "--stage", "prod", "--id", "img7", check=False)
    assert gone.returncode != 0 and "cannot fetch dsah-model at stage 'prod'" in gone.stderr, gone.stderr
    assert "dvc pull" in gone.stderr and "Traceback" not in gone.stderr
    assert not list((tmp_path / "cache" / "artifacts").rglob("model.pt"))

