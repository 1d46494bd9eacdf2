"""One decoding policy for every image the project reads: the image store, `dsah search`, `add` and `serve`.

An image file becomes a size x size RGB uint8 square:
1. EXIF orientation applied, so a photo taken sideways is stored upright;
2. 8-bit RGB: 16-bit and 32-bit integer images scaled to 8 bits (the top byte of a 16-bit value), float
   images clipped to 0..255, transparency composited over white, grayscale, palette and CMYK converted;
3. the shorter side resized to `size` and the centre square kept: one antialiased bilinear resize of the
   central square, none when the image already is size x size (CIFAR-10's 32 px stay bit-exact).
JPEGs are decoded at a reduced scale (PIL's draft mode: 1/2, 1/4 or 1/8) whenever both sides stay at least
`size`, several times faster for a photo reduced to a small store.

Query images (`dsah search`, `add`, `serve`) are refused above MAX_PIXELS from their header alone, before
any decoding: a few-KB PNG can declare 20000 x 20000 pixels and decode to gigabytes. That limit is ours and
explicit; PIL's own decompression-bomb guard (a warning above Image.MAX_IMAGE_PIXELS, about 89 MP, an error
above twice that) stays on beneath it, and its error is reported as the same ImageTooLargeError.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dsah.errors import DataError
from dsah.limits import MAX_PIXELS

POLICY = ("EXIF orientation applied; 16-bit to 8-bit (top byte), alpha over white, any mode to RGB; shorter "
          "side resized to the store size and the centre square kept (bilinear, antialiased)")
BACKGROUND = (255, 255, 255)  # under transparent pixels


class ImageTooLargeError(DataError):
    """An image whose header declares more pixels than the limit: refused before decoding (HTTP 413)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, by the policy above."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image)
        if image.mode == "F":
            eight = np.clip(np.nan_to_num(values), 0, 255).astype(np.uint8)
        else:  # 16-bit data (PNG, TIFF) keeps its top byte; "I" holds it as int32
            eight = (np.clip(values.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(eight, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def square(image: Image.Image, size: int) -> Image.Image:
    """The centre square, its side resized to `size` (no resampling when it already is size x size)."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side),
                        reducing_gap=3.0)


def decode_square(source: str | Path | bytes | BinaryIO, size: int, name: str | None = None,
                  max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """An image file (path, bytes or file object) -> (size, size, 3) uint8, by the module's policy.

    An image over `max_pixels` (None: PIL's guard only) is an ImageTooLargeError, raised from its header
    before decoding. A missing, unreadable, truncated or undecodable file is a DataError naming it."""
    label = name or (str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "image"))
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:  # lazy: header only
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(f"{label}: {width}x{height} = {width * height:,} pixels, over the "
                                         f"limit of {max_pixels:,} pixels; refused before decoding")
            if image.format == "JPEG":
                image.draft("RGB", (size, size))  # decode at 1/2..1/8 scale while both sides stay >= size
            image.load()  # decode fully here: a truncated file fails now, with its name
            upright = ImageOps.exif_transpose(image)
            return np.asarray(square(to_rgb(upright), size), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{label}: no such image file") from None
    except UnidentifiedImageError:
        raise DataError(f"{label}: not a decodable image (not an image format PIL reads)") from None
    except Image.DecompressionBombError as error:  # PIL's guard, raised by Image.open itself
        raise ImageTooLargeError(f"{label}: refused before decoding by PIL's decompression-bomb guard "
                                 f"({error})") from None
    except (OSError, ValueError, SyntaxError) as error:
        # PIL raises these for truncated or corrupt data
        raise DataError(f"{label}: not a decodable image ({error})") from None
