"""Finding, downloading (from a real loopback HTTP server), verifying and unpacking sources."""

import fcntl
import hashlib
import http.server
import io
import os
import re
import shutil
import tarfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from fixtures import add_bytes, make_cifar_jpg_archive

from dsah.data import checksums
from dsah.data.archives import ArchiveLimitError, ArchiveLimits, extract, read_zip_members, tar_members
from dsah.data.checksums import RemoteFile
from dsah.data.downloads import announce, fetch
from dsah.data.sources import Source, fingerprint, locate, obtain
from dsah.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _no_real_homes(isolated_homes):
    """Every test here: no DSAH_DATA_HOME, and a download and checksum cache of its own."""


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (an ephemeral port) for the duration of a test."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.files (path -> bytes), honouring `Range: bytes=N-` (206 + Content-Range, 416 past
    the end), records each request's Range header in server.ranges, and cuts the connection after
    server.cuts[0] body bytes (one entry per response, while any are left)."""

    def do_GET(self):
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        asked = self.headers.get("Range")
        self.server.ranges.append(asked)
        start = int(re.fullmatch(r"bytes=(\d+)-", asked)[1]) if asked else 0
        if start >= len(body) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.server.cuts:
            payload = payload[:self.server.cuts.pop(0)]
            self.close_connection = True
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def range_server():
    """A loopback server that resumes (RangeHandler); yields (server, base url)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    server.files, server.ranges, server.cuts = {}, [], []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


PAYLOAD = bytes(range(256)) * 12  # 3,072 bytes


def served(server, url, name="big.bin", data=PAYLOAD, **checksums):
    server.files[f"/{name}"] = data
    return RemoteFile(name, f"{url}/{name}", md5=hashlib.md5(data).hexdigest(), **checksums)


def test_download_cut_midway_keeps_the_part_and_the_next_call_resumes_it(range_server, tmp_path):
    server, url = range_server
    remote = served(server, url)
    server.cuts = [1000]
    with pytest.raises(DataError, match=r"big.bin failed.*kept in .*big.bin.part and the next run resumes"):
        fetch(remote, tmp_path, attempts=1)
    assert (tmp_path / "big.bin.part").read_bytes() == PAYLOAD[:1000]
    assert not (tmp_path / "big.bin").exists()  # never under the final name before it is verified

    lines = []
    path = fetch(remote, tmp_path, log=lines.append)
    assert server.ranges == [None, "bytes=1000-"]  # only the rest was asked for
    assert path == tmp_path / "big.bin" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "big.bin.part").exists()
    assert re.search(r"downloading big.bin \(3.1 kB, resuming at 1.0 kB\) from .* into .*; [\d.]+ [kMGT]?B free",
                     lines[0])


def test_a_body_cut_twice_completes_within_one_call(range_server, tmp_path):
    server, url = range_server
    remote = served(server, url)
    server.cuts = [700, 900]
    lines = []
    assert fetch(remote, tmp_path, attempts=3, delay=0, log=lines.append).read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=700-", "bytes=1600-"]
    assert sum("broke" in line for line in lines) == 2


def test_every_attempt_failing_keeps_the_part(range_server, tmp_path):
    server, url = range_server
    remote = served(server, url)
    server.cuts = [500, 500, 500]
    with pytest.raises(DataError, match="failed after 3 attempts.*1.5 kB received are kept"):
        fetch(remote, tmp_path, attempts=3, delay=0, log=lambda line: None)
    assert (tmp_path / "big.bin.part").read_bytes() == PAYLOAD[:1500]


def test_a_server_that_ignores_range_restarts_a_stale_part_from_zero(http_root, tmp_path):
    root, url = http_root  # SimpleHTTPRequestHandler: always 200 and the whole file
    (root / "a.bin").write_bytes(PAYLOAD)
    (tmp_path / "a.bin.part").write_bytes(b"stale bytes from some other file")
    lines = []
    path = fetch(RemoteFile("a.bin", f"{url}/a.bin", md5=hashlib.md5(PAYLOAD).hexdigest()), tmp_path,
                 log=lines.append)
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "a.bin.part").exists()
    assert "starting over: the server does not resume" in lines[0]


def test_a_part_holding_the_whole_file_is_verified_and_renamed(range_server, tmp_path):
    server, url = range_server
    remote = served(server, url)
    (tmp_path / "big.bin.part").write_bytes(PAYLOAD)  # a run stopped between receiving and renaming
    assert fetch(remote, tmp_path, log=lambda line: None).read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]  # answered 416: nothing more to send


def test_a_downloaded_file_is_not_hashed_again_when_next_found(range_server, isolated_homes, monkeypatch):
    server, url = range_server
    remote = served(server, url, "c.tar.gz")
    obtain(locate("c", ["c.tar.gz"], remotes=[remote], download=True))
    hashed = []
    monkeypatch.setattr(checksums, "file_digest", lambda path, algorithm: hashed.append(path))
    assert locate("c", ["c.tar.gz"], remotes=[remote], download=True).origin == "cache"  # verified...
    assert hashed == []  # ...from the checksums the download computed


def test_a_second_run_waits_for_the_first_and_uses_its_file(range_server, tmp_path):
    server, url = range_server
    remote = served(server, url)
    waiting = threading.Event()
    with open(tmp_path / ".big.bin.lock", "a") as lock, ThreadPoolExecutor(1) as pool:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first run, receiving
        second = pool.submit(fetch, remote, tmp_path, log=lambda line: "waiting" in line and waiting.set())
        assert waiting.wait(30)
        (tmp_path / "big.bin").write_bytes(PAYLOAD)  # the first run's verified file
        fcntl.flock(lock, fcntl.LOCK_UN)
        assert second.result(30) == tmp_path / "big.bin"
    assert server.ranges == []  # nothing downloaded twice


def test_a_resumed_download_that_does_not_match_its_checksum_is_refused(range_server, tmp_path):
    server, url = range_server
    remote = served(server, url)
    server.cuts = [1000]
    with pytest.raises(DataError, match="kept in"):
        fetch(remote, tmp_path, attempts=1, log=lambda line: None)
    server.files["/big.bin"] = PAYLOAD[::-1]  # the file changed on the server between the runs
    with pytest.raises(DataError, match="md5 checksum mismatch.*refusing it"):
        fetch(remote, tmp_path, log=lambda line: None)
    assert server.ranges == [None, "bytes=1000-"]
    assert [p.name for p in tmp_path.iterdir()] == [".big.bin.lock"]  # the part is gone: the next run starts over


def test_announce_states_the_total_and_refuses_what_does_not_fit(range_server, tmp_path, isolated_homes):
    server, url = range_server
    (tmp_path / "one.bin.part").write_bytes(b"x" * 500)
    (tmp_path / "done.bin").write_bytes(b"finished")
    lines = []
    announce([RemoteFile("one.bin", f"{url}/one.bin", size=2000), RemoteFile("two.bin", f"{url}/two.bin", size=3000),
              RemoteFile("done.bin", f"{url}/done.bin", size=8), RemoteFile("three.bin", f"{url}/three.bin")],
             tmp_path, lines.append)
    [line] = lines
    assert "one.bin (2.0 kB, 500 B already here), two.bin (3.0 kB), three.bin (size unknown)" in line
    assert "4.5 kB in all plus 1 file(s) of unknown size" in line and "done.bin" not in line
    assert re.search(r"; [\d.]+ [kMGT]?B free there$", line)

    huge = RemoteFile("huge.zip", f"{url}/huge.zip", md5="0" * 32, size=10**18)
    assert shutil.disk_usage(tmp_path).free < 10**18
    with pytest.raises(DataError, match=r"huge.zip needs 1000000.0 TB in .* but only .* is free there"):
        announce([huge], tmp_path, lines.append)
    # obtain() announces all of a source's files before fetching any: nothing was requested.
    with pytest.raises(DataError, match="is free there"):
        obtain(Source(tmp_path / "unpacked", "download", (served(server, url), huge), unpack=True))
    assert server.ranges == []


def test_download_verifies_checksum_and_extracts(http_root, tmp_path, isolated_homes):
    root, url = http_root
    archive = make_cifar_jpg_archive(root / "cifar-tiny.tar.gz", 2, 1)
    remote = RemoteFile("cifar-tiny.tar.gz", f"{url}/cifar-tiny.tar.gz", md5=md5(archive))

    pending = locate("tiny", ["cifar-tiny.tar.gz"], remotes=[remote], download=True)
    assert pending.origin == "download" and not pending.path.exists()  # locating never downloads
    source = obtain(pending)

    assert source.path == isolated_homes / "cache" / "downloads" / "cifar-tiny.tar.gz"
    assert hashlib.sha256(source.path.read_bytes()).digest() == hashlib.sha256(archive.read_bytes()).digest()
    # Pending or fetched, an official file is named by its published checksum: the same fingerprint.
    assert pending.fingerprint() == source.fingerprint() == {
        "name": "cifar-tiny.tar.gz", "published": [{"name": "cifar-tiny.tar.gz", "md5": md5(archive)}]}
    out = extract(source.path, tmp_path / "out")
    assert sorted(p.name for p in (out / "train" / "cat").iterdir()) == ["0000.jpg", "0001.jpg"]
    assert len(list(out.rglob("*.jpg"))) == 30
    # The second lookup finds the verified copy in the cache instead of downloading again.
    (root / "cifar-tiny.tar.gz").unlink()
    assert locate("tiny", ["x"], remotes=[remote], download=True).origin == "cache"


def test_download_with_wrong_checksum_is_refused_and_leaves_nothing(http_root, tmp_path):
    root, url = http_root
    make_cifar_jpg_archive(root / "a.tar.gz", 1, 1)
    remote = RemoteFile("a.tar.gz", f"{url}/a.tar.gz", md5="0" * 32)
    with pytest.raises(DataError, match="md5 checksum mismatch"):
        fetch(remote, tmp_path / "downloads")
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == [".a.tar.gz.lock"]  # empty; no data


def test_download_failure_names_the_url(http_root, tmp_path):
    _, url = http_root
    with pytest.raises(DataError, match="missing.tar.gz failed"):
        fetch(RemoteFile("missing.tar.gz", f"{url}/missing.tar.gz", md5="0" * 32), tmp_path)


def test_local_copy_named_like_official_archive_must_match_its_checksum(tmp_path, isolated_homes, monkeypatch):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "official.tar.gz").write_bytes(b"not the real thing")
    monkeypatch.setenv("DSAH_DATA_HOME", str(tmp_path / "home"))
    remote = RemoteFile("official.tar.gz", "http://127.0.0.1:9/official.tar.gz", md5="0" * 32)
    with pytest.raises(DataError, match="checksum mismatch"):
        locate("x", ["official.tar.gz"], remotes=[remote])


def test_missing_data_says_what_was_looked_for_and_how_to_provide_it(isolated_homes):
    remote = RemoteFile("cifar-10-python.tar.gz", "https://example.invalid/c.tar.gz", md5="0" * 32)
    with pytest.raises(DataError) as error:
        locate("CIFAR-10", ["cifar-10-python.tar.gz", "cifar10-jpg.tar.xz"], remotes=[remote], download=False)
    message = str(error.value)
    assert "cifar10-jpg.tar.xz" in message and "DSAH_DATA_HOME (not set)" in message
    assert "prepare.download: true" in message and "https://example.invalid/c.tar.gz" in message


def test_explicit_path_that_does_not_exist(isolated_homes):
    with pytest.raises(DataError, match="does not exist: /nowhere/x.tar"):
        locate("x", ["x.tar"], explicit="/nowhere/x.tar")


def test_data_home_is_searched_in_order(tmp_path, isolated_homes, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "second.tsv").write_text("b")
    monkeypatch.setenv("DSAH_DATA_HOME", str(home))
    assert locate("x", ["first.tsv", "second.tsv"]).path == home / "second.tsv"
    (home / "first.tsv").write_text("a")
    found = locate("x", ["first.tsv", "second.tsv"])
    assert found.path == home / "first.tsv" and found.origin == "DSAH_DATA_HOME"
    assert found.fingerprint() == {"name": "first.tsv", "sha256": hashlib.sha256(b"a").hexdigest()}


def unsafe_tar(path, name, kind=tarfile.REGTYPE):
    with tarfile.open(path, "w") as tar:
        add_bytes(tar, "train/cat/ok.jpg", b"x")
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


@pytest.mark.parametrize("name, kind, message", [
    ("/etc/evil", tarfile.REGTYPE, "unsafe member path '/etc/evil'"),
    ("train/../../evil", tarfile.REGTYPE, "unsafe member path 'train/../../evil'"),
    ("C:/evil", tarfile.REGTYPE, "unsafe member path 'C:/evil'"),
    ("train/link", tarfile.SYMTYPE, "not a regular file"),
])
def test_unsafe_tar_members_are_refused(tmp_path, name, kind, message):
    archive = unsafe_tar(tmp_path / "bad.tar", name, kind)
    with pytest.raises(DataError, match=message):
        extract(archive, tmp_path / "out")
    with pytest.raises(DataError, match=message):
        list(tar_members(archive))
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_unsafe_zip_members_are_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "x")
        zf.writestr("../evil.txt", "x")
    with pytest.raises(DataError, match="unsafe member path '../evil.txt'"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


ZEROS = bytes(5 << 20)  # 5 MiB that compress to about 5 KiB: a small bomb


def zip_of(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def tar_of(path, members):
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            add_bytes(tar, name, data)
    return path


def left_beside(dest):
    """What an extraction into dest left in its folder, beside the archives."""
    return sorted(p.name for p in dest.parent.iterdir() if not p.name.endswith((".zip", ".tar.gz")))


@pytest.mark.parametrize("make", [zip_of, tar_of], ids=["zip", "tar.gz"])
@pytest.mark.parametrize("limits, message", [
    (ArchiveLimits(), r"compression ratio of (member .zeros.bin.|the whole archive).* is [\d,]{3,5}:1, "
                      r"over the limit of 200:1; set DSAH_ARCHIVE_MAX_RATIO"),
    (ArchiveLimits(max_bytes=1 << 20, max_ratio=10_000),
     r"unpacked size .* is over 5.0 MiB \(5,24\d,\d+ bytes\), over the limit of 1.0 MiB \(1,048,576 bytes\); "
     r"set DSAH_ARCHIVE_MAX_BYTES higher"),
], ids=["ratio", "size"])
def test_a_bomb_is_refused_by_its_declared_sizes_and_leaves_nothing(tmp_path, make, limits, message):
    archive = make(tmp_path / f"bomb.{'zip' if make is zip_of else 'tar.gz'}", {"ok.txt": b"x", "zeros.bin": ZEROS})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.txt").write_text("there before")
    with pytest.raises(ArchiveLimitError, match=message):
        extract(archive, tmp_path / "out", limits)
    assert left_beside(tmp_path / "out") == ["out"]  # no work folder left beside it...
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["kept.txt"]  # ...and nothing added to it


def test_a_bomb_member_in_a_plausible_tar_is_caught_while_it_is_written(tmp_path):
    """Its header states the true size and the archive as a whole is not suspicious (7 MiB from 3 MiB):
    only the compressed bytes the member actually takes, counted as it streams out, give it away."""
    archive = tar_of(tmp_path / "a.tar.gz", {"noise.bin": os.urandom(3 << 20), "zeros.bin": bytes(4 << 20)})
    limits = ArchiveLimits(max_ratio=2.5)
    assert len(list(tar_members(archive, limits))) == 2  # the headers alone pass
    with pytest.raises(ArchiveLimitError, match=r"compression ratio of member 'zeros.bin' .* over the limit of 2.5:1"):
        extract(archive, tmp_path / "out", limits)
    assert left_beside(tmp_path / "out") == []


@pytest.mark.parametrize("make", [zip_of, tar_of], ids=["zip", "tar.gz"])
def test_too_many_members_are_refused(tmp_path, make):
    archive = make(tmp_path / f"many.{'zip' if make is zip_of else 'tar.gz'}", {f"f{i}.txt": b"x" for i in range(11)})
    with pytest.raises(ArchiveLimitError, match=r"member count is at least 11, over the limit of 10; "
                                                r"set DSAH_ARCHIVE_MAX_MEMBERS higher"):
        extract(archive, tmp_path / "out", ArchiveLimits(max_members=10))
    assert left_beside(tmp_path / "out") == []
    assert len(list(extract(archive, tmp_path / "out", ArchiveLimits(max_members=11)).iterdir())) == 11


def test_a_zip_whose_central_directory_understates_a_size_is_refused(tmp_path):
    """The header says 1,000 bytes (passing every declared check); the member holds 5 MiB. What is read
    is counted, never more than the header says is written, and the mismatch refuses the archive."""
    archive = zip_of(tmp_path / "liar.zip", {"zeros.bin": ZEROS})
    data = bytearray(archive.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the central directory record; file_size at offset 24
    assert int.from_bytes(data[entry + 24:entry + 28], "little") == len(ZEROS)
    data[entry + 24:entry + 28] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    assert zipfile.ZipFile(archive).getinfo("zeros.bin").file_size == 1000
    with pytest.raises(DataError, match="liar.zip: cannot read the archive .*zeros.bin.*corrupt"):
        extract(archive, tmp_path / "out")
    with pytest.raises(zipfile.BadZipFile):
        read_zip_members(archive, ["zeros.bin"])
    assert left_beside(tmp_path / "out") == []


def test_archives_within_the_limits_unpack_into_one_folder(tmp_path):
    """COCO's two image zips unpack into one folder: what they share (a top folder) merges."""
    first = zip_of(tmp_path / "a.zip", {"coco/train2014/1.jpg": b"one", "coco/readme.txt": b"a"})
    second = tar_of(tmp_path / "b.tar.gz", {"coco/val2014/2.jpg": b"two", "coco/readme.txt": b"b"})
    limits = ArchiveLimits(max_bytes=10, max_members=3, max_ratio=1.0)  # tiny archives: no ratio applies
    out = extract(second, extract(first, tmp_path / "out", limits), limits)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "coco/readme.txt", "coco/train2014/1.jpg", "coco/val2014/2.jpg"]
    assert (out / "coco" / "readme.txt").read_bytes() == b"b" and left_beside(out) == ["out"]


def test_members_read_into_memory_are_held_to_the_limits(tmp_path):
    archive = zip_of(tmp_path / "a.zip", {"small.json": b"{}", "zeros.bin": ZEROS})
    assert read_zip_members(archive, ["small.json"]) == [b"{}"]
    with pytest.raises(ArchiveLimitError, match="member 'zeros.bin', as its header declares"):
        read_zip_members(archive, ["small.json", "zeros.bin"])
    with pytest.raises(ArchiveLimitError, match="unpacked size"):
        read_zip_members(archive, ["zeros.bin"], ArchiveLimits(max_bytes=1 << 20, max_ratio=10_000))


def test_limits_come_from_the_environment(monkeypatch):
    assert ArchiveLimits.from_env() == ArchiveLimits(64 << 30, 2_000_000, 200.0)
    monkeypatch.setenv("DSAH_ARCHIVE_MAX_BYTES", "128GiB")
    monkeypatch.setenv("DSAH_ARCHIVE_MAX_MEMBERS", "3_000_000")
    monkeypatch.setenv("DSAH_ARCHIVE_MAX_RATIO", "500")
    assert ArchiveLimits.from_env() == ArchiveLimits(128 << 30, 3_000_000, 500.0)
    monkeypatch.setenv("DSAH_ARCHIVE_MAX_BYTES", "1000000")
    assert ArchiveLimits.from_env().max_bytes == 1_000_000
    for name, value in (("DSAH_ARCHIVE_MAX_BYTES", "lots"), ("DSAH_ARCHIVE_MAX_BYTES", "12GB"),
                        ("DSAH_ARCHIVE_MAX_MEMBERS", "1.5"), ("DSAH_ARCHIVE_MAX_RATIO", "0")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=f"{name}='{re.escape(value)}'"):
            ArchiveLimits.from_env()
        monkeypatch.delenv(name)


def test_extract_applies_the_limits_set_in_the_environment(tmp_path, monkeypatch):
    archive = zip_of(tmp_path / "a.zip", {f"f{i}.txt": b"x" for i in range(3)})
    monkeypatch.setenv("DSAH_ARCHIVE_MAX_MEMBERS", "2")
    with pytest.raises(ArchiveLimitError, match="DSAH_ARCHIVE_MAX_MEMBERS"):
        extract(archive, tmp_path / "out")
    monkeypatch.setenv("DSAH_ARCHIVE_MAX_MEMBERS", "3")
    assert len(list(extract(archive, tmp_path / "out").iterdir())) == 3


def test_truncated_archive_is_reported(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 3, 1)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        list(tar_members(archive))


def test_fingerprints_name_content_not_paths_and_are_hashed_once(tmp_path, isolated_homes, monkeypatch):
    """The same bytes at two paths fingerprint the same; a changed file or folder does not; checksums
    are cached per file version, so an unchanged large source is not read again."""
    for place in ("a", "b"):
        (tmp_path / place / "images" / "cat").mkdir(parents=True)
        (tmp_path / place / "images" / "cat" / "1.jpg").write_bytes(b"pixels")
        (tmp_path / place / "labels.tsv").write_text("image\tlabels\n")
    hashed = []
    real_digest = checksums.file_digest
    monkeypatch.setattr(checksums, "file_digest",
                        lambda path, algorithm: hashed.append(path) or real_digest(path, algorithm))

    def both(place):
        return fingerprint({"labels": Source(tmp_path / place / "labels.tsv", "params"),
                            "images": Source(tmp_path / place / "images", "params"), "extra": None})

    a, b = both("a"), both("b")
    assert a == b and a["extra"] == {"absent": True} and a["images"]["files"] == 1
    assert len(hashed) == 4 and both("a") == a and len(hashed) == 4  # the second time, nothing is read
    (tmp_path / "b" / "images" / "cat" / "2.jpg").write_bytes(b"more")
    assert Source(tmp_path / "b" / "images", "params").fingerprint() != a["images"]
    (tmp_path / "a" / "labels.tsv").write_text("image\tlabels\nx\t1\n")
    assert Source(tmp_path / "a" / "labels.tsv", "params").fingerprint() != a["labels"]
    assert len(hashed) == 6  # only the two new versions were read

