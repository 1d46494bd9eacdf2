"""Building the image store (format: dsah.data.store) from the prepared split table and the dataset's
image source.

Which reader fills it depends on where the pixels are. An image folder (COCO, NUS-WIDE) is decoded in
parallel, in chunks of rows, into a work folder outside the stage's output: a completed chunk is recorded
in the work folder's log, so a killed build continues where it stopped when the stage reruns (DVC deletes
a stage's outputs before rerunning it, never that folder), and only a complete store is moved into the
output. CIFAR-10 and its mosaics and scenes come from an archive read in one pass. A photo folder's (`dataset: folder`)
images are refused before any is decoded if a symbolic link leads one of them out of the folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dsah.config import checked
from dsah.data import cifar10, mosaic
from dsah.data.folder import check_inside
from dsah.data.imaging import POLICY, decode_square
from dsah.data.params import ImageSize, MaxSkipped
from dsah.data.store import SKIPPED_COLUMNS, SKIPPED_FILE, STORE_FILE, STORE_INFO, Skip
from dsah.errors import DataError
from dsah.io import atomic_path, file_digest, write_json

LOG = "chunks.jsonl"  # in the work folder: one line per completed chunk


def build_images(dataset: str, own, table_path: Path, table: pd.DataFrame, source: Path, size: int,
                 out: Path, work_root: Path, max_skipped: int, sources_digest: str,
                 progress: bool = True) -> list[Skip]:
    """Write the store for `table` (rows in store_index order) into `out`; returns the skipped images.

    work_root holds an image folder's partial build, keyed by the split table, size, decoding policy and
    source fingerprint, so only the same build is ever resumed."""
    checked(f"images.size.{dataset}", size, ImageSize)  # as the stage read them: callers may pass their own
    checked("images.max_skipped", max_skipped, MaxSkipped)
    table = table.sort_values("store_index", kind="stable")
    if (table["store_index"].to_numpy() != range(len(table))).any():
        raise DataError(f"{table_path}: store_index is not 0..{len(table) - 1}; run the prepare stage again")
    refs = table["image"].tolist()
    out.mkdir(parents=True, exist_ok=True)
    info = {"dataset": dataset, "available": True, "size": size, "rows": len(refs)}
    if dataset in ("cifar10", "cifar10-mosaic", "cifar10-scenes"):  # an archive: read in one pass, all must decode
        reader = (cifar10.store_images(source, refs, size) if dataset == "cifar10" else
                  mosaic.store_images(source, refs, size, own.grid))
        build_from_arrays(reader, len(refs), size, out / STORE_FILE, progress)
        write_store(out, out / STORE_FILE, table, [], {**info, "source": "archive"})
        return []
    if dataset == "folder":  # a user's photo folder: a link out of it would store (and serve) a foreign file
        check_inside(source, refs)
    key = store_key(file_digest(table_path), size, POLICY, sources_digest)
    built, skips = build_from_folder(source, refs, size, clear_work(work_root, key), max_skipped=max_skipped,
                                     progress=progress)
    write_store(out, built, table, skips, {**info, "source": "folder"})
    clear_work(work_root, keep="")  # done: nothing is left to resume
    return skips


def store_key(*parts: object) -> str:
    """Names a build in the work folder: what the store depends on (split table, size, policy, sources)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def chunk_size(rows: int, workers: int) -> int:
    """Rows per chunk: small enough to keep every worker busy and a killed build cheap to resume."""
    return max(4, min(256, -(-rows // (workers * 8))))


def decode_rows(partial: str, root: str, start: int, refs: list[str], size: int) -> list[tuple[int, str]]:
    """A worker's chunk: decode root/ref for rows start.. into the partial store; unreadable images are
    returned as (row, reason) and their rows left black."""
    store = np.load(partial, mmap_mode="r+")
    skipped = []
    for offset, ref in enumerate(refs):
        try:
            # the dataset's own files, not uploads: no pixel limit beyond PIL's decompression-bomb guard
            store[start + offset] = decode_square(Path(root) / ref, size, name=ref, max_pixels=None)
        except DataError as error:
            store[start + offset] = 0
            skipped.append((start + offset, str(error).removeprefix(f"{ref}: ")))
    store.flush()  # on disk before the parent records the chunk as done
    return skipped


def _done_chunks(log: Path) -> tuple[np.ndarray, list[Skip]]:
    """Rows recorded as done in the work folder's log, and their skips (a torn last line is ignored)."""
    if not log.is_file():
        return np.zeros(0, dtype=np.int64), []
    done, skips = [], []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        done.append(np.arange(entry["start"], entry["stop"]))
        skips += [Skip(row, reason) for row, reason in entry["skipped"]]
    return (np.concatenate(done) if done else np.zeros(0, dtype=np.int64)), skips


def build_from_folder(root: Path, refs: list[str], size: int, work: Path, workers: int | None = None,
                      max_skipped: int = 0, progress: bool = True, log: Callable[[str], None] = print
                      ) -> tuple[Path, list[Skip]]:
    """Decode root/refs[r] into row r of work/images.npy, resuming a build the work folder already holds.
    Returns the complete store's path and the skipped rows. More than `max_skipped` unreadable images is
    a DataError listing the first of them (the work folder is kept: fix the files and rerun)."""
    workers = workers or os.cpu_count() or 1
    partial, record = work / STORE_FILE, work / LOG
    work.mkdir(parents=True, exist_ok=True)
    if not partial.is_file():
        np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(refs), size, size, 3)).flush()
        record.unlink(missing_ok=True)
    done, skips = _done_chunks(record)
    todo = np.setdiff1d(np.arange(len(refs)), done)
    if len(done):
        log(f"images: resuming: {len(refs) - len(todo)} of {len(refs)} images are already in {work}")
    step = chunk_size(len(todo), workers)
    chunks = [todo[i:i + step] for i in range(0, len(todo), step)]
    # A chunk is a contiguous run of rows unless an earlier build left holes: split where it jumps.
    chunks = [part for chunk in chunks for part in np.split(chunk, np.flatnonzero(np.diff(chunk) != 1) + 1)]

    def too_many() -> DataError:
        first = "; ".join(f"{refs[s.row]}: {s.reason}" for s in skips[:3])
        return DataError(f"images under {root} are missing or unreadable ({len(skips)} found, more than "
                         f"images.max_skipped: {max_skipped}), e.g. {first}. Restore them, or allow the build to "
                         "skip them with images.max_skipped (the protocol is then named as reduced)")

    bar = tqdm(total=len(refs), initial=len(refs) - len(todo), desc=f"images {size}px", unit="img",
               disable=not progress, mininterval=1.0)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool, open(record, "a") as journal:
        pending = iter(chunks)
        running = {}

        def submit() -> None:
            chunk = next(pending, None)
            if chunk is not None:
                job = pool.submit(decode_rows, str(partial), str(root), int(chunk[0]),
                                  [refs[r] for r in chunk], size)
                running[job] = chunk

        for _ in range(workers * 2):  # a bounded queue: a kill loses at most these chunks
            submit()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for job in finished:
                chunk = running.pop(job)
                found = job.result()
                skips += [Skip(row, reason) for row, reason in found]
                journal.write(json.dumps({"start": int(chunk[0]), "stop": int(chunk[-1]) + 1,
                                          "skipped": found}) + "\n")
                journal.flush()
                bar.update(len(chunk))
                if len(skips) > max_skipped:
                    for other in running:
                        other.cancel()
                    raise too_many()
                submit()
    bar.close()
    if len(skips) > max_skipped:  # resumed with more skips than allowed now
        raise too_many()
    return partial, sorted(skips, key=lambda s: s.row)


def build_from_arrays(images: Iterable[tuple[int, np.ndarray]], rows: int, size: int, out: Path,
                      progress: bool = True) -> None:
    """Rows from a reader that yields (row, (size, size, 3) uint8) in any order (an archive read in one
    pass); every row must come exactly once."""
    store = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(rows, size, size, 3))
    seen = np.zeros(rows, dtype=bool)
    for row, pixels in tqdm(images, total=rows, desc=f"images {size}px", unit="img", disable=not progress,
                            mininterval=1.0):
        store[row] = pixels
        seen[row] = True
    store.flush()
    del store
    if not seen.all():
        missing = int((~seen).sum())
        raise DataError(f"{missing} of {rows} images of the split table were not found in the source")


def write_store(folder: Path, built: Path, table: pd.DataFrame, skips: list[Skip], info: dict) -> None:
    """Move a complete store into the output folder with its skip list and store.json (written last)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.replace(built, folder / STORE_FILE)
    by_row = table.set_index("store_index")
    with atomic_path(folder / SKIPPED_FILE) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SKIPPED_COLUMNS)
        for skip in skips:
            row = by_row.loc[skip.row]
            writer.writerow([row["id"], row["image"], row["split"], bool(row["validation"]), skip.row, skip.reason])
    write_json({**info, "policy": POLICY, "skipped": len(skips)}, folder / STORE_INFO)


def clear_work(work_root: Path, keep: str) -> Path:
    """The work folder of this build; other builds' leftovers (another size or split) are removed."""
    if work_root.is_dir():
        for stale in work_root.iterdir():
            if stale.name != keep:
                shutil.rmtree(stale, ignore_errors=True)
    return work_root / keep
