"""Downloading official files: announced, resumable, verified.

Downloads resume: the bytes received so far are kept as <name>.part beside the final name (never under
it), a broken connection is tried again a few times, and each attempt, in this run or a later one, asks
the server only for the rest (an HTTP Range request; a server that ignores it sends the whole file, and
the part starts over). Two runs sharing the cache take turns (a lock file beside the part). Only a
complete file whose checksum matches is renamed to its final name; a mismatching one is deleted.
Before anything is downloaded, one line on stderr says what it takes (the published or served sizes,
what is already here, the free disk space), and a download that cannot fit is refused before it starts.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import http.client
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from dsah.errors import DataError
from dsah.data.checksums import CACHE_HOME_ENV, RemoteFile, remember_digests, verify


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
        remember_digests(dest, digests)
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
