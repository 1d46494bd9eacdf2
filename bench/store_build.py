"""Benchmark: building the image store from COCO-like photos on this machine. Writes JSON.

The photos are 640 x 480 JPEGs of about 150 KB made of native-resolution CIFAR-10 tiles (tests/fixtures.py,
make_coco_like_jpegs): real pixels, so they decode about as slowly as real photos. The store is built
by the images stage's own code (dsah.data.build.build_from_folder: all cores, JPEG draft decoding) at
224 px and 64 px; beside it, plain one-process PIL decoding (full decode, convert, resize) of the same
photos. Goal: COCO's 122,218 images at 224 px in at most 5 minutes (>= 400 images/s).

    python bench/store_build.py --archive $DSAH_DATA_HOME/cifar10-jpg.tar.xz --count 5000 \
        --out bench/results/store_build_cpu.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))  # the photo builder the tests use
from common import write_result  # noqa: E402
from fixtures import make_coco_like_jpegs  # noqa: E402

from dsah.data.build import build_from_folder  # noqa: E402

COCO_IMAGES = 122_218


def plain_pil(paths: list[Path], size: int) -> float:
    """Seconds for the textbook loop: open, decode every pixel, convert, resize the centre square."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            side = min(rgb.size)
            left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
            np.asarray(rgb.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, required=True, help="the CIFAR-10 JPEG archive (tiles)")
    parser.add_argument("--count", type=int, default=5000, help="photos to build the store from")
    parser.add_argument("--plain", type=int, default=1000, help="photos for the plain-PIL comparison")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    parser.add_argument("--workdir", type=Path, help="where the photos go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dsah-store-bench-"))
    folder = workdir / "train2014"
    start = time.perf_counter()
    paths = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if len(paths) < args.count:
        shutil.rmtree(folder, ignore_errors=True)
        paths = make_coco_like_jpegs(folder, args.archive, args.count)
    paths = paths[:args.count]
    made = time.perf_counter() - start
    refs = [p.relative_to(workdir).as_posix() for p in paths]
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    with Image.open(paths[0]) as first:
        shape = first.size
    print(f"{len(paths)} photos of {shape[0]}x{shape[1]}, {megabytes / len(paths) * 1000:.0f} KB each on average "
          f"({made:.0f} s to make)")
    results = []
    for size in args.sizes:
        plain = plain_pil(paths[:args.plain], size)
        plain_rate = args.plain / plain
        shutil.rmtree(workdir / "work", ignore_errors=True)
        os.sync()  # the photos are in the page cache for both: this measures decoding, not the disk
        start = time.perf_counter()
        store, skipped = build_from_folder(workdir, refs, size, workdir / "work", progress=False, log=lambda _: None)
        seconds = time.perf_counter() - start
        assert not skipped and np.load(store, mmap_mode="r").shape == (len(refs), size, size, 3)
        rate = len(refs) / seconds
        results.append({
            "size": size, "images": len(refs), "seconds": seconds, "images_per_second": rate,
            "input_MB_per_second": megabytes / seconds, "store_MB": len(refs) * size * size * 3 / 1e6,
            "plain_pil_one_process": {"images": args.plain, "seconds": plain, "images_per_second": plain_rate},
            "speedup_over_plain": rate / plain_rate,
            "coco_122218_minutes_projected": COCO_IMAGES / rate / 60,
        })
        print(f"{size} px: {rate:.0f} images/s ({megabytes / seconds:.0f} MB/s of JPEG) with {os.cpu_count()} "
              f"workers; plain one-process PIL {plain_rate:.0f} images/s; COCO in {COCO_IMAGES / rate / 60:.1f} min")
    shutil.rmtree(workdir / "work", ignore_errors=True)
    write_result(args.out, {
        "benchmark": "image store build (dsah.data.build.build_from_folder) from COCO-like photos",
        "photos": {"count": len(paths), "width": shape[0], "height": shape[1],
                   "mean_KB": megabytes / len(paths) * 1000, "source": "CIFAR-10 tiles at native resolution"},
        "goal": ">= 400 images/s at 224 px (COCO in 5 minutes)",
        "results": results,
    })


if __name__ == "__main__":
    main()
