"""The model registry: dvc.yaml's model artifact (`artifacts: dsah-model`), whose versions and stages are
GTO's git tags (the retrain flow's promotion registers a version and assigns it `prod`), and a version
fetched through DVC's artifact API: `dsah search --stage prod` and `dsah serve --stage prod` load the model
a stage points to, with the index of the same commit (the codes it answers), instead of the workspace's.

The files land in DSAH_CACHE_HOME/artifacts/<commit>/ laid out as in the repository (models/model.pt,
data/index/, and data/images/store.npy where the index's thumbnails come from), so a second call reads
them from there. DVC reads outputs from the repository's cache, else its remote (`dvc push` by the
promotion). DVC is imported here only: the library and the command line work without it otherwise.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from dsah.data.checksums import cache_home
from dsah.errors import DSAHError

ARTIFACT = "dsah-model"  # its name in dvc.yaml and in GTO's tags (dsah-model@v0.0.3, dsah-model#prod#3)
STAGE = "prod"  # the stage a promotion assigns
INDEX = "data/index"


def stage_commit(repo: Path, stage: str = STAGE) -> str | None:
    """The commit of the version in `stage` (GTO's tags), or None when no version is in it."""
    from gto.api import find_versions_in_stage
    from gto.exceptions import ArtifactNotFound

    try:
        found = find_versions_in_stage(str(repo), ARTIFACT, stage)  # the newest assignment first
    except ArtifactNotFound:  # no version registered yet
        return None
    return found[0].commit_hexsha if found else None


@dataclass
class Fetched:
    commit: str
    model: Path
    index: Path


def fetch(repo: Path, stage: str | None = None, version: str | None = None, store: bool = False) -> Fetched:
    """The model of `stage` (or `version`) of the model artifact in `repo`, and the index of its commit
    (with the image store it shows thumbnails from, given `store`)."""
    try:
        import dvc.api
        from dvc.exceptions import ArtifactNotFoundError, DvcException
        from dvc.fs import DVCFileSystem
    except ImportError:
        raise DSAHError("--stage and --version read the model registry through DVC, which is not installed "
                        "(pip install -e '.[pipeline]')") from None
    repo = Path(repo).resolve()
    which = f"stage {stage!r}" if stage else f"version {version!r}" if version else "the latest version"
    try:
        found = dvc.api.artifacts_show(ARTIFACT, version=version, stage=stage, repo=str(repo))
    except ArtifactNotFoundError:
        raise DSAHError(f"{repo}: no {which} of {ARTIFACT} (`gto show` lists them; the retrain flow's promotion "
                        f"assigns `prod`)") from None
    except DvcException as error:
        raise DSAHError(f"{repo}: cannot read the model registry: {error}") from None
    commit = found["rev"]
    folder = cache_home() / "artifacts" / commit
    wanted = [(found["path"], False), (INDEX, True)]
    fs = None
    try:
        for path, recursive in wanted:
            if not (folder / path).exists():
                fs = fs or DVCFileSystem(repo=str(repo), rev=commit)
                _get(fs, path, folder / path, recursive)
        if store:
            meta = json.loads((folder / INDEX / "meta.json").read_text())
            if meta.get("store") and not (folder / INDEX / meta["store"]).exists():
                fs = fs or DVCFileSystem(repo=str(repo), rev=commit)
                path = _normal(f"{INDEX}/{meta['store']}")
                _get(fs, path, folder / path, False)
    except Exception as error:  # DVC's, or dvc-data's (which are not DvcException): a missing output
        raise DSAHError(f"{repo}: cannot fetch {ARTIFACT} at {which} (commit {commit[:8]}): {error}; "
                        f"`dvc pull` from its remote, or `dvc push` where it was promoted") from None
    return Fetched(commit, folder / found["path"], folder / INDEX)


def _normal(relative: str) -> str:
    """"data/index/../images/store.npy" -> "data/images/store.npy" (a path inside the repository)."""
    parts: list[str] = []
    for part in relative.split("/"):
        if part == "..":
            if not parts:
                raise DSAHError(f"{relative}: outside the repository")
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def _get(fs, path: str, destination: Path, recursive: bool) -> None:
    """One path of the commit into `destination`, whole or not at all (a staging name, renamed)."""
    staging = destination.with_name(f".{destination.name}.partial")
    shutil.rmtree(staging, ignore_errors=True) if staging.is_dir() else staging.unlink(missing_ok=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    fs.get(path, str(staging), recursive=recursive)
    staging.rename(destination)
