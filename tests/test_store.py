"""The image store: one decoding policy (dsah.data.imaging) and the resumable, parallel build of a folder's
store (dsah.data.build), on real pixels."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from fixtures import cifar_sample, make_nuswide_layout
from PIL import Image

from dsah.data.build import LOG, build_from_folder, chunk_size
from dsah.data.imaging import decode_square
from dsah.data.loading import ImageRows
from dsah.errors import DataError


@pytest.fixture(scope="module")
def photo(shared_data) -> np.ndarray:
    """A 96 x 64 RGB photo of real pixels: six CIFAR-10 images, 3 wide and 2 high."""
    images, _ = cifar_sample(shared_data / "cifar10-jpg.tar.xz", 6, seed=1)
    return np.concatenate([np.concatenate(images[:3], axis=1), np.concatenate(images[3:], axis=1)], axis=0)


def encoded(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def test_a_wide_photo_is_its_centre_square_resized(photo):
    square = decode_square(encoded(Image.fromarray(photo)), 64)
    assert square.shape == (64, 64, 3) and square.dtype == np.uint8
    # The centre 64 x 64 of the 96 x 64 photo, at its own size: no resampling at all.
    assert np.array_equal(square, photo[:, 16:80])
    small = decode_square(encoded(Image.fromarray(photo)), 32)
    expected = np.asarray(Image.fromarray(photo[:, 16:80]).resize((32, 32), Image.Resampling.BILINEAR))
    # The same inside; at the edges the resize also weighs the pixels just outside the square.
    assert np.abs(small.astype(int) - expected)[1:-1, 1:-1].max() <= 1


def test_exif_orientation_is_applied(photo):
    upright = decode_square(encoded(Image.fromarray(photo)), 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90 degrees clockwise
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(photo, 1)))  # 64 wide, 96 high
    turned = decode_square(encoded(stored, exif=exif.tobytes()), 64)
    assert np.array_equal(turned, upright)


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16", "1"])
def test_every_mode_becomes_8_bit_rgb(photo, mode):
    base = Image.fromarray(photo[:, :64])
    if mode == "I;16":  # a 16-bit grayscale PNG: its top byte is the 8-bit value
        gray = np.asarray(base.convert("L")).astype(np.uint16)
        image, want = Image.fromarray(gray * 257), np.repeat(gray[..., None], 3, axis=2)
    elif mode == "RGBA":  # half transparent: composited over white
        rgba = np.dstack([photo[:, :64], np.full((64, 64), 128, np.uint8)])
        image = Image.fromarray(rgba, "RGBA")
        want = np.asarray(Image.alpha_composite(Image.new("RGBA", (64, 64), (255, 255, 255, 255)), image).convert("RGB"))
    else:
        image = base.convert(mode)
        want = np.asarray(image.convert("RGB"))
    got = decode_square(encoded(image, "TIFF" if mode == "CMYK" else "PNG"), 64)
    assert got.shape == (64, 64, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want).max() <= 1, mode


def test_jpeg_draft_decoding_stays_close_to_a_full_decode(photo):
    big = Image.fromarray(photo).resize((960, 640), Image.Resampling.NEAREST)  # blocky: sharp edges
    data = encoded(big, "JPEG", quality=95)
    fast = decode_square(data, 64).astype(float)
    with Image.open(io.BytesIO(data)) as full:  # no draft: decode every pixel, then the same resize
        full.load()
        reference = np.asarray(full.crop((160, 0, 800, 640)).resize((64, 64), Image.Resampling.BILINEAR))
    assert np.abs(fast - reference).mean() < 6  # 0..255 scale; the difference of a 1/8-scale DCT


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    truncated = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)), "JPEG")
    (tmp_path / "cut.jpg").write_bytes(truncated[: len(truncated) // 3])
    for name in ("text.jpg", "cut.jpg", "missing.jpg"):
        with pytest.raises(DataError, match=name):
            decode_square(tmp_path / name, 32)


def test_image_rows_read_in_split_order_and_as_nchw(tmp_path):
    store = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    rows = ImageRows(store, np.array([5, 0, 3]))
    assert len(rows) == 3 and rows.shape == (3, 3, 4, 4)
    assert torch.equal(rows[np.array([2, 0])], torch.from_numpy(store[[3, 5]]).permute(0, 3, 1, 2))
    assert torch.equal(rows[torch.tensor([1])], torch.from_numpy(store[[0]]).permute(0, 3, 1, 2))
    assert torch.equal(rows[1:3], torch.from_numpy(store[[0, 3]]).permute(0, 3, 1, 2))
    assert rows[0:3].is_contiguous(memory_format=torch.channels_last)


@pytest.fixture(scope="module")
def nuswide(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("nuswide")
    layout = make_nuswide_layout(root, shared_data / "cifar10-jpg.tar.xz", count=60, missing=2, corrupt=1, seed=2,
                                 size=96)
    refs = [line.strip().replace("\\", "/") for line in (root / "ImageList" / "Imagelist.txt").read_text().split("\n")
            if line.strip()]
    return root, [f"Flickr/{r}" for r in refs], layout


def test_a_folder_store_holds_each_image_in_its_row_and_lists_what_it_skipped(nuswide, tmp_path):
    root, refs, layout = nuswide
    store_path, skips = build_from_folder(root, refs, 48, tmp_path / "work", workers=2, max_skipped=3, progress=False)
    store = np.load(store_path)
    assert store.shape == (60, 48, 48, 3)
    unreadable = set(layout["missing"]) | set(layout["corrupt"])
    assert {refs[s.row] for s in skips} == unreadable
    assert any("no such image file" in s.reason for s in skips)
    for row in (0, 17, 59):
        if refs[row] not in unreadable:
            assert np.array_equal(store[row], decode_square(root / refs[row], 48))
    assert not store[[s.row for s in skips]].any()  # skipped rows stay black


def test_unreadable_images_beyond_the_limit_are_an_error_that_names_them(nuswide, tmp_path):
    root, refs, layout = nuswide
    with pytest.raises(DataError, match=r"missing or unreadable \(\d found, more than images.max_skipped: 0\), "
                                        r"e.g. Flickr/.*: no such image file"):
        build_from_folder(root, refs, 48, tmp_path / "work", workers=2, max_skipped=0, progress=False)


def test_a_killed_build_resumes_where_it_stopped_and_gives_the_same_store(nuswide, tmp_path):
    """A real kill (SIGKILL of the building process and its workers) once chunks are recorded; the next
    build decodes only the rest and ends with the store an uninterrupted build gives, byte for byte."""
    root, refs, _ = nuswide
    whole, _ = build_from_folder(root, refs, 48, tmp_path / "whole", workers=2, max_skipped=3, progress=False)
    work = tmp_path / "work"
    script = ("import sys; from pathlib import Path; from dsah.data.build import build_from_folder\n"
              f"build_from_folder(Path({str(root)!r}), {refs!r} * 40, 48, Path({str(work)!r}), workers=2, "
              "max_skipped=200, progress=False)")
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 120
    while not (work / LOG).is_file() or not (work / LOG).read_text().count("\n"):
        assert time.monotonic() < deadline and process.poll() is None, "the build never recorded a chunk"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = (work / LOG).read_text().count("\n")
    total = -(-len(refs) * 40 // chunk_size(len(refs) * 40, 2))
    assert 0 < done < total, "killed midway"
    messages = []
    resumed, skips = build_from_folder(root, refs * 40, 48, work, workers=2, max_skipped=200, progress=False,
                                       log=messages.append)
    assert messages and messages[0].startswith("images: resuming:")
    assert len(skips) == 3 * 40
    assert np.array_equal(np.load(resumed)[:60], np.load(whole))
    assert np.array_equal(np.load(resumed), np.tile(np.load(whole), (40, 1, 1, 1)))
    entries = [json.loads(line) for line in (work / LOG).read_text().splitlines()]
    rows = sorted(r for e in entries for r in range(e["start"], e["stop"]))
    assert rows == list(range(len(refs) * 40))  # every row decoded once, before or after the kill


def test_a_photo_folder_store_refuses_a_symbolic_link_out_of_the_folder_and_follows_one_inside(photo, tmp_path):
    """dataset folder: a link made after prepare (or never seen by it) is refused before any image is
    decoded, naming the file and where it leads; a link within the folder is read like its target."""
    import pandas as pd

    from dsah.data.build import build_images
    from dsah.data.table import write_table

    folder, outside = tmp_path / "photos", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    (folder / "a.png").write_bytes(encoded(Image.fromarray(photo)))
    (outside / "private.png").write_bytes(encoded(Image.fromarray(photo[:, ::-1].copy())))
    (folder / "same.png").symlink_to("a.png")
    refs = ["a.png", "same.png", "b.png"]
    table = pd.DataFrame({"id": refs, "split": ["query", "database", "database"], "validation": False,
                          "labels": ["1", "1", "1"], "image": refs, "store_index": range(3)})
    write_table(table, tmp_path / "split.csv")

    def build():
        return build_images("folder", None, tmp_path / "split.csv", table, folder, 32, tmp_path / "images",
                            tmp_path / "work", 0, "digest", progress=False)

    (folder / "b.png").symlink_to(outside / "private.png")
    with pytest.raises(DataError, match=r"photos: 1 image leads out of the photo folder through a symbolic link: "
                                        r"b.png -> .*elsewhere/private.png"):
        build()
    assert not (tmp_path / "images" / "images.npy").exists() and not (tmp_path / "work").exists()
    (folder / "b.png").unlink()
    (folder / "b.png").symlink_to("same.png")  # a chain of links within the folder
    assert build() == []
    store = np.load(tmp_path / "images" / "images.npy")
    assert np.array_equal(store[0], store[1]) and np.array_equal(store[0], store[2])


def test_the_store_build_checks_its_size_and_skip_limit_as_params_yaml_does(tmp_path):
    """build_images is called by the images stage and by tests and benchmarks with their own numbers: they
    get the params' own one-line refusal, before anything is read."""
    import pandas as pd

    from dsah.data.build import build_images
    from dsah.errors import ConfigError

    table = pd.DataFrame(columns=["image", "store_index"])
    for size, skipped, message in ((8, 0, "images.size.cifar10: 8 is out of range; allowed: an integer from 16 to 1024"),
                                   (32, -1, "images.max_skipped: -1 is out of range; allowed: an integer >= 0")):
        with pytest.raises(ConfigError, match=f"^{message}$"):
            build_images("cifar10", None, tmp_path / "split.csv", table, tmp_path, size, tmp_path / "out",
                         tmp_path / "work", skipped, "digest", progress=False)
    assert not (tmp_path / "out").exists()
