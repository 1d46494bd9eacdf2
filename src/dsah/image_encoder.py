"""Codes of new images (search, additions, the local server): read image files, encode them with a
trained model as the pipeline encodes its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dsah.encode import encode
from dsah.errors import DataError
from dsah.features import extract
from dsah.model import load_model


def read_images(sources: list, size: tuple[int, int]) -> torch.Tensor:
    """Image files (paths or file-like objects) -> (N, 3, H, W) uint8, RGB, resized to the dataset's size.
    An unreadable or undecodable file is a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for source in sources:
        name = source if isinstance(source, (str, Path)) else getattr(source, "name", "upload")
        try:
            with Image.open(source) as image:
                image = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
                images.append(np.asarray(image, dtype=np.uint8))
        except FileNotFoundError:
            raise DataError(f"{name}: no such image file") from None
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
            raise DataError(f"{name}: not a decodable image ({error})") from None
    return torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))


class ImageEncoder:
    """Codes of new images with a trained model: sign(F(x)) for deep methods (DAPH: its database network
    for database entries, its query network for queries), the hash of the fixed features for classic ones."""

    def __init__(self, model_path: str | Path, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model, self.saved = load_model(model_path, self.device)

    @property
    def bits(self) -> int:
        return int(self.saved["bits"])

    def __call__(self, images: torch.Tensor, side: str = "query") -> np.ndarray:
        if self.saved["kind"] == "classic":
            options = self.saved["features"]
            features = extract(options["extractor"], images, options["size"], options.get("weights", ""),
                               options.get("batch", 64), self.device, progress=False)
            return self.model.encode(features)
        return encode(self.model, images, self.device, side=side).cpu().numpy().astype(np.int8)
