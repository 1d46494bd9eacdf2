"""What a file is: published files (RemoteFile) and their checksums, and a cache of checksums per file.

Checksums are cached per file (path, size, mtime, inode) in DSAH_CACHE_HOME/checksums.sqlite (default
~/.cache/dsah), so a large source is hashed once, not on every run. A folder's digest is the sha256 of its
files' names, sizes and sha256s.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from dsah.errors import DataError
from dsah.io import file_digest


CACHE_HOME_ENV = "DSAH_CACHE_HOME"


@dataclass(frozen=True)
class RemoteFile:
    """An official download: the file name it is saved (and looked for) under, its URL, checksum, and
    its published size in bytes (for messages only; the checksum is what identifies it)."""

    name: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None


def _checksum_cache() -> sqlite3.Connection:
    path = cache_home() / "checksums.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=60)
    connection.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT, size INTEGER, mtime_ns INTEGER, "
                       "inode INTEGER, algorithm TEXT, digest TEXT, PRIMARY KEY (path, algorithm))")
    return connection


def _lookup(connection: sqlite3.Connection, path: Path, algorithm: str) -> str:
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    row = connection.execute("SELECT size, mtime_ns, inode, digest FROM digests WHERE path = ? AND algorithm = ?",
                             (real, algorithm)).fetchone()
    if row is not None and tuple(row[:3]) == key:
        return row[3]
    digest = file_digest(real, algorithm)
    connection.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)", (real, *key, algorithm, digest))
    return digest


def remember_digests(path: Path, digests: dict[str, str]) -> None:
    """Cache checksums just computed over this version of the file: the next check need not read it."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    with closing(_checksum_cache()) as connection, connection:
        for algorithm, digest in digests.items():
            connection.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)",
                               (real, stat.st_size, stat.st_mtime_ns, stat.st_ino, algorithm, digest))


def cached_digest(path: Path, algorithm: str = "sha256") -> str:
    """The file's checksum, computed once per version of the file (same path, size, mtime and inode)."""
    with closing(_checksum_cache()) as connection, connection:
        return _lookup(connection, path, algorithm)


def folder_digest(folder: Path) -> tuple[int, str]:
    """(number of files, sha256 over their relative names, sizes and sha256s), hidden files excluded:
    what a folder holds, whatever its path. Names a source folder, and the prepared data a validation
    passed on."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))
    h = hashlib.sha256()
    with closing(_checksum_cache()) as connection, connection:  # one transaction for the whole folder
        for path in tqdm(files, desc=f"checksums {Path(folder).name}", unit="file", disable=len(files) < 10_000,
                         mininterval=1.0):
            h.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0"
                     f"{_lookup(connection, path, 'sha256')}\n".encode())
    return len(files), h.hexdigest()


def cache_home() -> Path:
    value = os.environ.get(CACHE_HOME_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "dsah"


def verify(path: Path, remote: RemoteFile) -> None:
    """Refuse a file whose checksum differs from the published one."""
    for algorithm in ("sha256", "md5"):
        expected = getattr(remote, algorithm)
        if expected:
            actual = cached_digest(path, algorithm)
            if actual != expected:
                raise DataError(
                    f"{path}: {algorithm} checksum mismatch (expected {expected}, got {actual}); "
                    "the file is corrupt, truncated or not the official archive. Delete it and retry."
                )
