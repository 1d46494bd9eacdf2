"""DVC stage `index`: the search index users query (`dsah search`, `dsah serve`) and add to (`dsah add`).

Database codes packed in 64-bit words and memory-mapped, ids, labels and image references (the image
store's rows, or paths in the user's folder).
"""

import argparse
import os
import time
from pathlib import Path

from dsah.codes_io import load_codes
from dsah.config import load_params
from dsah.data.loading import load_prepared
from dsah.data.store import STORE_FILE
from dsah.errors import DataError, exit_on_error
from dsah.index import write_index


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these)."""
    return params.value("method", str)


@exit_on_error("index")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    parser.add_argument("--images", type=Path, required=True, help="folder written by images (the store)")
    parser.add_argument("--codes", type=Path, required=True, help="folder written by encode")
    parser.add_argument("--out", type=Path, required=True, help="index folder")
    args = parser.parse_args()
    method = read_params(load_params(args.params))

    data = load_prepared(args.prepared, args.images)
    start = time.perf_counter()
    ids, codes = load_codes(args.codes / "database.npz")
    if ids != data.database.ids:
        raise DataError(f"{args.codes}: its database ids differ from {args.prepared}'s; rerun encode")
    table = data.database.table
    store = data.store is not None
    refs = [f"store:{row}" for row in table["store_index"]] if store else table["image"].tolist()
    side = data.meta.get("image_size")
    meta = {"bits": int(codes.shape[1]), "classes": data.meta["classes"], "dataset": data.meta["dataset"],
            "protocol": data.meta["protocol"],
            "method": method,  # the image store, relative to the index folder (moves with the project)
            "store": os.path.relpath(args.images / STORE_FILE, args.out) if store else None,
            # new images are decoded as the store's were (dsah.data.imaging), at its size
            "image_shape": [side, side, 3] if side else None, "built": "index stage"}
    write_index(args.out, codes, ids, data.database.labels, refs, meta)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"index: {len(ids)} codes of {codes.shape[1]} bits in {time.perf_counter() - start:.1f} s, "
          f"{size / 1e6:.1f} MB ({-(-codes.shape[1] // 64) * 8} bytes of code each: whole 64-bit words) -> {args.out}")


if __name__ == "__main__":
    main()
