"""Finding source data and naming its content.

One mechanism finds local copies: an explicit path from params, else the folder named by the
environment variable DSAH_DATA_HOME (searched for the file names each dataset knows), else the download
cache (DSAH_CACHE_HOME, default ~/.cache/dsah). Only then, and only if allowed, is the official URL
downloaded (by `obtain`, not by `locate`; dsah.data.downloads), into the cache, and checked against its
published checksum before it is used.

A source's fingerprint names its content, never its path or dates, so the same data found elsewhere or
on another machine fingerprints the same: an official archive by its published checksum (a file of that
name is always verified against it), any other file by its sha256, a folder by the sha256 of its files'
names, sizes and sha256s (dsah.data.checksums).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


from dsah.errors import DataError
from dsah.data.archives import extract
from dsah.data.checksums import RemoteFile, cache_home, cached_digest, folder_digest, verify
from dsah.data.downloads import announce, fetch


DATA_HOME_ENV = "DSAH_DATA_HOME"


@dataclass(frozen=True)
class Source:
    """A file or folder a dataset is read from.

    origin: "params", "DSAH_DATA_HOME", "cache", or "download" for official files not here yet (`obtain`
    fetches them). officials: the published files this one is (or, with unpack, the archives this folder
    is unpacked from): their published checksums identify it."""

    path: Path
    origin: str
    officials: tuple[RemoteFile, ...] = ()
    unpack: bool = False

    def fingerprint(self) -> dict[str, object]:
        """What the data is, not where: the same on every machine (see the module docstring)."""
        if self.officials:
            return {"name": self.path.name, "published": [
                {"name": r.name, **{a: getattr(r, a) for a in ("md5", "sha256") if getattr(r, a)}}
                for r in self.officials]}
        if self.path.is_dir():
            files, digest = folder_digest(self.path)
            return {"name": self.path.name, "files": files, "sha256": digest}
        return {"name": self.path.name, "sha256": cached_digest(self.path)}


def fingerprint(sources: dict[str, Source | None]) -> dict[str, object]:
    """Each role's fingerprint ({"absent": true} for an optional source not found, e.g. images)."""
    return {role: source.fingerprint() if source is not None else {"absent": True}
            for role, source in sources.items()}


def data_home() -> Path | None:
    value = os.environ.get(DATA_HOME_ENV, "").strip()
    return Path(value).expanduser() if value else None


def locate(
    what: str,
    names: Sequence[str],
    explicit: str = "",
    remotes: Sequence[RemoteFile] = (),
    download: bool = False,
) -> Source:
    """Find the first available copy of a dataset source; see the module docstring for the order.

    `names` are file (or folder) names, relative to DSAH_DATA_HOME, in order of preference.
    """
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise DataError(f"{what}: the path given in params does not exist: {path}")
        return _source(path, "params", remotes)
    home = data_home()
    if home is not None:
        if not home.is_dir():
            raise DataError(f"{what}: {DATA_HOME_ENV}={home} is not a folder")
        for name in names:
            if (home / name).exists():
                return _source(home / name, DATA_HOME_ENV, remotes)
    cache = cache_home() / "downloads"
    for remote in remotes:
        if (cache / remote.name).is_file():
            return _source(cache / remote.name, "cache", remotes)
    if download and remotes:  # obtain() fetches it, when the data is read
        return Source(cache / remotes[0].name, "download", (remotes[0],))
    looked = f"{DATA_HOME_ENV}={home}" if home else f"{DATA_HOME_ENV} (not set)"
    hint = (
        f"set {DATA_HOME_ENV} to a folder holding one of them, or give the path in params.yaml"
        + ("" if not remotes else "; prepare.download: true fetches "
           + ", ".join(r.url for r in remotes))
    )
    raise DataError(
        f"{what}: no local copy found. Looked for {', '.join(names)} in {looked} "
        f"and for {', '.join(r.name for r in remotes) or 'nothing'} in {cache}; {hint}"
    )


def _source(path: Path, origin: str, remotes: Sequence[RemoteFile]) -> Source:
    official = next((r for r in remotes if r.name == path.name and path.is_file()), None)
    if official is None:
        return Source(path, origin)
    verify(path, official)  # a file named like an official archive must be that archive
    return Source(path, origin, (official,))


def obtain(source: Source) -> Source:
    """The source, its official files downloaded (and verified; unpacked, for a folder) first if they
    are not here yet."""
    if source.origin != "download":
        return source
    announce(source.officials, cache_home() / "downloads")  # all of them, before any starts
    for remote in source.officials:
        fetched = fetch(remote, cache_home() / "downloads")
        if source.unpack:
            extract(fetched, source.path)
    return Source(source.path, "cache", source.officials, source.unpack)
