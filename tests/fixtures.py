"""Builders of small source archives in the formats users hand to `prepare`."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from dsah.data.protocols import CIFAR10_CLASSES


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def class_image(rng: np.random.Generator, cls: int, size: int = 32) -> np.ndarray:
    """A flat colour per class plus a little noise: classes stay distinguishable after JPEG."""
    base = np.array([(cls * 25) % 256, (cls * 70) % 256, (255 - cls * 25) % 256], dtype=np.int16)
    noise = rng.integers(-8, 9, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_cifar_jpg_archive(path: Path, train_per_class: int, test_per_class: int, seed: int = 0,
                           prefix: str = "") -> Path:
    """An image-folder archive `train|test/<class>/NNNN.jpg` like ../shared/data/cifar10-jpg.tar.xz."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:xz" if path.name.endswith(".xz") else "w:gz") as tar:
        for subset, count in (("train", train_per_class), ("test", test_per_class)):
            for cls, name in enumerate(CIFAR10_CLASSES):
                for i in range(count):
                    add_bytes(tar, f"{prefix}{subset}/{name}/{i:04d}.jpg", jpeg_bytes(class_image(rng, cls)))
    return path


def make_cifar_python_archive(path: Path, per_batch: int, seed: int = 0) -> tuple[Path, np.ndarray, list[int]]:
    """The official python layout (cifar-10-batches-py/data_batch_1..5, test_batch), tiny batches.

    Returns the archive, the (N, 3072) pixel rows in batch order and the labels.
    """
    rng = np.random.default_rng(seed)
    all_rows, all_labels = [], []
    with tarfile.open(path, "w:gz") as tar:
        for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            rows = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
            payload = pickle.dumps({b"batch_label": batch.encode(), b"labels": labels, b"data": rows,
                                    b"filenames": [b"x.png"] * per_batch}, protocol=2)
            add_bytes(tar, f"cifar-10-batches-py/{batch}", payload)
            all_rows.append(rows)
            all_labels += labels
    return path, np.concatenate(all_rows), all_labels
