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
    stand_in: the data only stands in for a real benchmark (reports must say so).
    family: the validation suite that judges it (gx/expectations/<family>.json), when not its own name:
        a subset or a reduced copy of a protocol is judged by the protocol's suite, with its own counts.
    """

    name: str
    rows: int
    queries: int
    label_width: int
    queries_per_class: int | None = None
    stand_in: bool = False
    family: str = ""

    @property
    def database(self) -> int:
        return self.rows - self.queries

    @property
    def suite(self) -> str:
        return self.family or self.name


PROTOCOLS: dict[str, Protocol] = {
    # ADSH protocol: 100 queries per class, the other 59,000 images are database and training pool.
    "cifar10": Protocol("cifar10", rows=60_000, queries=1_000, label_width=10,
                        queries_per_class=100),
    # Images with at least one of the 80 categories; 5,000 queries as in the common hashing lists.
    "coco": Protocol("coco", rows=122_218, queries=5_000, label_width=80),
    # Images with at least one of the 21 most frequent concepts.
    "nuswide21": Protocol("nuswide21", rows=195_834, queries=2_100, label_width=21),
    # Only the public train (10,500) and test (2,100) lists: a reduced protocol, named so everywhere.
    "nuswide21-reduced": Protocol("nuswide21-reduced", rows=12_600, queries=2_100, label_width=21,
                                  family="nuswide21"),
}


# The metric each protocol family is judged by (METHOD.md §5): on the queries in the report and the
# comparison tables, and on the validation slice for model selection and promotion. NUS-WIDE's is mAP
# over the top 5,000, as its papers report it.
SELECTION = {"cifar10": "mAP", "cifar10-mosaic": "mAP", "cifar10-scenes": "mAP", "coco": "mAP", "nuswide21": "mAP@5000",
             "folder": "mAP"}


# The mAP of a ranking that knows nothing (dsah.evaluation.metrics.chance_map) on the real label tables, their
# protocols' queries against their databases (split_seed 0): the floor a multi-label result is read against,
# printed beside every stand-in's own (bench/chance.py; tests/test_scenes.py recomputes them).
LABEL_TABLE_CHANCE = {"coco": 0.3536, "nuswide21-reduced": 0.4406}


def mosaic_protocol(queries: int, database: int, grid: int) -> Protocol:
    """The CIFAR-10 mosaic stand-in: grid x grid tiles of 32 px, labelled by the classes shown."""
    return Protocol("cifar10-mosaic", rows=queries + database, queries=queries,
                    label_width=len(CIFAR10_CLASSES),
                    stand_in=True)


def scenes_protocol(queries: int, database: int) -> Protocol:
    """The CIFAR-10 scenes stand-in (dsah.data.scenes): objects of long-tailed classes on a grid."""
    return Protocol("cifar10-scenes", rows=queries + database, queries=queries, label_width=len(CIFAR10_CLASSES),
                    stand_in=True)


def subset_protocol(base: Protocol, images: int) -> Protocol:
    """A seeded subset of a protocol for quick runs (`prepare.<dataset>.subset`): `images` rows, queries in
    the protocol's proportion, named so it is never mistaken for the protocol itself."""
    if not 0 < images < base.rows:
        raise ConfigError(f"subset: {images} images; a subset of {base.name} has 1 to {base.rows - 1} "
                          "(0: the whole protocol)")
    per_class = None
    if base.queries_per_class:  # single-label: as many images of each class, queries per class in proportion
        classes = base.label_width
        if images % classes or images < 2 * classes:
            raise ConfigError(f"subset: {images} images; a subset of {base.name} takes the same number of each of "
                              f"its {classes} classes, so a multiple of {classes} (at least {2 * classes})")
        per_class = max(1, round(images * base.queries_per_class / base.rows))
        queries = per_class * classes
    else:
        queries = max(1, round(images * base.queries / base.rows))
    return Protocol(f"{base.name}-subset-{images}", rows=images, queries=queries, label_width=base.label_width,
                    queries_per_class=per_class, stand_in=base.stand_in, family=base.suite)


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(
            f"unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}, cifar10-mosaic and cifar10-scenes"
        ) from None
