"""Builders of small source archives in the formats users hand to `prepare`, tiny training data, and
the project's own params.yaml as config objects (the one place defaults live, for the tests too)."""

from __future__ import annotations

import dataclasses
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dsah.config import load_params
from dsah.data.protocols import CIFAR10_CLASSES

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")


def project_config(dotted: str, kind: type, **changes: Any):
    """A section of the project's params.yaml as its config type, with some fields changed."""
    return dataclasses.replace(PARAMS.section(dotted, kind), **changes)


def method_config(method: str, **changes: Any):
    """params.yaml's methods.<method> settings, with some fields changed."""
    from dsah.methods import method_settings

    return dataclasses.replace(method_settings(PARAMS, method), **changes)


def train_config(**changes: Any):
    from dsah.train import TrainConfig

    return project_config("train_imgnet", TrainConfig, **changes)


def lae_config(**changes: Any):
    from dsah.lae import LAEConfig

    return project_config("train_lae", LAEConfig, **changes)


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


def easy_two_class_data(database: int = 160, queries: int = 40, bits: int = 8, seed: int = 0):
    """Two classes any network separates (flat colours plus noise), as TrainData and query images/labels."""
    import torch

    from dsah.lae import train_lae
    from dsah.train import TrainData

    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 2, database + queries)
    images = np.stack([class_image(rng, 3 * int(c)) for c in classes]).transpose(0, 3, 1, 2)
    labels = np.eye(2, dtype=np.float32)[classes]
    lae = train_lae(labels[:database], bits, lae_config(steps=200), seed=seed, progress=False)
    data = TrainData(
        images=torch.from_numpy(np.ascontiguousarray(images[:database])), labels=torch.from_numpy(labels[:database]),
        pool=torch.arange(20, database), validation=torch.arange(20),
        label_codes=torch.from_numpy(lae.label_codes), decoder=lae.model.decoder)
    return data, (torch.from_numpy(np.ascontiguousarray(images[database:])), labels[database:])
