"""What a trained image network is: the one description that builds it, travels in its model file and
says how it encodes (test-time flips).

Built once from the train_imgnet params (NetworkSpec.from_config), held by the network it built
(ImgNet/TwinNet .spec), saved in models/model.pt under "network" and read back by the loader
(dsah.search.model), so no caller passes backbone, width, input size or flips around on its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from dsah.errors import DataError
from dsah.settings import TrainConfig


@dataclass(frozen=True)
class NetworkSpec:
    backbone: str      # a name of dsah.nets.backbones.BACKBONES
    width: int         # cifar_resnet/cifar_whitened width (ignored by the ImageNet backbones)
    weights: str       # the ImageNet weights file it started from ("" for none or weights shipped with it)
    input_size: int    # px the backbone sees, images resized on the fly; 0: its own
    test_flips: bool   # codes from the mean outputs of an image and its mirror image

    @classmethod
    def from_config(cls, config: TrainConfig) -> NetworkSpec:
        return cls(config.backbone, config.width, config.weights, config.input_size, config.test_flips)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_model_file(cls, state: dict[str, Any], path: str | Path) -> NetworkSpec:
        """The spec a model file (torch.load'ed) holds. Files written before the spec was saved carry the
        training config instead: the same fields, input_size and test_flips absent in the oldest (their
        networks had neither: 0 and False)."""
        if "network" in state:
            values, names = state["network"], {f.name for f in fields(cls)}
            if not isinstance(values, dict) or set(values) != names:
                got = sorted(values) if isinstance(values, dict) else type(values).__name__
                raise DataError(f"{path}: its network description has {got}, expected {sorted(names)}; "
                                "it was written by another version of dsah: retrain it (dvc repro)")
            return cls(**values)
        if isinstance(state.get("config"), dict) and {"backbone", "width"} <= set(state["config"]):
            config = state["config"]
            return cls(config["backbone"], config["width"], config.get("weights", ""), config.get("input_size", 0),
                       config.get("test_flips", False))
        raise DataError(f"{path}: no network description in it (neither 'network' nor a training 'config'): "
                        "not a model file of the train stage")
