"""Codes of new images (search, additions, the local server): read image files, encode them with a
trained model as the pipeline encodes its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dsah.training.encode import encode
from dsah.data.imaging import MAX_PIXELS, decode_square
from dsah.nets.features import extract
from dsah.search.model import load_model


def read_images(sources: list, size: int | tuple[int, int], max_pixels: int | None = MAX_PIXELS) -> torch.Tensor:
    """Image files (paths or file-like objects) -> (N, 3, S, S) uint8, decoded as the image store decodes
    its images (dsah.data.imaging: upright, 8-bit RGB, centre square at the store's size). An unreadable
    or undecodable file is a DataError naming it; one over `max_pixels` an ImageTooLargeError, raised
    before decoding."""
    side = size if isinstance(size, int) else int(size[0])
    images = [decode_square(source, side, max_pixels=max_pixels) for source in sources]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


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
