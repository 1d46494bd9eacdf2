"""Codes on disk: bit packing and the code files (ids + packed codes) stages hand to each other.

numpy only, so the stages that only read codes (evaluate, index, report) depend on nothing else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsah.io import atomic_path


def pack_bits(codes) -> np.ndarray:
    """(n, c) codes in {-1,+1} (or {0,1}; numpy or torch) -> (n, ceil(c/8)) uint8, bit 1 where positive."""
    if hasattr(codes, "detach"):  # a torch tensor, without importing torch here
        codes = codes.detach().cpu().numpy()
    return np.packbits(np.asarray(codes) > 0, axis=1)


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of pack_bits: (n, bytes) uint8 -> (n, bits) int8 in {-1,+1}."""
    return np.unpackbits(packed, axis=1, count=bits).astype(np.int8) * 2 - 1


def pack_words(codes: np.ndarray) -> np.ndarray:
    """(n, c) +-1 codes -> (n, ceil(c/64)) uint64 words (bit set where the code is positive)."""
    packed = np.packbits(np.asarray(codes) > 0, axis=1)
    words = -(-packed.shape[1] // 8)
    padded = np.zeros((len(packed), words * 8), dtype=np.uint8)
    padded[:, :packed.shape[1]] = packed
    return padded.view(np.uint64)


def save_codes(path: str | Path, ids: list[str], codes: np.ndarray) -> None:
    """ids + codes packed 8 bits per byte (bit set where the code is +1), in one .npz (no pickles)."""
    codes = np.asarray(codes)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.asarray(ids, dtype=str), packed=pack_bits(codes), bits=np.int64(codes.shape[1]))


def load_codes(path: str | Path) -> tuple[list[str], np.ndarray]:
    """-> (ids, (n, c) int8 codes in {-1,+1})."""
    with np.load(path, allow_pickle=False) as data:
        return data["ids"].tolist(), unpack_bits(data["packed"], int(data["bits"]))
