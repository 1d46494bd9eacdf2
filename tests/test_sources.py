"""Finding, downloading (from a real loopback HTTP server), verifying and unpacking sources."""

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from functools import partial

import pytest
from fixtures import add_bytes, make_cifar_jpg_archive

from dsah.data import sources
from dsah.data.sources import RemoteFile, Source, extract, fetch, fingerprint, locate, obtain, tar_members
from dsah.errors import DataError


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


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


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
    assert list((tmp_path / "downloads").iterdir()) == []


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
    real_digest = sources.file_digest
    monkeypatch.setattr(sources, "file_digest",
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

