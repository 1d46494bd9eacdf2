"""DVC stage `features`: fixed image features for the classic methods (ITQ, SDH, KSH).

Methods that learn from the images get a marker only (their plan says so), so switching between them
never reruns this stage. Features are extracted once per extractor and size; DVC's run-cache keeps them.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from dsah.config import load_params
from dsah.data.loading import load_prepared
from dsah.device import select_device
from dsah.errors import exit_on_error
from dsah.nets.features import describe, extract
from dsah.io import read_json, save_array, write_json
from dsah.settings import FeaturesConfig


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these)."""
    return params.section("features", FeaturesConfig)


@exit_on_error("features")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    parser.add_argument("--images", type=Path, required=True, help="folder written by images (the store)")
    parser.add_argument("--plan", type=Path, required=True, help="features.json written by plan")
    parser.add_argument("--out", type=Path, required=True, help="folder: database.npy, query.npy, meta.json")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.iterdir():
        old.unlink()
    if not read_json(args.plan, "plan")["used"]:
        write_json({"used": False, "why": "the chosen method learns from the images"}, args.out / "meta.json")
        print("features: not used by the chosen method (skipped)")
        return
    options = read_params(load_params(args.params))
    device = select_device(options.device, key="features.device")
    data = load_prepared(args.prepared, args.images)
    start = time.perf_counter()
    dims = {}
    for name, split in (("database", data.database), ("query", data.query)):
        features = extract(options.extractor, data.images(split), options.size, options.weights, options.batch,
                           device).astype(np.float32)
        dims[name] = features.shape
        save_array(features, args.out / f"{name}.npy")
    seconds = time.perf_counter() - start
    images, dim = dims["database"][0] + dims["query"][0], dims["database"][1]
    description = describe(options.extractor, options.size, dim)
    write_json({"used": True, "extractor": options.extractor, "weights": options.weights, "size": options.size,
                "batch": options.batch, "device": str(device), "dim": dim, "description": description,
                "seconds": seconds, "images_per_second": images / max(seconds, 1e-9)}, args.out / "meta.json")
    print(f"features: {description} for {images} images in {seconds:.0f} s "
          f"({images / max(seconds, 1e-9):.0f} images/s) -> {args.out}")


if __name__ == "__main__":
    main()
