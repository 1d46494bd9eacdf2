"""DVC stage `images`: the prepared split's images -> the image store (data/images/).

Every image of the protocol, queries and database, is decoded once by one policy (dsah.data.imaging) into
a memory-mapped uint8 array at images.size.<dataset> px, in the row the split table gave it. Image folders
are decoded in parallel and resumably: a killed build continues from the work folder when `dvc repro`
reruns the stage. Missing or unreadable images are an error, or skipped up to images.max_skipped and
listed in skipped.csv.
"""

import argparse
import json
import time
from pathlib import Path

from dsah.config import load_params
from dsah.data.build import build_images
from dsah.data.params import ImageSize, MaxSkipped, source_params
from dsah.data.prepare import checked_sources
from dsah.data.sources import obtain
from dsah.data.store import STORE_INFO
from dsah.data.table import TABLE_FILE, prepared_meta, read_table
from dsah.errors import exit_on_error
from dsah.io import file_digest, write_json


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these)."""
    dataset, download, own = source_params(params)
    return (dataset, download, own, params.value(f"images.size.{dataset}", ImageSize),
            params.value("images.max_skipped", MaxSkipped))


@exit_on_error("images")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    parser.add_argument("--sources", type=Path, required=True, help="the fingerprint the sources stage wrote")
    parser.add_argument("--out", type=Path, required=True, help="folder: images.npy, skipped.csv, store.json")
    parser.add_argument("--work", type=Path, required=True, help="a partial build's folder (outside every output)")
    args = parser.parse_args()
    dataset, download, own, size, max_skipped = read_params(load_params(args.params))

    meta = prepared_meta(args.prepared, dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    if not meta["images"]["available"]:
        write_json({"dataset": dataset, "available": False, "rows": 0, "skipped": 0}, args.out / STORE_INFO)
        print(f"images: {dataset} is labels-only here (no image folder was found): no image store")
        return
    found, _ = checked_sources(dataset, own, download, json.loads(args.sources.read_text())["sources"])
    source = obtain(found["images"]).path
    start = time.perf_counter()
    skips = build_images(dataset, own, args.prepared / TABLE_FILE, read_table(args.prepared / TABLE_FILE),
                         source, size, args.out, args.work, max_skipped, file_digest(args.sources))
    rows = len(read_table(args.prepared / TABLE_FILE))
    seconds = time.perf_counter() - start
    print(f"images: {rows} images at {size} px in {seconds:.1f} s ({rows / max(seconds, 1e-9):.0f} images/s)"
          f"{f', {len(skips)} skipped (see skipped.csv)' if skips else ''} -> {args.out}")


if __name__ == "__main__":
    main()
