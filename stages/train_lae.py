"""DVC stage `train_lae`: train the label auto-encoder on the database labels (METHOD.md §1).

Writes the LAE, the label codes H_Y of the database (one row per database image) and its metrics; for
methods without an LAE (the plan says so), markers only, so DVC has its outputs and nothing reads them.
"""

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dsah.config import load_params
from dsah.data.loading import load_prepared
from dsah.errors import exit_on_error
from dsah.io import atomic_path, read_json, save_array, write_json
from dsah.training.lae import train_lae
from dsah.settings import DSAH_TARGETS, LAEConfig, Targets


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these): DSAH's targets too, which
    its LAE's pairwise term follows."""
    return (params.value("bits", int), params.value("seed", int), params.section("train_lae", LAEConfig),
            params.value(DSAH_TARGETS, Targets))


@exit_on_error("train_lae")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    parser.add_argument("--images", type=Path, required=True, help="folder written by images (the store)")
    parser.add_argument("--plan", type=Path, required=True, help="lae.json written by plan")
    parser.add_argument("--model", type=Path, required=True, help="LAE weights (.pt)")
    parser.add_argument("--codes", type=Path, required=True, help="label codes H_Y of the database (.npy)")
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args()

    if not read_json(args.plan, "plan")["used"]:
        with atomic_path(args.model) as tmp:
            torch.save({"used": False}, tmp)
        save_array(np.zeros((0, 0), dtype=np.int8), args.codes)
        write_json({"used": False}, args.metrics)
        print("train_lae: the chosen method does not use the label auto-encoder (skipped)")
        return
    bits, seed, config, targets = read_params(load_params(args.params))
    data = load_prepared(args.prepared, args.images)
    start = time.perf_counter()
    result = train_lae(data.database.labels, bits, config, seed, targets=targets)
    seconds = time.perf_counter() - start
    with atomic_path(args.model) as tmp:
        torch.save({"used": True, "state_dict": result.model.state_dict(), "config": asdict(config), "bits": bits,
                    "targets": targets,
                    "num_classes": data.database.labels.shape[1], "classes": data.meta["classes"]}, tmp)
    save_array(result.label_codes, args.codes)
    write_json({"used": True, **result.metrics, "seconds": seconds, "bits": bits}, args.metrics)
    m = result.metrics
    print(f"train_lae: {m['distinct_label_vectors']} label vectors -> {m['distinct_codes']} codes, "
          f"reconstruction {m['reconstruction_exact']:.3f}, bit balance {m['bit_balance']:.3f}, "
          f"mAC {m['mAC']:.3f} in {seconds:.1f} s")


if __name__ == "__main__":
    main()
