"""DVC stage `encode`: the query codes from the trained model, and the database codes.

Queries get sign(F(x)) (a classic method: the hash of their features). The database keeps the learned
codes B, or, with encode.database: network, the network's codes of every database image, as images
added later get (DAPH: its database network).
"""

import argparse
import time
from pathlib import Path

import numpy as np

from dsah.codes import save_codes
from dsah.config import load_params
from dsah.data.loading import load_prepared
from dsah.device import select_device
from dsah.training.encode import encode
from dsah.errors import exit_on_error
from dsah.search.model import load_model
from dsah.settings import EncodeConfig


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these)."""
    return params.section("encode", EncodeConfig)


@exit_on_error("encode")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    parser.add_argument("--images", type=Path, required=True, help="folder written by images (the store)")
    parser.add_argument("--features", type=Path, required=True, help="folder written by features (classic methods)")
    parser.add_argument("--model", type=Path, required=True, help="model from train")
    parser.add_argument("--database-codes", type=Path, required=True, help="learned database codes B (.npy)")
    parser.add_argument("--out", type=Path, required=True, help="folder: query.npz, database.npz (packed, with ids)")
    args = parser.parse_args()
    options = read_params(load_params(args.params))

    data = load_prepared(args.prepared, args.images)
    model, saved = load_model(args.model)
    start = time.perf_counter()
    db_codes, mode = np.load(args.database_codes, allow_pickle=False), "learned"
    if saved["kind"] == "classic":  # the hash function of the fixed features; its database codes are learned
        query_codes = model.encode(np.load(args.features / "query.npy", allow_pickle=False))
    else:
        device = select_device(options.device, key="encode.device")
        model = model.to(device)
        query_codes = encode(model, data.images(data.query), device).cpu().numpy().astype(np.int8)
        if options.database == "network":
            mode = "network"
            db_codes = encode(model, data.images(data.database), device, side="database").cpu().numpy().astype(np.int8)
    save_codes(args.out / "query.npz", data.query.ids, query_codes)
    save_codes(args.out / "database.npz", data.database.ids, db_codes)
    print(f"encode: {len(query_codes)} queries ({time.perf_counter() - start:.1f} s), "
          f"{len(db_codes)} database codes ({mode}) -> {args.out}")


if __name__ == "__main__":
    main()
