"""params.yaml as a whole: every key's declared type and allowed values, and a check of the whole file.

Each stage checks the sections it reads when it reads them (dsah.config.Params). The sources stage, which
runs first in the pipeline and on every `dvc repro`, also checks the whole file here: a wrong value
anywhere stops `dvc repro` and `dvc exp run` before any later stage has run, so DVC has deleted none of
their outputs (it deletes a stage's outputs just before running it).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from dsah.config import DATASETS, METHODS, TOP_LEVEL_VALUES, Params, field_types, leaves
from dsah.data.params import DATASET_PARAMS, ImageSize, MaxSkipped, PrepareConfig
from dsah.errors import ConfigError
from dsah.settings import (METHOD_SETTINGS, EncodeConfig, EvaluateConfig, FeaturesConfig, IndexConfig, LAEConfig,
                           TrainConfig)


def sections() -> dict[str, type]:
    """Each section of params.yaml that is read whole, by its dotted path -> its dataclass."""
    return {"prepare": PrepareConfig, **{f"prepare.{name}": DATASET_PARAMS[name] for name in DATASETS},
            "train_lae": LAEConfig, "train_imgnet": TrainConfig,
            **{f"methods.{name}": METHOD_SETTINGS[name] for name in METHODS},
            "features": FeaturesConfig, "encode": EncodeConfig, "evaluate": EvaluateConfig, "index": IndexConfig}


def single_values() -> dict[str, Any]:
    """The keys read one by one (outside the sections), by dotted path -> declared type."""
    return {**TOP_LEVEL_VALUES, "images.max_skipped": MaxSkipped,
            **{f"images.size.{name}": ImageSize for name in DATASETS}}


def declared() -> dict[str, Any]:
    """Every leaf key params.yaml must hold, by dotted path -> its declared type (`Annotated[...]`)."""
    types = dict(single_values())
    for path, kind in sections().items():
        hints = field_types(kind)
        types.update({f"{path}.{field.name}": hints[field.name] for field in fields(kind)})
    return types


def check_params(params: Params) -> None:
    """Every key of the file, checked as the stage that reads it will (type, allowed values, the section's
    own rules), and no key that no stage reads. Every key counts as read (the stage that calls this
    depends on the whole file)."""
    for key, kind in single_values().items():
        params.value(key, kind)
    for path, kind in sections().items():
        params.section(path, kind, nested=DATASETS if path == "prepare" else ())
    known = declared()
    unknown = [key for key in (leaf.lstrip(".") for leaf in leaves(params.data, "")) if key not in known]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ConfigError(f"{unknown[0]}: unknown key in {params.source}{more}; no stage reads it (a typo, or a "
                          "section that was renamed?)")
