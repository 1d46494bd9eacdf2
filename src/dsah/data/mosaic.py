"""cifar10-mosaic: a multi-label stand-in built from real CIFAR-10 pixels.

Each image is a grid x grid mosaic of CIFAR-10 images; its labels are the classes shown. Query mosaics
are tiled only from CIFAR-10 query images and database mosaics only from database images, so no pixel
of a query is ever in the database. Reports name this dataset as a stand-in. `prepare` picks the tiles
(from CIFAR-10's names and classes); the `images` stage tiles the pixels (`store_images`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dsah.data.cifar10 import read_cifar10, resized
from dsah.data.dataset import Prepared
from dsah.data.protocols import CIFAR10_CLASSES, PROTOCOLS, Protocol
from dsah.data.sources import Source
from dsah.data.table import EMPTY
from dsah.data.splits import choose_queries_per_class


def tile(images: np.ndarray, picks: np.ndarray, grid: int) -> np.ndarray:
    """(N, H, W, 3) images, (M, grid*grid) picks -> (M, grid*H, grid*W, 3) mosaics, row-major tiles."""
    m, (h, w) = len(picks), images.shape[1:3]
    tiles = images[picks].reshape(m, grid, grid, h, w, 3)
    return np.ascontiguousarray(tiles.transpose(0, 1, 3, 2, 4, 5).reshape(m, grid * h, grid * w, 3))


def prepare_mosaic(protocol: Protocol, source: Source, split_seed: int, grid: int,
                   cifar_protocol: Protocol = PROTOCOLS["cifar10"]) -> Prepared:
    data = read_cifar10(source.path, pixels=False)
    cifar_query = choose_queries_per_class(data.ids, data.classes, cifar_protocol.queries_per_class, split_seed)
    rng = np.random.default_rng([split_seed, 1_000_003])  # its own stream: never the training seed
    k = grid * grid
    parts = []
    for name, pool, count in (("query", np.flatnonzero(cifar_query), protocol.queries),
                              ("database", np.flatnonzero(~cifar_query), protocol.database)):
        # Distinct tiles within a mosaic; a tile may recur across mosaics when the pool is small.
        picks = np.stack([rng.choice(pool, size=k, replace=False) for _ in range(count)]) if count else \
            np.zeros((0, k), dtype=np.int64)
        parts.append((name, picks))
    picks = np.concatenate([p for _, p in parts])
    query = np.concatenate([np.full(len(p), n == "query") for n, p in parts])
    labels = np.zeros((len(picks), len(CIFAR10_CLASSES)), dtype=np.uint8)
    np.put_along_axis(labels, data.classes[picks], 1, axis=1)
    ids = [f"{n}-{i:06d}" for n, p in parts for i in range(len(p))]
    refs = ["|".join(data.ids[j] for j in row) for row in picks]
    return Prepared(
        dataset="cifar10-mosaic", protocol=protocol, classes=list(CIFAR10_CLASSES), ids=ids, labels=labels,
        query=query, image_refs=refs,
        notes=["stand-in: multi-label mosaics of CIFAR-10 images, not a published benchmark"],
    )


def place_pixels(token: str, images: np.ndarray, index: dict[str, int]) -> np.ndarray:
    """A place's (H, W, 3) pixels: the image named by `token`, or an empty place's colour."""
    if token.startswith(EMPTY):
        return np.broadcast_to(np.frombuffer(bytes.fromhex(token[1:]), dtype=np.uint8), images.shape[1:])
    return images[index[token]]


def store_images(path: Path, refs: list[str], size: int, grid: int) -> Iterator[tuple[int, np.ndarray]]:
    """(row, size x size x 3 uint8) per tiled image of the split table (in store order): its places, named
    by the reference 'tok|tok|...' (an image's id, or an empty place), read from the CIFAR-10 source and
    laid out row-major."""
    data = read_cifar10(path)
    index = {image_id: k for k, image_id in enumerate(data.ids)}
    for row, ref in enumerate(refs):
        places = np.stack([place_pixels(token, data.images, index) for token in ref.split("|")])
        yield row, resized(tile(places, np.arange(grid * grid)[None], grid)[0], size)
