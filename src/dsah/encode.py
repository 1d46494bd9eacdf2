"""Codes of images: loading a trained model, encoding, and bit-packed code files with their ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsah.codes import pack_bits, unpack_bits
from dsah.io import atomic_path


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[Any, dict]:
    """The trained model and its saved description (tensors and plain types only): a network (ImgNet,
    or TwinNet for DAPH) in eval mode, or a classic method's HashFunction."""
    from dsah.methods import build_network, deep_method, settings_from_dict
    from dsah.methods.classic import HashFunction

    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("kind") == "classic":
        return HashFunction.from_state(state["hash_function"]), state
    config, method = state["config"], state["method"]
    hashing = deep_method(method, settings_from_dict(method, state["settings"]), state["bits"])
    # Architecture only: the trained weights below replace any ImageNet initialization.
    model = build_network(hashing, config["backbone"], config["width"], "", state["bits"])
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), state


def save_codes(path: str | Path, ids: list[str], codes: np.ndarray) -> None:
    """ids + codes packed 8 bits per byte (bit set where the code is +1), in one .npz (no pickles)."""
    codes = np.asarray(codes)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.asarray(ids, dtype=str), packed=pack_bits(codes), bits=np.int64(codes.shape[1]))


def load_codes(path: str | Path) -> tuple[list[str], np.ndarray]:
    """-> (ids, (n, c) int8 codes in {-1,+1})."""
    with np.load(path, allow_pickle=False) as data:
        return data["ids"].tolist(), unpack_bits(data["packed"], int(data["bits"]))


def read_images(sources: list, size: tuple[int, int]) -> torch.Tensor:
    """Image files (paths or file-like objects) -> (N, 3, H, W) uint8, RGB, resized to the dataset's size.
    An unreadable or undecodable file is a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    from dsah.errors import DataError

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
            from dsah.features import extract

            options = self.saved["features"]
            features = extract(options["extractor"], images, options["size"], options.get("weights", ""),
                               options.get("batch", 64), self.device, progress=False)
            return self.model.encode(features)
        from dsah.train import encode

        return encode(self.model, images, self.device, side=side).cpu().numpy().astype(np.int8)
