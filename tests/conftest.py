import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/fixtures.py

# Telemetry cannot reach out from here; keep every tool quiet about it.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture
def isolated_homes(tmp_path, monkeypatch):
    """No DSAH_DATA_HOME and an empty download cache: only what a test puts there exists."""
    monkeypatch.delenv("DSAH_DATA_HOME", raising=False)
    monkeypatch.setenv("DSAH_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The local copies of the real datasets (CI sets DSAH_DATA_HOME to ../shared/data)."""
    home = os.environ.get("DSAH_DATA_HOME") or str(ROOT.parent / "shared" / "data")
    path = Path(home)
    if not (path / "cifar10-jpg.tar.xz").is_file():
        pytest.fail(f"real-data tests need the CIFAR-10 copy: set DSAH_DATA_HOME (looked in {path})")
    return path.resolve()
