"""params.yaml's `prepare` section: its types, and what each step reads of it (values live there only).

A module of its own, so the stages that read these params (sources, prepare, validate) share the types
without importing the dataset readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from dsah.config import DATASETS, Allowed, Count, FilePath, Params, Range, Section, Size, Text
from dsah.data.protocols import PROTOCOLS
from dsah.errors import ConfigError

SEARCHES = "searches $DSAH_DATA_HOME"
# At most this many database images are held out of training sampling (the rule for small data:
# dsah.data.dataset.validation_count).
ValidationSize = Count


# params.yaml's prepare section and its per-dataset sub-sections (values live there only).
@dataclass
class PrepareConfig(Section):
    section = "prepare"
    download: bool          # fetch official archives when no local copy is found
    validation_size: ValidationSize


@dataclass(frozen=True)
class Multiple(Allowed):
    """A whole multiple of `step` from `low` to `high`, or one of the values in `also` (e.g. 0 for "all")."""

    problem = "not allowed"

    step: int
    low: int
    high: int
    also: tuple = ()

    def allows(self, value: Any) -> bool:
        return value in self.also or (isinstance(value, int) and self.low <= value <= self.high
                                      and value % self.step == 0)

    def describe(self, kind: type) -> str:
        return " or ".join([*(repr(v) for v in self.also),
                            f"a multiple of {self.step} from {self.low} to {self.high}"])


CIFAR10 = PROTOCOLS["cifar10"]


@dataclass
class CIFAR10Source(Section):
    section = "prepare.cifar10"
    archive: Annotated[str, FilePath(SEARCHES + ", then the download cache")]
    # A seeded subset of this many images, a tenth of each class (a protocol of its own); 0: all
    subset: Annotated[int, Multiple(CIFAR10.label_width, 2 * CIFAR10.label_width, CIFAR10.rows - CIFAR10.label_width,
                                    also=(0,))]


@dataclass
class LabelledSource(Section):       # nuswide21 (and the base of coco's)
    section = "prepare.nuswide21"
    labels: Annotated[str, FilePath(SEARCHES)]      # explicit label table / annotations / lists
    image_root: Annotated[str, FilePath(SEARCHES)]  # the image folder (COCO: and the download cache)
    subset: Size            # a seeded subset of this many images (a protocol of its own); 0: all


@dataclass
class CocoSource(LabelledSource):
    section = "prepare.coco"
    download_images: bool   # fetch train2014.zip + val2014.zip (19 GB) when the images are not found


@dataclass
class MosaicSource(Section):
    section = "prepare.cifar10-mosaic"
    archive: Annotated[str, FilePath(SEARCHES + ", then the download cache")]  # the tiles' CIFAR-10 archive
    queries: Count
    database: Count
    grid: Annotated[int, Range(1, 8)]  # grid x grid tiles of 32 px


@dataclass
class ScenesSource(Section):
    section = "prepare.cifar10-scenes"
    archive: Annotated[str, FilePath(SEARCHES + ", then the download cache")]  # the objects' CIFAR-10 archive
    queries: Count
    database: Count
    grid: Annotated[int, Range(2, 8)]  # grid x grid places of 32 px (at least 4: up to 4 objects by default)
    objects: list[Annotated[float, Range(0, 1)]]  # the chance of 1, 2, ... objects in a scene
    zipf: Annotated[float, Range(0, 10)]  # class k's objects are (k + 1)^-zipf as frequent; 0: all alike

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= len(self.objects) <= self.grid * self.grid or abs(sum(self.objects) - 1) > 1e-6:
            raise ConfigError(f"prepare.cifar10-scenes.objects: {self.objects}; the chances of 1, 2, ... objects "
                              f"(at most grid x grid = {self.grid * self.grid} of them), summing to 1")


@dataclass
class FolderSource(Section):         # a user's own photos (dsah.data.folder)
    section = "prepare.folder"
    root: Annotated[str, FilePath("uses $DSAH_DATA_HOME/photos")]  # the photos' folder
    labels: Annotated[str, FilePath("looks for labels.csv / labels.tsv in the folder")]  # the label table
    classes: list[Annotated[str, Text()]]  # class order; needed for 0/1 label strings; []: every name used, sorted
    separator: Annotated[str, Text()]      # between class names in a labels cell
    queries: Count          # queries chosen by split_seed when the table has no split column

    def __post_init__(self):
        super().__post_init__()
        if not self.separator or self.separator in ",\t":
            raise ConfigError(f"prepare.folder.separator: {self.separator!r}; one that is neither a comma nor a "
                              "tab (those separate the table's columns), e.g. '|'")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError("prepare.folder.classes: a class is listed twice")


# params.yaml's images section: the store's square side in px per dataset, and how many unreadable images a
# folder may skip (0: any is an error).
ImageSize = Annotated[int, Range(16, 1024)]
MaxSkipped = Size

DATASET_PARAMS = {"cifar10": CIFAR10Source, "coco": CocoSource, "nuswide21": LabelledSource,
                  "cifar10-mosaic": MosaicSource, "cifar10-scenes": ScenesSource, "folder": FolderSource}
DatasetSource = CIFAR10Source | LabelledSource | CocoSource | MosaicSource | ScenesSource | FolderSource


@dataclass
class PrepareParams:
    dataset: str
    split_seed: int
    common: PrepareConfig
    own: DatasetSource


def source_params(params: Params) -> tuple[str, bool, DatasetSource]:
    """What finding the sources reads: the dataset, prepare.download and the dataset's own section."""
    dataset = params.value("dataset", str)
    download = params.value("prepare.download", bool)
    return dataset, download, params.section(f"prepare.{dataset}", DATASET_PARAMS[dataset])


def prepare_params(params: Params) -> PrepareParams:
    dataset, _, own = source_params(params)
    common = params.section("prepare", PrepareConfig, nested=DATASETS)
    return PrepareParams(dataset, params.value("split_seed", int), common, own)
