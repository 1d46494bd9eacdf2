import atexit
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/fixtures.py

# Telemetry cannot reach out from here; keep every tool quiet about it.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# Prefect keeps its database and settings here: never the developer's own ~/.prefect, and one per test
# process (pytest-xdist's workers inherit the controller's environment, and each runs its own test server).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="dsah-tests-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
# `make test` runs three workers on two cores, each of whose torch processes keeps its two threads (the
# users' setting: the resume tests compare exact numbers). OpenMP threads that wait for a busy core must
# sleep, not spin: spinning made training several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# The local data copies the suite reads (CI: ../shared/data), found as the pipeline finds its data: through
# DSAH_DATA_HOME (dsah.data.sources.data_home), the one place they can be; no download gives these files.
SUITE_DATA = ("cifar10-jpg.tar.xz", "coco-hashing-labels.tsv.gz", "nuswide21-hashing-labels.tsv.gz")


def pytest_configure(config):
    """Before the first test (and before any worker starts): the suite's data is there, or the run stops
    with one line saying what to set. The location becomes absolute in the environment, so every
    subprocess a test starts, in whatever folder, finds the same data."""
    from dsah.data.sources import DATA_HOME_ENV, data_home

    home = data_home()
    missing = [name for name in SUITE_DATA if home is None or not (home / name).is_file()]
    if missing:
        where = "is not set" if home is None else f"is {home}, which lacks {', '.join(missing)}"
        raise pytest.UsageError(f"the test suite reads its data from {DATA_HOME_ENV}, which {where}: set it to the folder "
                                f"holding {', '.join(SUITE_DATA)} (CI: DSAH_DATA_HOME=$(realpath ../shared/data) make test)")
    os.environ[DATA_HOME_ENV] = str(home.resolve())


@pytest.fixture
def isolated_homes(tmp_path, monkeypatch):
    """No DSAH_DATA_HOME and an empty download cache: only what a test puts there exists."""
    monkeypatch.delenv("DSAH_DATA_HOME", raising=False)
    monkeypatch.setenv("DSAH_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of the local copies of the real datasets: DSAH_DATA_HOME, checked by pytest_configure."""
    return Path(os.environ["DSAH_DATA_HOME"])


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
        """`dvc status`, less the sources stage's "always changed" and its changed params.yaml: it runs on
        every repro and checks the whole file, by design (its other changes, such as changed code, stay in)."""
        status = json.loads(self.dvc("status", "--json", cwd=cwd).stdout or "{}")
        by_design = ["always changed", {"changed deps": {"params.yaml": "modified"}}]
        rest = [entry for entry in status.get("sources", []) if entry not in by_design]
        if "sources" in status and not rest:
            del status["sources"]
        return status

    @contextmanager
    def params(self, **changes):
        """Temporarily change params.yaml (dotted keys), restoring the file afterwards."""
        path = self.path / "params.yaml"
        original = path.read_text()
        set_params(path, **{dotted.replace("__", "-"): value for dotted, value in changes.items()})
        try:
            yield
        finally:
            path.write_text(original)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def workspace_processes(repo: Path) -> list[str]:
    """Live processes (not zombies) working in the workspace or naming it on their command line."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        cmdline, cwd = " ".join(process.info["cmdline"] or ()), process.info["cwd"] or ""
        if process.info["status"] != psutil.STATUS_ZOMBIE and (
                cwd == str(repo) or cwd.startswith(f"{repo}/") or str(repo) in cmdline):
            found.append(f"{process.pid}: {cmdline}")
    return found


def load_script(path: Path, name: str):
    """A script that is no package module (a stage, a tool of tools/) as a module; its main() is not run."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def set_params(path: Path, **changes) -> None:
    """Set dotted keys of a params.yaml ("images.size.coco")."""
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(dest: Path) -> None:
    """The files git would put in a clone (tracked or new, never ignored), without build outputs."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def repo_env(base: Path, shared_data: Path) -> dict:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DSAH_DATA_HOME": str(shared_data),
        "DSAH_CACHE_HOME": str(base / "cache"),
        "GIT_AUTHOR_NAME": "dsah tests", "GIT_AUTHOR_EMAIL": "tests@dsah.invalid",
        "GIT_COMMITTER_NAME": "dsah tests", "GIT_COMMITTER_EMAIL": "tests@dsah.invalid",
    }


def build_pipeline(base: Path, shared_data: Path) -> Repo:
    """A fresh clone of the project under base/repo with the tiny profile, `dvc repro` run and committed:
    the real CIFAR-10 data stages, a few seconds of training."""
    path = base / "repo"
    path.mkdir()
    copy_project(path)
    repo = Repo(path, repo_env(base, shared_data), "")
    # Committed metrics would let an unchanged stage skip; removed, so every stage runs.
    for report in (path / "reports").glob("*.json"):
        report.unlink()
    from fixtures import TEST_NETWORK

    params = yaml.safe_load((path / "params.yaml").read_text())
    params["train_imgnet"].update(TEST_NETWORK, width=8, outer_iters=2, samples=512, batch=128)
    params["train_lae"].update(steps=200)
    params["features"].update(extractor="pixels", size=8)
    params["methods"]["sdh"].update(train_size=2000, anchors=100)
    params["methods"]["ksh"].update(train_size=300, anchors=50, steps=20)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repo.run("git", "init", "-q", "-b", "main")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "project")
    # What a user types first: no step before it (no `dvc pull`: there is no remote with outputs here).
    repo.first_run = repo.dvc("repro").stdout
    repo.dvc("remote", "modify", "--local", "local", "url", str(base / "remote"))  # for clone_with_outputs
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "pipeline run", "--allow-empty")  # dvc.lock may be unchanged
    return repo


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, shared_data, worker_id) -> Repo:
    """The shared tiny pipeline run, built once per test session: under pytest-xdist the first worker to
    need it builds it (a file lock in the workers' common temporary folder) and every worker, that one
    too, works on a copy of its own (seconds, where a build takes a minute or more)."""
    base = tmp_path_factory.mktemp("pipeline")
    if worker_id == "master":  # no workers: build it here
        return build_pipeline(base, shared_data)
    import filelock

    common = tmp_path_factory.getbasetemp().parent / "pipeline-build"
    with filelock.FileLock(f"{common}.lock"):
        if not (common / "first_run.txt").is_file():
            shutil.rmtree(common, ignore_errors=True)
            common.mkdir()
            built = build_pipeline(common, shared_data)
            (common / "first_run.txt").write_text(built.first_run)
    for name in ("repo", "cache"):
        if (common / name).exists():
            shutil.copytree(common / name, base / name, symlinks=True)
    repo = Repo(base / "repo", repo_env(base, shared_data), (common / "first_run.txt").read_text())
    repo.dvc("remote", "modify", "--local", "local", "url", str(base / "remote"))  # its own, not the builder's
    return repo


def chromium(profile: Path, *flags: str):
    """Debian's chromium, headless, through chromedriver (selenium); `flags` add to the usual ones."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1200,2400", *flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))


def copy_with_outputs(pipeline: Repo, dest: Path) -> Path:
    """A copy of the shared pipeline run's folder, its DVC cache included (seconds: no push, clone or
    pull), for a test that changes outputs but needs neither a remote nor a fresh clone."""
    shutil.copytree(pipeline.path, dest, symlinks=True)
    return dest


def clone_with_outputs(pipeline: Repo, dest: Path) -> Path:
    """A git clone of the shared pipeline run with its DVC outputs pulled from the run's remote."""
    pipeline.dvc("push")
    pipeline.run("git", "clone", "-q", str(pipeline.path), str(dest))
    remote = pipeline.dvc("remote", "list").stdout.split()[1]
    pipeline.dvc("remote", "modify", "--local", "local", "url", remote, cwd=dest)
    pipeline.dvc("pull", cwd=dest)
    return dest
