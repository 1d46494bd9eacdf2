"""The Hamming index users search: database codes bit-packed in 64-bit words with their ids, labels and
image references, in .npy files that load memory-mapped.

Files of an index folder:
    codes.npy   (n, ceil(c/64)) uint64   codes, bit set where the code is +1 (dsah.codes.pack_words)
    ids.npy     (n,) unicode             ids, unique
    labels.npy  (n, ceil(C/8)) uint8     labels, bit-packed
    refs.npy    (n,) unicode             image references: "store:<row>" (the prepared image store),
                                         a path under the dataset's image root, or "added/<file>" (a copy
                                         in here of an image users added: dsah.search.additions keeps the original)
    added/      those copies, exactly the ones refs.npy names
    meta.json   bits, classes, dataset, method, where stores and roots are, counts

Search is exact: Hamming distance by popcount, ties by database index (the order of rows): the top k
are exactly the first k of the ranking that evaluate's mAP_index_ties scores (mAP itself averages over
every order of tied items). Adding and removing rewrite the folder atomically
(a staging folder renamed over the old one), so a failure leaves the previous index intact.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsah.evaluation.ranking import top_k_kernel
from dsah.errors import DataError
from dsah.codes import pack_words

FILES = ("codes.npy", "ids.npy", "labels.npy", "refs.npy", "meta.json")


MILVUS_MANIFEST = "milvus.json"  # what a Milvus collection holds of this index (dsah.search.milvus)
CARRIED = (MILVUS_MANIFEST,)  # files an index keeps when entries are added or removed


@dataclass
class Hit:
    rank: int
    distance: int
    row: int
    id: str
    labels: list[str]
    image: str


@dataclass
class HammingIndex:
    folder: Path
    words: np.ndarray     # (n, w) uint64, memory-mapped
    ids: np.ndarray
    labels: np.ndarray    # (n, ceil(C/8)) uint8
    refs: np.ndarray
    meta: dict[str, Any]

    @property
    def bits(self) -> int:
        return int(self.meta["bits"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) query images are resized to: the dataset's image shape."""
        shape = self.meta.get("image_shape") or [224, 224, 3]
        return int(shape[0]), int(shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> HammingIndex:
        folder = Path(folder)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise DataError(f"{folder}: not an index ({', '.join(missing)} missing); run the index stage first")
        mode = "r" if mmap else None
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
                  for name in ("codes", "ids", "labels", "refs")}
        meta = json.loads((folder / "meta.json").read_text())
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1 or meta.get("count") != len(arrays["ids"]):
            raise DataError(f"{folder}: its files disagree on the number of entries ({sorted(lengths)}, "
                            f"meta.json says {meta.get('count')}); rebuild it with the index stage")
        return cls(folder, arrays["codes"], arrays["ids"], arrays["labels"], arrays["refs"], meta)

    def label_names(self, row: int) -> list[str]:
        return self.labels_of(np.array([row]))[0]

    def labels_of(self, rows: np.ndarray) -> list[list[str]]:
        """The class names of index rows."""
        classes = self.classes
        bits = np.unpackbits(np.asarray(self.labels[rows]), axis=1, count=len(classes)).astype(bool)
        return [[classes[j] for j in np.flatnonzero(on)] for on in bits]

    @functools.cached_property
    def positions(self) -> dict[str, int]:
        """id -> row, built on first use and kept: 10 ms for 59,000 ids, which every search by id paid
        (an index is never changed in place: adding and removing load a new one)."""
        return {value: row for row, value in enumerate(self.ids.tolist())}

    def rows_of(self, ids: list[str]) -> np.ndarray:
        position = self.positions
        unknown = [i for i in ids if i not in position]
        if unknown:
            raise DataError(f"unknown id(s) in {self.folder}: {', '.join(unknown[:5])}")
        return np.array([position[i] for i in ids], dtype=np.int64)

    def codes_of(self, rows: np.ndarray) -> np.ndarray:
        """(k, c) +-1 int8 codes of index rows."""
        packed = np.ascontiguousarray(self.words[rows]).view(np.uint8)
        return np.unpackbits(packed, axis=1, count=self.bits).astype(np.int8) * 2 - 1

    def search_words(self, query_words: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(q, w) uint64 query words -> ((q, k) rows, (q, k) distances), nearest first, ties by row."""
        if query_words.shape[1] != self.words.shape[1]:
            raise DataError(f"query codes have {query_words.shape[1] * 64} bit words, the index {self.bits} bits")
        if len(self) == 0:
            return np.zeros((len(query_words), 0), np.int64), np.zeros((len(query_words), 0), np.int32)
        return top_k_kernel(np.ascontiguousarray(query_words), np.ascontiguousarray(self.words), k, self.bits)

    def search(self, query_codes: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """(q, c) +-1 codes -> for each query, its top k hits."""
        query_codes = np.atleast_2d(query_codes)
        if query_codes.shape[1] != self.bits:
            raise DataError(f"query codes have {query_codes.shape[1]} bits, the index {self.bits}")
        rows, distances = self.search_words(pack_words(query_codes), k)
        return [self.hits(row_list, dist_list) for row_list, dist_list in zip(rows, distances)]

    def hits(self, rows: np.ndarray, distances: np.ndarray) -> list[Hit]:
        """Index rows at their distances, nearest first, as hits. Each file is read once for all rows: read
        row by row, the memory-mapped files' indexing took longer than the search itself (profiled under load)."""
        ids, refs, labels = self.ids[rows].tolist(), self.refs[rows].tolist(), self.labels_of(rows)
        return [Hit(rank + 1, distance, row, id, names, ref) for rank, (row, distance, id, names, ref)
                in enumerate(zip(rows.tolist(), distances.tolist(), ids, labels, refs))]


def write_index(folder: str | Path, codes: np.ndarray, ids, labels: np.ndarray, refs, meta: dict[str, Any],
                files: Mapping[str, Path] | None = None) -> Path:
    """Write an index from +-1 codes and 0/1 labels; atomic: a staging folder renamed into place.
    files: where the images of "added/..." refs come from (by default, the index's own added/ folder)."""
    return write_packed(folder, pack_words(codes), ids, np.packbits(np.asarray(labels) > 0, axis=1), refs, meta,
                        files)


def write_packed(folder: str | Path, words: np.ndarray, ids, packed_labels: np.ndarray, refs,
                 meta: dict[str, Any], files: Mapping[str, Path] | None = None, keep: tuple[str, ...] = ()) -> Path:
    """write_index for codes and labels already packed as the index stores them. keep: files of the old
    folder that the new one carries over (the Milvus manifest, when entries are added or removed)."""
    folder = Path(folder)
    ids, refs = np.asarray(list(ids), dtype=str), np.asarray(list(refs), dtype=str)
    if len(set(ids.tolist())) != len(ids):
        raise DataError("index ids must be unique")
    staging = folder.with_name(folder.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, array in (("codes", words), ("ids", ids), ("labels", packed_labels), ("refs", refs)):
        np.save(staging / f"{name}.npy", array, allow_pickle=False)
    # The added images the refs name, and no others: a removed entry's copy goes with it.
    for ref in sorted({str(r) for r in refs.tolist() if str(r).startswith("added/")}):
        source = Path((files or {}).get(ref, folder / ref))
        if not source.is_file():
            shutil.rmtree(staging, ignore_errors=True)
            raise DataError(f"{folder}: the image of {ref} is missing ({source}); "
                            "rebuild the index with the index stage")
        (staging / "added").mkdir(exist_ok=True)
        shutil.copyfile(source, staging / ref)
    (staging / "meta.json").write_text(json.dumps({**meta, "count": len(ids)}, indent=2) + "\n")
    for name in keep:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, staging / name)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def add_entries(folder: str | Path, codes: np.ndarray, ids: list[str], labels: np.ndarray, refs: list[str],
                files: Mapping[str, Path] | None = None) -> HammingIndex:
    """Append entries (codes of new images, from the trained network) without retraining. files: the
    image files of new "added/..." refs, copied in."""
    index = HammingIndex.load(folder, mmap=False)
    clash = sorted(set(ids) & set(index.ids.tolist()))
    if clash:
        raise DataError(f"id(s) already in the index: {', '.join(clash[:5])}; remove them first or pick other ids")
    write_packed(folder, np.concatenate([index.words, pack_words(codes)]), [*index.ids.tolist(), *ids],
                 np.concatenate([index.labels, np.packbits(np.asarray(labels) > 0, axis=1)]),
                 [*index.refs.tolist(), *refs], index.meta, files, keep=CARRIED)
    return HammingIndex.load(folder)


def remove_entries(folder: str | Path, ids: list[str]) -> HammingIndex:
    index = HammingIndex.load(folder, mmap=False)
    rows = index.rows_of(ids)
    keep = np.ones(len(index), dtype=bool)
    keep[rows] = False
    write_packed(folder, index.words[keep], index.ids[keep].tolist(), index.labels[keep], index.refs[keep].tolist(),
                 index.meta, keep=CARRIED)
    return HammingIndex.load(folder)


# Approximate search, for indexes past one machine's exact-scan budget: faiss's inverted-file binary
# index (k-means over codes in Hamming space, then only `nprobe` of `nlist` lists are scanned).
def build_ivf(index: HammingIndex, nlist: int, train_size: int = 100_000, seed: int = 0):
    """A faiss IndexBinaryIVF over the index's codes (faiss is imported here only)."""
    import faiss

    data = np.ascontiguousarray(index.words).view(np.uint8)
    quantizer = faiss.IndexBinaryFlat(index.words.shape[1] * 64)
    ivf = faiss.IndexBinaryIVF(quantizer, index.words.shape[1] * 64, nlist)
    sample = np.random.default_rng(seed).choice(len(data), size=min(train_size, len(data)), replace=False)
    ivf.train(data[np.sort(sample)])
    ivf.add(data)
    return ivf


def approximate_search(ivf, query_words: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """-> ((q, k) rows, (q, k) distances); rows may be -1 where fewer than k were reached."""
    ivf.nprobe = nprobe
    distances, rows = ivf.search(np.ascontiguousarray(query_words).view(np.uint8), k)
    return rows, distances
