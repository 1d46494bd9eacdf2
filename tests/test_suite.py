"""The suite's own set-up (tests/conftest.py): it reads its data from DSAH_DATA_HOME, where the pipeline
looks, or stops before its first test with one line saying what to set; and every subprocess a test
starts finds the data the suite was given, whatever folder it runs in."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SUITE_DATA

WORKERS = ["-n", "2", "--dist", "loadfile"]  # as `make test` runs it


def pytest_run(*args, env):
    """pytest on this project's tests in a process of its own (never this run's worker settings)."""
    env = {k: v for k, v in env.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("home, workers", [(None, WORKERS), ("empty", [])], ids=["unset-2-workers", "empty-folder"])
def test_without_its_data_the_suite_stops_before_the_first_test_saying_what_to_set(tmp_path, home, workers):
    """../shared/data beside the project is no fallback: the pipeline would not look there either."""
    env = {k: v for k, v in os.environ.items() if k != "DSAH_DATA_HOME"}
    env["DSAH_CACHE_HOME"] = str(tmp_path / "cache")
    if home:
        (tmp_path / home).mkdir()
        env["DSAH_DATA_HOME"] = str(tmp_path / home)
    result = pytest_run(*workers, "tests/test_bench.py::test_multilabel_benchmark_tiny_cpu_run", env=env)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert (result.returncode, len(lines)) == (4, 1), result.stdout + result.stderr  # pytest's usage error
    which = "is not set" if home is None else f"is {tmp_path / home}, which lacks {', '.join(SUITE_DATA)}"
    assert lines[0] == (f"ERROR: the test suite reads its data from DSAH_DATA_HOME, which {which}: set it to the "
                        f"folder holding {', '.join(SUITE_DATA)} (CI: DSAH_DATA_HOME=$(realpath ../shared/data) make test)")


def test_a_subprocess_in_another_folder_finds_the_data_the_suite_was_given(shared_data, tmp_path):
    script = "from dsah.data.sources import locate; print(locate('CIFAR-10', ['cifar10-jpg.tar.xz']).path)"
    found = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(found.stdout.strip()) == shared_data / "cifar10-jpg.tar.xz"


def test_a_relative_data_location_reaches_every_subprocess_as_the_same_folder():
    """`DSAH_DATA_HOME=../shared/data make test`: the suite resolves it once, from where it was started."""
    relative = os.path.relpath(os.environ["DSAH_DATA_HOME"], ROOT)
    assert not Path(relative).is_absolute()
    result = pytest_run("tests/test_suite.py::test_a_subprocess_in_another_folder_finds_the_data_the_suite_was_given",
                        env={**os.environ, "DSAH_DATA_HOME": relative})
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr
