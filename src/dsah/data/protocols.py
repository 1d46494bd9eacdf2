"""Retrieval protocols: the counts a prepared split must have (METHOD.md §5).

These are facts of the published protocols, kept apart from the code that builds splits so that the
validation stage checks a prepared table against them independently.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsah.errors import ConfigError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


@dataclass(frozen=True)
class Protocol:
    """What a prepared split table must look like.

    name: protocol name, written into every report ("nuswide21-reduced" is not "nuswide21").
    rows: images in the table (queries + database).
    queries: query images; all other rows are database (and training pool).
    label_width: classes C; labels are C-character strings of '0'/'1'.
    queries_per_class: fixed per-class query count (single-label protocols only).
    image_shape: (H, W, 3) of the uint8 image store, or None where images stay in a user's folder.
    stand_in: the data only stands in for a real benchmark (reports must say so).
    """

    name: str
    rows: int
    queries: int
    label_width: int
    queries_per_class: int | None = None
    image_shape: tuple[int, int, int] | None = None
    stand_in: bool = False

    @property
    def database(self) -> int:
        return self.rows - self.queries


PROTOCOLS: dict[str, Protocol] = {
    # ADSH protocol: 100 queries per class, the other 59,000 images are database and training pool.
    "cifar10": Protocol("cifar10", rows=60_000, queries=1_000, label_width=10,
                        queries_per_class=100, image_shape=(32, 32, 3)),
    # Images with at least one of the 80 categories; 5,000 queries as in the common hashing lists.
    "coco": Protocol("coco", rows=122_218, queries=5_000, label_width=80),
    # Images with at least one of the 21 most frequent concepts.
    "nuswide21": Protocol("nuswide21", rows=195_834, queries=2_100, label_width=21),
    # Only the public train (10,500) and test (2,100) lists: a reduced protocol, named so everywhere.
    "nuswide21-reduced": Protocol("nuswide21-reduced", rows=12_600, queries=2_100, label_width=21),
}


def mosaic_protocol(queries: int, database: int, grid: int) -> Protocol:
    """The CIFAR-10 mosaic stand-in: grid x grid tiles of 32 px, labelled by the classes shown."""
    return Protocol("cifar10-mosaic", rows=queries + database, queries=queries,
                    label_width=len(CIFAR10_CLASSES), image_shape=(32 * grid, 32 * grid, 3),
                    stand_in=True)


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(
            f"unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))} and cifar10-mosaic"
        ) from None
