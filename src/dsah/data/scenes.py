"""cifar10-scenes: a multi-label stand-in on which a random ranking scores low, built from CIFAR-10 pixels.

The 2x2 mosaic (dsah.data.mosaic) shows four objects of uniformly frequent classes, so almost any two
mosaics share a class and a random ranking already scores mAP 0.80. A scene is a grid x grid layout of
32-px places, each holding one CIFAR-10 image (an object) or nothing (the scene's background colour):
the number of objects follows `objects` (the chance of 1, 2, ... objects), each object's class a long
tail (class k of CIFAR-10's order has weight (k + 1)^-zipf, as COCO's "person" dominates its labels),
its image drawn from that class. Labels are the classes shown. Query scenes use only CIFAR-10 query
images and database scenes only database images, so no pixel of a query is ever in the database. No two
scenes are alike (a repeat is drawn again). Reports name this dataset as a stand-in.
"""

from __future__ import annotations

import numpy as np

from dsah.data.cifar10 import read_cifar10
from dsah.data.dataset import Prepared
from dsah.data.protocols import CIFAR10_CLASSES, PROTOCOLS, Protocol
from dsah.data.sources import Source
from dsah.data.splits import choose_queries_per_class
from dsah.data.table import empty_place
from dsah.errors import DataError


def class_weights(zipf: float, classes: int = len(CIFAR10_CLASSES)) -> np.ndarray:
    """The chance that an object is of class k: proportional to (k + 1)^-zipf (0: all alike)."""
    weights = np.arange(1, classes + 1, dtype=np.float64) ** -float(zipf)
    return weights / weights.sum()


def draw_scenes(count: int, pools: list[np.ndarray], grid: int, objects: list[float], zipf: float,
                rng: np.random.Generator, names: list[str]) -> tuple[list[str], np.ndarray]:
    """`count` scenes from per-class pools of image indices: (references 'tok|tok|...' row-major, a
    token being an image's name or an empty place; (count, classes) multi-hot labels)."""
    places, weights = grid * grid, class_weights(zipf, len(pools))
    chance = np.zeros(places)
    chance[:len(objects)] = objects
    if count and any(not len(pool) for pool, weight in zip(pools, weights) if weight > 0):
        raise DataError("cifar10-scenes: a class has no image to draw its objects from; is the CIFAR-10 copy whole?")
    refs, labels, seen = [], np.zeros((count, len(pools)), dtype=np.uint8), set()
    while len(refs) < count:
        k = 1 + rng.choice(places, p=chance)
        kinds = rng.choice(len(pools), size=k, p=weights)
        if any((kinds == kind).sum() > len(pool) for kind, pool in enumerate(pools)):
            continue  # more objects of a class than its pool has images (only in tiny test data)
        tokens = [empty_place(rng.integers(0, 256, size=3))] * places
        spots = iter(rng.permutation(places)[:k])
        for kind in np.unique(kinds):  # distinct images within a scene
            for image in rng.choice(pools[kind], size=int((kinds == kind).sum()), replace=False):
                tokens[next(spots)] = names[image]
        ref = "|".join(tokens)
        if ref in seen:
            continue
        seen.add(ref)
        labels[len(refs), kinds] = 1
        refs.append(ref)
    return refs, labels


def prepare_scenes(protocol: Protocol, source: Source, split_seed: int, grid: int, objects: list[float],
                   zipf: float, cifar_protocol: Protocol = PROTOCOLS["cifar10"]) -> Prepared:
    data = read_cifar10(source.path, pixels=False)
    cifar_query = choose_queries_per_class(data.ids, data.classes, cifar_protocol.queries_per_class, split_seed)
    rng = np.random.default_rng([split_seed, 2_000_003])  # its own stream: never the training seed
    refs, labels, query = [], [], []
    for is_query, count in ((True, protocol.queries), (False, protocol.database)):
        pools = [np.flatnonzero((cifar_query == is_query) & (data.classes == k)) for k in range(len(CIFAR10_CLASSES))]
        part_refs, part_labels = draw_scenes(count, pools, grid, objects, zipf, rng, data.ids)
        refs += part_refs
        labels.append(part_labels)
        query += [is_query] * count
    ids = [f"query-{i:06d}" for i in range(protocol.queries)] + [f"database-{i:06d}" for i in range(protocol.database)]
    return Prepared(
        dataset="cifar10-scenes", protocol=protocol, classes=list(CIFAR10_CLASSES), ids=ids,
        labels=np.concatenate(labels), query=np.array(query), image_refs=refs,
        notes=["stand-in: multi-label scenes of CIFAR-10 images (long-tailed classes, empty places), "
               "not a published benchmark"],
    )
