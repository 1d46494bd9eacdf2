"""CIFAR-10: the official python archive, or an image-folder copy `train|test/<class>/*.jpg`.

`prepare` reads ids and classes (an image folder's names say both) and checks that each file is whole (a
JPEG or PNG from its first bytes to its end marker: a truncated or foreign file is named there, before any
split is made of what is left); the `images` stage reads the pixels (`store_images`), checking that every
image decodes and is 32 x 32.
"""

from __future__ import annotations

import io
import pickle
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dsah.data.dataset import Prepared
from dsah.data.imaging import square
from dsah.data.protocols import CIFAR10_CLASSES, Protocol, subset_protocol
from dsah.data.archives import tar_members
from dsah.data.checksums import RemoteFile
from dsah.data.sources import Source, locate
from dsah.data.splits import choose_queries_per_class, choose_subset_per_class
from dsah.errors import DataError

# What torchvision downloads and checks (md5 published with the dataset).
REMOTE = RemoteFile(
    name="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    size=170_498_071,
)
# Looked for in $DSAH_DATA_HOME, in this order: the official archive, image-folder archives, a folder.
LOCAL_NAMES = ("cifar-10-python.tar.gz", "cifar10-jpg.tar.xz", "cifar10-jpg.tar.gz", "cifar10-jpg.tar",
               "cifar10")
PYTHON_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_MEMBER = re.compile(r"(?:^|/)(train|test)/([a-z_]+)/([^/]+)\.(?:jpe?g|png)$", re.IGNORECASE)


@dataclass
class Images:
    """Decoded images in a canonical order (sorted by id), with class indices."""

    ids: list[str]
    classes: np.ndarray  # (N,) int64 class index
    images: np.ndarray | None  # (N, 32, 32, 3) uint8, or None when only names were read
    refs: list[str]


def locate_cifar10(archive: str = "", download: bool = False) -> Source:
    return locate("CIFAR-10", LOCAL_NAMES, explicit=archive, remotes=[REMOTE], download=download)


def read_cifar10(path: Path, pixels: bool = True) -> Images:
    """Read CIFAR-10 from the official python archive, an image-folder archive or a folder; without
    `pixels`, an image folder's images are listed, not decoded."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        items = ((PurePosixPath(p.relative_to(path).as_posix()), p.read_bytes) for p in files)
        return _from_image_files(items, path, pixels)
    if path.name.endswith((".tar.gz", ".tgz")) and _is_python_archive(path):
        return _from_python_archive(path)
    items = ((name, _reader(tar, member, path)) for name, tar, member in tar_members(path))
    return _from_image_files(items, path, pixels)


def _reader(tar, member, archive: Path):
    def read() -> bytes:
        try:
            return tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:  # the archive ends inside the member
            raise DataError(f"{archive}: cannot read member {member.name} ({exc}); the archive is corrupt or "
                            "truncated") from exc
    return read


def _is_python_archive(path: Path) -> bool:
    for name, _, _ in tar_members(path):
        return name.parts[0] == "cifar-10-batches-py"
    return False


class _ArraysOnly(pickle.Unpickler):
    """The python archive is pickled: allow numpy array reconstruction and nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _from_python_archive(path: Path) -> Images:
    batches: dict[str, dict] = {}
    for name, tar, member in tar_members(path):
        if name.parts[-1] in PYTHON_BATCHES:
            try:
                batches[name.parts[-1]] = _ArraysOnly(tar.extractfile(member), encoding="bytes").load()
            except Exception as exc:  # any unpickling failure means a corrupt member
                raise DataError(f"{path}: member {name} is corrupt or not a CIFAR-10 batch ({exc})") from exc
    missing = [b for b in PYTHON_BATCHES if b not in batches]
    if missing:
        raise DataError(f"{path}: not a complete CIFAR-10 python archive, missing {', '.join(missing)}")
    ids, refs, classes, images = [], [], [], []
    for batch in PYTHON_BATCHES:
        data = batches[batch]
        pixels = np.asarray(data[b"data"], dtype=np.uint8)
        labels = np.asarray(data[b"labels"], dtype=np.int64)
        if pixels.ndim != 2 or pixels.shape[1] != 3072 or len(labels) != len(pixels):
            raise DataError(f"{path}: {batch} has data of shape {pixels.shape}, expected (N, 3072)")
        subset = "test" if batch == "test_batch" else "train"
        offset = 0 if subset == "test" else 10_000 * (int(batch[-1]) - 1)
        ids += [f"{subset}/{offset + i:05d}" for i in range(len(pixels))]
        refs += [f"{batch}:{i}" for i in range(len(pixels))]
        classes.append(labels)
        images.append(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    order = np.argsort(ids, kind="stable")
    return Images([ids[i] for i in order], np.concatenate(classes)[order],
                  np.ascontiguousarray(np.concatenate(images)[order]), [refs[i] for i in order])


def file_problem(data: bytes) -> str | None:
    """What is wrong with an image file's bytes, without decoding it (None: a whole JPEG or PNG). A JPEG is
    whole when its last scan is followed by the end-of-image marker (entropy-coded data cannot hold that
    marker's bytes), a PNG when it ends with its IEND chunk."""
    if not data:
        return "the file is empty"
    if data.startswith(b"\xff\xd8\xff"):
        if data.rfind(b"\xff\xd9") < max(data.rfind(b"\xff\xda"), 2):
            return f"truncated JPEG: its {len(data):,} bytes end before the end-of-image marker"
        return None
    if data.startswith(PNG_SIGNATURE):
        if b"IEND" not in data[-12:]:
            return f"truncated PNG: its {len(data):,} bytes end before the IEND chunk"
        return None
    return f"not a JPEG or PNG image (it starts with {data[:8]!r})"


def _from_image_files(items, origin: Path, pixels: bool = True) -> Images:
    records, broken = [], []
    for name, read in tqdm(items, desc="decode CIFAR-10" if pixels else "list CIFAR-10", unit="img",
                           mininterval=1.0):
        match = IMAGE_MEMBER.search(name.as_posix())
        if not match:
            continue
        subset, cls, stem = match.group(1).lower(), match.group(2).lower(), match.group(3)
        if cls not in CIFAR10_CLASSES:
            raise DataError(f"{origin}: {name} is in an unknown class folder {cls!r}")
        data = read()
        image = decode_image(data, f"{origin}:{name}", (32, 32)) if pixels else None
        problem = None if pixels else file_problem(data)
        if problem:
            broken.append(f"{name}: {problem}")
        records.append((f"{subset}/{cls}/{stem}", CIFAR10_CLASSES.index(cls), image, name.as_posix()))
    if broken:
        shown = "; ".join(broken[:3]) + (f"; and {len(broken) - 3} more" if len(broken) > 3 else "")
        raise DataError(f"{origin}: {len(broken)} image file{'s are' if len(broken) > 1 else ' is'} corrupt or "
                        f"truncated: {shown}. Replace {'them' if len(broken) > 1 else 'it'} (or the archive) with "
                        "a whole copy")
    if not records:
        raise DataError(f"{origin}: no train|test/<class>/*.jpg images found; not a CIFAR-10 copy")
    records.sort(key=lambda r: r[0])
    ids = [r[0] for r in records]
    if len(set(ids)) != len(ids):  # a member twice in a tar, or 0001.jpg beside 0001.png: which one is it?
        twice = sorted({a[3] + " and " + b[3] for a, b in zip(records, records[1:]) if a[0] == b[0]})
        shown = "; ".join(twice[:3]) + (f"; and {len(twice) - 3} more" if len(twice) > 3 else "")
        raise DataError(f"{origin}: {len(twice)} image{'s are' if len(twice) > 1 else ' is'} in the copy twice "
                        f"(one id, two files): {shown}; keep one of each")
    return Images(ids, np.array([r[1] for r in records], dtype=np.int64),
                  np.stack([r[2] for r in records]) if pixels else None, [r[3] for r in records])


def decode_image(data: bytes, name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode to (H, W, 3) uint8; a corrupt or truncated file is an error that names it."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes fully: truncated files fail here, not later
            rgb = np.asarray(img.convert("RGB"))
    except Exception as exc:  # PIL raises several types for bad data
        raise DataError(f"{name}: cannot decode image ({exc}); the file is corrupt or truncated") from exc
    if size is not None and rgb.shape[:2] != size:
        raise DataError(f"{name}: image is {rgb.shape[1]}x{rgb.shape[0]}, expected {size[1]}x{size[0]}")
    return rgb


def prepare_cifar10(protocol: Protocol, source: Source, split_seed: int, subset: int = 0) -> Prepared:
    """The ADSH protocol's split (100 queries per class); `subset`: a seeded subset of that many images, a tenth
    of each class, with queries per class in proportion (a protocol of its own, "cifar10-subset-N")."""
    data = read_cifar10(source.path, pixels=False)
    base, ids, classes, refs, notes = protocol, data.ids, data.classes, data.refs, []
    if subset:
        protocol = subset_protocol(base, subset)
        keep = choose_subset_per_class(ids, classes, subset // len(CIFAR10_CLASSES), split_seed)
        ids, classes, refs = [i for i, k in zip(ids, keep) if k], classes[keep], [r for r, k in zip(refs, keep) if k]
        notes.append(f"subset: {subset:,} of the {base.name} protocol's images (seeded by split_seed), "
                     f"{protocol.queries:,} queries; not the full protocol")
    counts = np.bincount(classes, minlength=len(CIFAR10_CLASSES))
    short = [f"{CIFAR10_CLASSES[c]} {counts[c]:,}" for c in range(len(CIFAR10_CLASSES))
             if counts[c] <= protocol.queries_per_class]
    if short:  # say which classes are short, and of what, rather than "queries of class 0: need 100 ..."
        raise DataError(f"{source.path}: too few images of {len(short)} class{'es' if len(short) > 1 else ''} "
                        f"({', '.join(short)}) for the {protocol.name} protocol, which takes "
                        f"{protocol.queries_per_class} queries from each class and keeps some for the database "
                        f"({len(data.ids):,} images in the copy; CIFAR-10 has 6,000 per class): an incomplete copy")
    query = choose_queries_per_class(ids, classes, protocol.queries_per_class, split_seed)
    labels = np.eye(len(CIFAR10_CLASSES), dtype=np.uint8)[classes]
    return Prepared(
        dataset="cifar10", protocol=protocol, classes=list(CIFAR10_CLASSES), ids=ids, labels=labels,
        query=query, image_refs=refs, notes=notes, base_protocol=base.name, subset=subset,
    )


def store_images(path: Path, refs: list[str], size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(row, size x size x 3 uint8) for each image reference of the split table (in store order),
    read from the source in one pass."""
    data = read_cifar10(path)
    row_of = {ref: row for row, ref in enumerate(refs)}
    for ref, pixels in zip(data.refs, data.images):
        if ref in row_of:
            yield row_of[ref], resized(pixels, size)


def resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """A decoded square image at the store's size (the imaging policy's resize; none at its own size)."""
    return pixels if pixels.shape[0] == size else np.asarray(square(Image.fromarray(pixels), size))
