"""params.yaml's `prepare` section: its types, and what each step reads of it (values live there only).

A module of its own, so the stages that read these params (sources, prepare, validate) share the types
without importing the dataset readers.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsah.config import DATASETS, Params
from dsah.errors import ConfigError


# params.yaml's prepare section and its per-dataset sub-sections (values live there only).
@dataclass
class PrepareConfig:
    download: bool          # fetch official archives when no local copy is found
    validation_size: int    # database images held out of training sampling


@dataclass
class CIFAR10Source:
    archive: str            # explicit archive path; "" searches $DSAH_DATA_HOME, then the download cache


@dataclass
class LabelledSource:       # nuswide21 (and the base of coco's)
    labels: str             # explicit label table / annotations / lists; "" searches $DSAH_DATA_HOME
    image_root: str         # the image folder; "" searches $DSAH_DATA_HOME (and the cache, COCO)
    subset: int             # a seeded subset of this many images (a protocol of its own); 0: all

    def __post_init__(self):
        if self.subset < 0:
            raise ConfigError(f"subset: {self.subset}; 0 (the whole protocol) or a number of images")


@dataclass
class CocoSource(LabelledSource):
    download_images: bool   # fetch train2014.zip + val2014.zip (19 GB) when the images are not found


@dataclass
class MosaicSource:
    archive: str            # the CIFAR-10 archive the tiles come from
    queries: int
    database: int
    grid: int


@dataclass
class FolderSource:         # a user's own photos (dsah.data.folder)
    root: str               # the photos' folder; "" uses $DSAH_DATA_HOME/photos
    labels: str             # the label table (CSV/TSV); "" looks for labels.csv / labels.tsv in the folder
    classes: list[str]      # class order; needed for 0/1 label strings; []: every name used, sorted
    separator: str          # between class names in a labels cell
    queries: int            # queries chosen by split_seed when the table has no split column

    def __post_init__(self):
        if not self.separator or self.separator in ",\t":
            raise ConfigError(f"prepare.folder.separator: {self.separator!r}; one that is neither a comma nor a "
                              "tab (those separate the table's columns), e.g. '|'")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError("prepare.folder.classes: a class is listed twice")


DATASET_PARAMS = {"cifar10": CIFAR10Source, "coco": CocoSource, "nuswide21": LabelledSource,
                  "cifar10-mosaic": MosaicSource, "folder": FolderSource}


@dataclass
class PrepareParams:
    dataset: str
    split_seed: int
    common: PrepareConfig
    own: CIFAR10Source | LabelledSource | CocoSource | MosaicSource | FolderSource


def source_params(params: Params) -> tuple[str, bool, CIFAR10Source | LabelledSource | CocoSource | MosaicSource
                                           | FolderSource]:
    """What finding the sources reads: the dataset, prepare.download and the dataset's own section."""
    dataset = params.value("dataset", str)
    download = params.value("prepare.download", bool)
    return dataset, download, params.section(f"prepare.{dataset}", DATASET_PARAMS[dataset])


def prepare_params(params: Params) -> PrepareParams:
    dataset, _, own = source_params(params)
    common = params.section("prepare", PrepareConfig, nested=DATASETS)
    return PrepareParams(dataset, params.value("split_seed", int), common, own)
