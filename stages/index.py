"""DVC stage `index`: the search index users query (`dsah search`, `dsah serve`) and add to (`dsah add`).

Database codes packed in 64-bit words and memory-mapped, ids, labels and image references (the image
store's rows, or paths in the user's folder). What users added and removed (the additions store,
dsah.search.additions) is merged in on every build: the added images encoded with this model, the removed
database images left out. With `index.backend: milvus` the codes also go into a new Milvus collection named
after the model's version, the alias searches use moves to it once it is complete, and the folder's
milvus.json says what the collection holds (dsah.search.milvus).
"""

import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from dsah.search.additions import merge, read_store
from dsah.codes import load_codes
from dsah.config import Device, load_params
from dsah.data.loading import load_prepared
from dsah.data.store import STORE_FILE
from dsah.errors import DataError, exit_on_error
from dsah.search.index import HammingIndex, write_index
from dsah.settings import IndexConfig

BATCH = 256  # added images decoded at a time


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these)."""
    return params.value("method", str), params.value("encode.device", Device), params.section("index", IndexConfig)


def encoder_of(model: Path, device: str, side: int):
    """image files -> +-1 codes, as `dsah add` encodes them (the trained model's database side); the model
    loads only when there are added images."""
    def encode(files: list[Path]) -> np.ndarray:
        from dsah.device import select_device
        from dsah.search.image_encoder import ImageEncoder, read_images

        encoder = ImageEncoder(model, select_device(device, key="encode.device"))
        return np.concatenate([encoder(read_images(files[start:start + BATCH], side), side="database")
                               for start in range(0, len(files), BATCH)])
    return encode


@exit_on_error("index")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    parser.add_argument("--images", type=Path, required=True, help="folder written by images (the store)")
    parser.add_argument("--codes", type=Path, required=True, help="folder written by encode")
    parser.add_argument("--model", type=Path, required=True, help="model from train (encodes the added images)")
    parser.add_argument("--additions", type=Path, required=True, help="the additions store (dsah.search.additions)")
    parser.add_argument("--out", type=Path, required=True, help="index folder")
    args = parser.parse_args()
    method, device, config = read_params(load_params(args.params))

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
    merged = merge(read_store(args.additions), meta["dataset"], meta["classes"], ids, codes, data.database.labels,
                   refs, encoder_of(args.model, device, side or 224))
    meta["additions"] = os.path.relpath(args.additions, args.out)  # where the added images' originals are
    write_index(args.out, merged.codes, merged.ids, merged.labels, merged.refs, meta, merged.files)
    where = ""
    if config.backend == "milvus":
        from dsah.search.milvus import MilvusSettings, publish

        version = hashlib.md5(args.model.read_bytes()).hexdigest()
        manifest = publish(HammingIndex.load(args.out), MilvusSettings(config.milvus_uri, config.collection,
                                                                       config.milvus_index, config.nlist), version)
        where = f"; on Milvus at {config.milvus_uri}: collection {manifest['collection']} (alias {config.collection})"
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"index: {len(merged.ids)} codes of {codes.shape[1]} bits ({merged.added} added, {merged.removed} removed "
          f"by users) in {time.perf_counter() - start:.1f} s, {size / 1e6:.1f} MB "
          f"({-(-codes.shape[1] // 64) * 8} bytes of code each: whole 64-bit words) -> {args.out}{where}")


if __name__ == "__main__":
    main()
