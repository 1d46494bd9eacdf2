"""Reading and unpacking archives, which are untrusted input.

Members with absolute paths, '..' components, links or device files are refused before anything is read
or written, and so is an archive that would unpack beyond the limits (ArchiveLimits: unpacked size, member
count, compression ratio; zip and tar bombs), checked on the sizes its headers declare before anything is
written and again on the bytes actually written, as they come out. An archive is unpacked into a hidden
folder beside its destination and moved there only whole.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


from dsah.errors import ConfigError, DataError


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
