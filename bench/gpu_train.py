"""Benchmark: DSAH and ADSH on CIFAR-10 (ADSH protocol) at several code lengths. Writes one JSON.

Runs on a machine with only torch, torchvision, numpy, pandas, pyyaml, pillow and tqdm (no dvc, prefect or
great_expectations): PYTHONPATH=src python bench/gpu_train.py --archive cifar10-jpg.tar.xz --out r.json

Protocol: 100 queries per class (1,000), the other 59,000 images are the database; 1,000 database images
form the validation slice (held out of training sampling). mAP over the whole database, P@5000, mAC.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PARAMS, machine, project_config, write_result  # noqa: E402

from dsah.data.cifar10 import read_cifar10  # noqa: E402
from dsah.data.splits import choose_queries_per_class, choose_validation  # noqa: E402
from dsah.device import select_device  # noqa: E402
from dsah.training.encode import encode  # noqa: E402
from dsah.training.lae import train_lae  # noqa: E402
from dsah.settings import LAEConfig, TrainConfig  # noqa: E402
from dsah.settings import FROM_SCRATCH, method_settings  # noqa: E402
from dsah.evaluation.metrics import mean_absolute_correlation, ranking_metrics  # noqa: E402
from dsah.training.loop import TrainData, train

PROFILES = {
    # Paper-scale schedule (ADSH: m = 2000, T = 50, E = 3) with a wider CIFAR ResNet.
    "gpu": dict(FROM_SCRATCH, width=64, outer_iters=50, samples=2000, epochs=3, batch=128, lr=0.002, eval_every=10),
    # params.yaml's own recipe (the 2-core CPU default).
    "default": {},
    # The test suite's smoke run on the CPU.
    "tiny": dict(FROM_SCRATCH, width=8, outer_iters=2, samples=32, epochs=1, batch=32, lr=0.01, eval_every=1),
}


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


@dataclasses.dataclass
class Cifar:
    """The ADSH protocol's split of CIFAR-10, images on the training device."""

    db_images: torch.Tensor
    q_images: torch.Tensor
    db_labels: np.ndarray
    q_labels: np.ndarray
    validation: np.ndarray  # database rows of the validation slice (bool)


def load_cifar(archive: Path, device: torch.device, queries_per_class: int = 100, validation: int = 1000) -> Cifar:
    data = read_cifar10(archive)
    query = choose_queries_per_class(data.ids, data.classes, queries_per_class, seed=0)
    db_ids = [i for i, q in zip(data.ids, query) if not q]
    held_out = choose_validation(db_ids, np.ones(len(db_ids), dtype=bool), validation, seed=0)
    labels = np.eye(10, dtype=np.float32)[data.classes]
    return Cifar(torch.from_numpy(np.ascontiguousarray(data.images[~query].transpose(0, 3, 1, 2))).to(device),
                 torch.from_numpy(np.ascontiguousarray(data.images[query].transpose(0, 3, 1, 2))).to(device),
                 labels[~query], labels[query], held_out)


def run_one(cifar: Cifar, bits: int, method: str, seed: int, config: TrainConfig, settings, device: torch.device,
            score_queries: bool = True) -> dict:
    """Train one method (DSAH: its LAE first, timed apart) and score its query codes against the database.
    Without score_queries, only the validation slice is scored (choosing settings never touches queries):
    the row has val_mAP and the per-iteration validation curve (`curve`: [train seconds, val_mAP])."""
    lae_start = time.perf_counter()
    lae = train_lae(cifar.db_labels, bits, project_config("train_lae", LAEConfig), seed=seed, progress=False,
                    targets=settings.targets) if method == "dsah" else None
    lae_seconds = time.perf_counter() - lae_start
    train_data = TrainData(cifar.db_images, torch.from_numpy(cifar.db_labels),
                           torch.from_numpy(np.flatnonzero(~cifar.validation)),
                           torch.from_numpy(np.flatnonzero(cifar.validation)),
                           torch.from_numpy(lae.label_codes) if lae else None, lae.model.decoder if lae else None)
    result = train(train_data, bits, config, method, seed, settings, progress=False)
    if not score_queries:
        return {"method": method, "bits": bits, "seed": seed, "val_mAP": result.metrics["val_mAP"],
                "train_seconds": result.metrics["train_seconds"], "lae_seconds": lae_seconds,
                "images_per_second": result.metrics["images_per_second"],
                "curve": [[row["train_seconds"], row["val_mAP"]] for row in result.history if "val_mAP" in row]}
    query_codes = encode(result.model, cifar.q_images, device).cpu().numpy()
    db_codes = result.codes.cpu().numpy()
    scores = ranking_metrics(query_codes, db_codes, cifar.q_labels, cifar.db_labels, precision_at=(5000,))
    spec = result.model.spec
    result.model.spec = dataclasses.replace(spec, test_flips=not spec.test_flips)  # the same weights, queries encoded the other way
    other = encode(result.model, cifar.q_images, device).cpu().numpy()
    other_map = ranking_metrics(other, db_codes, cifar.q_labels, cifar.db_labels)["mAP"]
    result.model.spec = spec
    return {"method": method, "bits": bits, "seed": seed, **scores,
            "mAP_" + ("without" if config.test_flips else "with") + "_test_flips": other_map,
            "mAC_database": mean_absolute_correlation(db_codes)[0], "mAC_query": mean_absolute_correlation(query_codes)[0],
            "val_mAP": result.metrics["val_mAP"], "train_seconds": result.metrics["train_seconds"],
            "images_per_second": result.metrics["images_per_second"], "lae_seconds": lae_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, help="CIFAR-10 archive (python or image-folder format)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--bits", type=int, nargs="+", default=[12, 24, 36, 48])
    parser.add_argument("--methods", nargs="+", default=["dsah", "adsh"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="gpu")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of params.yaml's train_imgnet or of the methods' settings (each method "
                             "takes its own keys)")
    parser.add_argument("--queries-per-class", type=int, default=100)
    parser.add_argument("--validation", type=int, default=1000)
    args = parser.parse_args()

    overrides = {**PROFILES[args.profile], **{k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}}
    loop_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    config = project_config("train_imgnet", TrainConfig, **{k: v for k, v in overrides.items() if k in loop_keys})

    def settings(method: str):  # params.yaml's methods.<method>, with the overrides it has keys for
        own = method_settings(PARAMS, method)
        return dataclasses.replace(own, **{k: v for k, v in overrides.items() if hasattr(own, k)})
    device = select_device(config.device)

    start = time.perf_counter()
    cifar = load_cifar(Path(args.archive), device, args.queries_per_class, args.validation)
    load_seconds = time.perf_counter() - start

    runs = []
    for bits in args.bits:
        for method in args.methods:
            for seed in args.seeds:
                runs.append(run_one(cifar, bits, method, seed, config, settings(method), device))
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in runs[-1].items()}, flush=True)
    means = {}
    for method in args.methods:
        for bits in args.bits:
            chosen = [r for r in runs if r["method"] == method and r["bits"] == bits]
            means[f"{method}/{bits}"] = {k: float(np.mean([r[k] for r in chosen]))
                                         for k in ("mAP", "P@5000", "mAC_database", "train_seconds")}
    write_result(args.out, {
        "benchmark": "cifar10_train", "protocol": "ADSH: 1,000 queries (100/class), 59,000 database",
        "archive": Path(args.archive).name, "profile": args.profile, "config": dataclasses.asdict(config),
        "load_seconds": load_seconds, "runs": runs, "means": means, "device_name": machine()["device"],
    })


if __name__ == "__main__":
    main()
