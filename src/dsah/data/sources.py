"""Finding, fingerprinting, downloading and unpacking source data.

One mechanism finds local copies: an explicit path from params, else the folder named by the
environment variable DSAH_DATA_HOME (searched for the file names each dataset knows), else the download
cache (DSAH_CACHE_HOME, default ~/.cache/dsah). Only then, and only if allowed, is the official URL
downloaded (by `obtain`, not by `locate`), into the cache, and checked against its published checksum
before it is used.

Downloads resume: the bytes received so far are kept as <name>.part beside the final name (never under
it), a broken connection is tried again a few times, and each attempt, in this run or a later one, asks
the server only for the rest (an HTTP Range request; a server that ignores it sends the whole file, and
the part starts over). Two runs sharing the cache take turns (a lock file beside the part). Only a
complete file whose checksum matches is renamed to its final name; a mismatching one is deleted.
Before anything is downloaded, one line on stderr says what it takes (the published or served sizes,
what is already here, the free disk space), and a download that cannot fit is refused before it starts.

A source's fingerprint names its content, never its path or dates, so the same data found elsewhere or
on another machine fingerprints the same: an official archive by its published checksum (a file of that
name is always verified against it), any other file by its sha256, a folder by the sha256 of its files'
names, sizes and sha256s. Checksums are cached per file (path, size, mtime, inode) in
DSAH_CACHE_HOME/checksums.sqlite, so a large source is hashed once, not on every run.

Archives are untrusted input: members with absolute paths, '..' components, links or device files are
refused before anything is read or written, and so is an archive that would unpack beyond the limits
(ArchiveLimits: unpacked size, member count, compression ratio; zip and tar bombs), checked on the sizes
its headers declare before anything is written and again on the bytes actually written, as they come
out. An archive is unpacked into a hidden folder beside its destination and moved there only whole.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import http.client
import io
import lzma
import os
import re
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from dsah.errors import ConfigError, DataError
from dsah.io import atomic_path, file_digest

DATA_HOME_ENV, CACHE_HOME_ENV = "DSAH_DATA_HOME", "DSAH_CACHE_HOME"


@dataclass(frozen=True)
class RemoteFile:
    """An official download: the file name it is saved (and looked for) under, its URL, checksum, and
    its published size in bytes (for messages only; the checksum is what identifies it)."""

    name: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None


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


def _remember(path: Path, digests: dict[str, str]) -> None:
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


def data_home() -> Path | None:
    value = os.environ.get(DATA_HOME_ENV, "").strip()
    return Path(value).expanduser() if value else None


def cache_home() -> Path:
    value = os.environ.get(CACHE_HOME_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "dsah"


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


def _say(line: str) -> None:
    """The default log: stderr (a stage's stdout may be captured)."""
    print(line, file=sys.stderr, flush=True)


def _size(n: int | None) -> str:
    """Bytes in decimal units, as download sizes are published: 13_510_573_713 -> '13.5 GB'."""
    if n is None:
        return "size unknown"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _part(folder: Path, remote: RemoteFile) -> Path:
    """Where the bytes received so far are kept until the whole file is verified."""
    return folder / f"{remote.name}.part"


def announce(remotes: Sequence[RemoteFile], folder: Path, log: Callable[[str], None] = _say) -> None:
    """State what downloading `remotes` into folder takes in all (net of files, or parts of them,
    already there) and the free space there, before any starts; refuse when the known total does
    not fit."""
    folder.mkdir(parents=True, exist_ok=True)
    left = [r for r in remotes if not (folder / r.name).is_file()]
    if not left:
        return
    have = {r.name: _part(folder, r).stat().st_size if _part(folder, r).is_file() else 0 for r in left}
    needed = sum(max(r.size - have[r.name], 0) for r in left if r.size is not None)
    unknown = sum(r.size is None for r in left)
    free = shutil.disk_usage(folder).free
    files = ", ".join(f"{r.name} ({_size(r.size)}" + (f", {_size(have[r.name])} already here)" if have[r.name]
                                                      else ")") for r in left)
    log(f"to download into {folder}: {files}; {_size(needed)} in all"
        + (f" plus {unknown} file(s) of unknown size" if unknown else "") + f"; {_size(free)} free there")
    if needed > free:
        raise DataError(
            f"downloading {', '.join(r.name for r in left)} needs {_size(needed)} in {folder}, but only "
            f"{_size(free)} is free there; free some space or set {CACHE_HOME_ENV} to a folder on a larger disk"
        )


def _transient(exc: BaseException) -> bool:
    """Worth another attempt: a broken, refused or timed-out connection, a cut body, a server error;
    not an HTTP answer that will not change (404, 403, ...) nor a local disk that cannot take more."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in (408, 429)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return False
    return isinstance(exc, (OSError, http.client.HTTPException))


def fetch(
    remote: RemoteFile,
    folder: Path,
    chunk: int = 1 << 20,
    *,
    attempts: int = 5,
    delay: float = 2.0,
    timeout: float = 60.0,
    log: Callable[[str], None] = _say,
) -> Path:
    """Download remote.url into folder/remote.name, verified, resuming what an earlier call left.

    The bytes received so far live in folder/<name>.part, never under the final name: a broken
    connection is tried again (`attempts` in all, waiting delay, 2*delay, ... seconds), each attempt
    resuming at the end of the part (HTTP Range), and when all fail the part is kept for the next call.
    Only a file whose checksum matches is renamed to its final name; a mismatching part is deleted."""
    dest = folder / remote.name
    if dest.is_file():
        verify(dest, remote)
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    part = _part(folder, remote)
    with _downloading(folder, remote, log):
        if dest.is_file():  # another run finished it while this one waited
            verify(dest, remote)
            return dest
        for attempt in range(1, attempts + 1):
            try:
                _receive(remote, part, chunk, timeout, log)
                break
            except (OSError, http.client.HTTPException) as exc:
                if not _transient(exc) or attempt == attempts:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    kept = (f"; the {_size(part.stat().st_size)} received are kept in {part} and the next run "
                            "resumes from there") if part.is_file() and part.stat().st_size else ""
                    raise DataError(f"download of {remote.url} failed{tries}: {exc}{kept}") from exc
                log(f"download of {remote.name} broke ({exc}); attempt {attempt + 1} of {attempts} "
                    f"in {delay * attempt:g} s")
                time.sleep(delay * attempt)
        digests = _check_part(part, remote)
        os.replace(part, dest)  # same folder: atomic
        _remember(dest, digests)
    return dest


@contextmanager
def _downloading(folder: Path, remote: RemoteFile, log: Callable[[str], None]) -> Iterator[None]:
    """Hold folder/.<name>.lock while the part is written: two runs sharing the cache (queued
    experiments) must not append to one part. The second waits, then finds the finished file."""
    with open(folder / f".{remote.name}.lock", "a") as handle:  # the lock goes when the file is closed
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is downloading {remote.name} into {folder}; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _receive(remote: RemoteFile, part: Path, chunk: int, timeout: float, log: Callable[[str], None]) -> None:
    """One request: the body appended to the part (or replacing it, when the server does not resume).
    Returns once the whole file is there; a cut body raises IncompleteRead, so the caller retries."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(remote.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise
        total = _total_of(exc.headers.get("Content-Range", ""))
        exc.close()
        if total is None or total == have:  # a run stopped between receiving and renaming it
            log(f"{part} already holds all of {remote.name} ({_size(have)}); verifying it")
            return
        part.unlink()  # larger than the file: not a part of it
        return _receive(remote, part, chunk, timeout, log)
    with response:
        stated = response.headers.get("Content-Length", "")
        length = int(stated) if stated.isdigit() else None
        start, total = 0, length
        if response.status == 206:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
            if match is None or int(match[1]) != have:
                if not have:  # we asked for nothing partial: no restart would change this answer
                    raise DataError(f"download of {remote.url}: unexpected partial answer "
                                    f"(Content-Range {response.headers.get('Content-Range')!r})")
                response.close()
                part.unlink()  # not the bytes we asked for: start over
                return _receive(remote, part, chunk, timeout, log)
            start = have
            total = int(match[2]) if match[2] != "*" else (have + length if length is not None else None)
        free = shutil.disk_usage(part.parent).free
        resumed = (f", resuming at {_size(start)}" if start
                   else ", starting over: the server does not resume" if have else "")
        log(f"downloading {remote.name} ({_size(total if total is not None else remote.size)}{resumed}) "
            f"from {remote.url} into {part.parent}; {_size(free)} free there")
        if total is not None and total - start > free:
            raise DataError(f"download of {remote.url}: {_size(total - start)} left to receive but only "
                            f"{_size(free)} free in {part.parent}")
        with open(part, "ab" if start else "wb") as out, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, desc=f"download {remote.name}") as bar:
            while block := response.read(chunk):
                out.write(block)
                bar.update(len(block))
    received = part.stat().st_size
    if total is not None and received < total:
        # http.client reports a connection closed before Content-Length as a plain end of body.
        raise http.client.IncompleteRead(b"", total - received)


def _total_of(content_range: str) -> int | None:
    """The whole file's size from a Content-Range header ('bytes */1234', 'bytes 0-9/1234'), if stated."""
    match = re.search(r"/(\d+)\s*$", content_range)
    return int(match[1]) if match else None


def _check_part(part: Path, remote: RemoteFile) -> dict[str, str]:
    """The completed part's published checksums ({algorithm: digest}); a part whose checksum differs
    is refused (and deleted).

    The whole file is hashed once it is complete, rather than hashing the existing part before
    appending: one path whatever mix of resumes and restarts produced it."""
    hashes = {a: hashlib.new(a) for a in ("md5", "sha256") if getattr(remote, a)}
    if hashes:
        with open(part, "rb") as f:
            while block := f.read(1 << 20):
                for h in hashes.values():
                    h.update(block)
    for algorithm, h in hashes.items():
        expected = getattr(remote, algorithm)
        if h.hexdigest() != expected:
            part.unlink()
            raise DataError(
                f"download of {remote.url}: {algorithm} checksum mismatch "
                f"(expected {expected}, got {h.hexdigest()}); refusing it (deleted, the next run starts over)"
            )
    return {algorithm: h.hexdigest() for algorithm, h in hashes.items()}


def check_member_name(name: str, archive: Path | str) -> PurePosixPath:
    """Refuse absolute paths (POSIX or Windows drive) and '..' components in an archive member name."""
    path = PurePosixPath(name.replace("\\", "/"))
    drive = bool(path.parts) and path.parts[0].endswith(":")
    if path.is_absolute() or drive or ".." in path.parts:
        raise DataError(f"{archive}: refusing unsafe member path {name!r} (absolute or with '..')")
    return path


MAX_BYTES_ENV, MAX_MEMBERS_ENV, MAX_RATIO_ENV = (
    "DSAH_ARCHIVE_MAX_BYTES", "DSAH_ARCHIVE_MAX_MEMBERS", "DSAH_ARCHIVE_MAX_RATIO")
# Below this many bytes unpacked, a member (or a whole archive) may have any ratio: a tiny file of
# repeated bytes legitimately compresses 1000:1, and cannot fill a disk.
RATIO_FLOOR = 1 << 20
# A decompressor reads its archive ahead of what it has unpacked (gzip: 8 KiB in Python 3.11, 128 KiB
# since 3.12): the bytes of a tar read while one member streams out may belong to the next. Counted as
# part of the member, so a member is never refused for the read-ahead's sake.
_READ_AHEAD = 1 << 20
_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


class ArchiveLimitError(DataError):
    """An archive would unpack beyond a stated limit: a zip or tar bomb, or a limit too low for it."""


@dataclass(frozen=True)
class ArchiveLimits:
    """How far one archive may unpack: bytes in all, members (files and folders), and bytes unpacked per
    byte of archive, for the whole archive and for each member, once past RATIO_FLOOR.

    The defaults fit the real datasets with room to spare (COCO's train2014.zip: 13 GB in 82,783 files;
    NUS-WIDE: about 30 GB in 270,000; JPEGs compress about 1:1, text annotations 20:1 at most) and stop a
    bomb long before a disk fills. Environment variables, not params: they decide only whether an archive
    is unpacked, never what comes out, and extract() runs inside whichever stage first needs the data."""

    max_bytes: int = 64 << 30
    max_members: int = 2_000_000
    max_ratio: float = 200.0

    @classmethod
    def from_env(cls) -> ArchiveLimits:
        """The defaults, each replaced by its environment variable where set: DSAH_ARCHIVE_MAX_BYTES (bytes,
        or a number with KiB, MiB, GiB or TiB: 128GiB), DSAH_ARCHIVE_MAX_MEMBERS, DSAH_ARCHIVE_MAX_RATIO."""
        default = cls()
        return cls(_env_number(MAX_BYTES_ENV, default.max_bytes, size=True),
                   _env_number(MAX_MEMBERS_ENV, default.max_members),
                   _env_number(MAX_RATIO_ENV, default.max_ratio, ratio=True))


def _env_number(name: str, default, size: bool = False, ratio: bool = False):
    value = os.environ.get(name, "").strip().replace("_", "").replace(",", "")
    if not value:
        return default
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", value)
    unit = match[2].upper() if match else None
    if match is None or (unit and not size) or unit not in _UNITS or (not ratio and not size and "." in match[1]):
        kind = ("a size in bytes, or a number with KiB, MiB, GiB or TiB (128GiB)" if size
                else "a number (200)" if ratio else "a whole number (2000000)")
        raise ConfigError(f"{name}={os.environ[name]!r} is not {kind}")
    number = float(match[1]) * _UNITS[unit] if size else float(match[1])
    if number <= 0:
        raise ConfigError(f"{name}={os.environ[name]!r} must be above 0")
    return number if ratio else int(number)


def _binary(n: float) -> str:
    """Bytes in binary units, as the size limit is set: 68_719_476_736 -> '64.0 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class _Unpacking:
    """One archive's running totals against the limits: the sizes its headers declare, checked before a
    member is read (a fast refusal), and the bytes actually unpacked, checked before each block is
    written (a header can lie)."""

    def __init__(self, archive: Path, limits: ArchiveLimits | None):
        self.archive, self.limits = archive, limits or ArchiveLimits.from_env()
        self.size = max(os.path.getsize(archive), 1)
        self.members = self.declared = self.written = 0

    def _refuse(self, subject: str, observed: str, allowed: str, env: str) -> ArchiveLimitError:
        return ArchiveLimitError(
            f"{self.archive}: refusing to unpack it: {subject} is {observed}, over the limit of {allowed}; "
            f"set {env} higher to allow more (this looks like a zip or tar bomb, unless the limit is too low "
            "for this archive)")

    def _total(self, total: int, how: str) -> None:
        if total > self.limits.max_bytes:
            raise self._refuse(f"the unpacked size ({how})", f"over {_binary(total)} ({total:,} bytes)",
                               f"{_binary(self.limits.max_bytes)} ({self.limits.max_bytes:,} bytes)", MAX_BYTES_ENV)

    def _ratio(self, unpacked: int, packed: int, whose: str) -> None:
        packed = max(packed, 1)
        if unpacked > RATIO_FLOOR and unpacked > self.limits.max_ratio * packed:
            raise self._refuse(f"the compression ratio of {whose} ({_binary(unpacked)} from {_binary(packed)})",
                               f"{unpacked / packed:,.0f}:1", f"{self.limits.max_ratio:g}:1", MAX_RATIO_ENV)

    def declare(self, name: str, size: int, packed: int | None = None) -> None:
        """One more member, of `size` bytes by its header (`packed` compressed, where the archive says)."""
        self.members += 1
        if self.members > self.limits.max_members:
            raise self._refuse("its member count", f"at least {self.members:,}", f"{self.limits.max_members:,}",
                               MAX_MEMBERS_ENV)
        if packed is not None:
            self._ratio(size, packed, f"member {name!r}, as its header declares")
        self.declared += size
        self._total(self.declared, "as its headers declare")
        self._ratio(self.declared, self.size, "the whole archive, as its headers declare")

    def wrote(self, n: int, name: str, member: int, packed: int) -> None:
        """n more bytes of member `name` are about to be written: member bytes of it so far, from packed."""
        self.written += n
        self._ratio(member, packed, f"member {name!r}")
        self._total(self.written, "written")
        self._ratio(self.written, self.size, "the whole archive")


def _copy(source, out, unpacking: _Unpacking, name: str, packed: Callable[[], int]) -> int:
    """Stream a member out in blocks, each counted against the limits before it is written: a refused
    member stops within one block. Returns the bytes written."""
    written = 0
    while block := source.read(1 << 20):
        written += len(block)
        unpacking.wrote(len(block), name, written, packed())
        out.write(block)
    return written


def _tar_entries(archive: Path, unpacking: _Unpacking
                 ) -> Iterator[tuple[PurePosixPath, tarfile.TarFile, tarfile.TarInfo, Callable[[], int]]]:
    """tar_members, each also with how far into the archive file its decompressor has read."""
    try:
        with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
            for member in tar:
                path = check_member_name(member.name, archive)
                unpacking.declare(member.name, member.size if member.isfile() else 0)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise DataError(f"{archive}: refusing member {member.name!r}: not a regular file")
                yield path, tar, member, raw.tell
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{archive}: cannot read the archive ({exc}); it is corrupt or truncated") from exc


def tar_members(archive: Path, limits: ArchiveLimits | None = None
                ) -> Iterator[tuple[PurePosixPath, tarfile.TarFile, tarfile.TarInfo]]:
    """Stream the regular files of a tar archive, refusing unsafe members (links, devices, bad paths) and,
    by their headers (a tar member holds exactly the bytes its header states), an archive beyond the
    limits (ArchiveLimits.from_env() unless given) before the member that crosses one is read."""
    with closing(_tar_entries(archive, _Unpacking(archive, limits))) as entries:  # the file closes with this
        for path, tar, member, _ in entries:
            yield path, tar, member


def read_zip_members(archive: Path, names: Sequence[str], limits: ArchiveLimits | None = None) -> list[bytes]:
    """The named members of a zip, read into memory under the same limits as extract(): a member whose
    header declares too much is refused before it is read, and one that unpacks to more than that stops
    within a block. A missing name raises KeyError, a broken archive zipfile.BadZipFile."""
    unpacking = _Unpacking(archive, limits)
    with zipfile.ZipFile(archive) as zf:
        infos = [zf.getinfo(name) for name in names]
        for info in infos:
            unpacking.declare(info.filename, info.file_size, info.compress_size)
        out = []
        for info in infos:
            data = io.BytesIO()
            with zf.open(info) as source:
                _copy(source, data, unpacking, info.filename, lambda size=info.compress_size: size)
            out.append(data.getvalue())
    return out


def extract(archive: Path, dest: Path, limits: ArchiveLimits | None = None) -> Path:
    """Unpack a .tar(.gz/.xz) or .zip archive into dest (added to what it holds), refusing unsafe members
    and archives beyond the limits (ArchiveLimits.from_env() unless given); returns dest.

    It unpacks into a hidden folder beside dest, moved into dest only once whole (renames, on one disk),
    and deleted otherwise: a refused or broken archive leaves nothing in dest, and no partial file."""
    unpacking = _Unpacking(archive, limits)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".unpacking", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive):
            _unzip(archive, work, unpacking)
        else:
            _untar(archive, work, unpacking)
        _merge(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _untar(archive: Path, work: Path, unpacking: _Unpacking) -> None:
    """Each member checked as its header comes, then streamed out, its ratio measured on the compressed
    bytes read meanwhile (a tar declares none)."""
    with closing(_tar_entries(archive, unpacking)) as entries:
        for path, tar, member, position in entries:
            source = tar.extractfile(member)
            assert source is not None  # regular files always have a payload
            target = work.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            start = position()
            try:
                with open(target, "wb") as out:
                    _copy(source, out, unpacking, member.name, lambda: position() - start + _READ_AHEAD)
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
                raise DataError(f"{archive}: cannot read member {member.name!r} ({exc}); the archive is "
                                "corrupt or truncated") from exc


def _unzip(archive: Path, work: Path, unpacking: _Unpacking) -> None:
    """Every member checked (name, type, declared sizes) before any is written, then each streamed out."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                check_member_name(info.filename, archive)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DataError(f"{archive}: refusing member {info.filename!r}: a symbolic link")
                unpacking.declare(info.filename, info.file_size, info.compress_size)
            for info in infos:
                target = work.joinpath(*check_member_name(info.filename, archive).parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, open(target, "wb") as out:
                    written = _copy(source, out, unpacking, info.filename, lambda size=info.compress_size: size)
                if written != info.file_size:
                    raise DataError(f"{archive}: member {info.filename!r} unpacks to {written:,} bytes but its "
                                    f"header records {info.file_size:,}; the archive is corrupt")
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DataError(f"{archive}: cannot read the archive ({exc}); it is corrupt, truncated or "
                        "uses a compression this Python cannot read") from exc


def _merge(work: Path, dest: Path) -> None:
    """Move what work holds into dest, folder by folder: what two archives share (a top folder) merges,
    a file of the same name is replaced."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in work.iterdir():
        target = dest / entry.name
        if entry.is_dir() and target.is_dir():
            _merge(entry, target)
        else:
            os.replace(entry, target)
