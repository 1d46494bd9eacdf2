"""Benchmark: how training time scales with n (database size), m (sampled points), c (bits), the number
of label patterns g and the number of data-parallel processes; fits the throughput model of docs/gpu.md.

Two measured parts of one outer iteration (METHOD.md §4):
  network   E m images forward and backward, shared by the processes (DDP): seconds = E m / (G r_G)
  context   per iteration, on every process: the block's similarity to the g label patterns, B^T B and
            the per-pattern sums of B: seconds ~ a n c^2 + b g m + d n c + e
  update    the discrete update of B: seconds ~ a n c^2 / G + b g m c + d n c / G + e (the bit-wise
            sweep is a (n x c) by (c) product per bit over the process's share of the rows; the targets
            go through the label patterns, (g x m) by (m x c), on every process); the shares are then
            all-gathered (n c bytes, not modelled)
Images, labels and codes are SYNTHETIC (random pixels; labels with the NUS-WIDE-21 concept profile for the
multi-label points); only timings are measured. Writes JSON.

    python bench/scaling.py --out bench/results/scaling_cpu.json [--processes 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from dsah.methods.code_update import block_targets, update_codes  # noqa: E402
from dsah.methods.dsah import IterationContext  # noqa: E402
from dsah.similarity import LabelPatterns  # noqa: E402

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"

# NUS-WIDE-21 concept frequencies (the public label list's column means), for multi-label patterns.
NUS_PROFILE = 0.5 * 0.85 ** np.arange(21)


def labels_with_patterns(n: int, kind: str, rng: np.random.Generator) -> torch.Tensor:
    if kind == "single":  # CIFAR-10-like: 10 classes, 10 patterns
        return torch.from_numpy(np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)])
    labels = rng.random((n, len(NUS_PROFILE))) < NUS_PROFILE
    labels[~labels.any(axis=1), 0] = True
    return torch.from_numpy(labels.astype(np.float32))


def time_code_update(n: int, m: int, c: int, kind: str, device: torch.device, repeats: int,
                     shares: int = 1) -> dict:
    """Seconds of one process's two per-iteration parts when `shares` processes split the rows:
    `context` (similarity to the label patterns, B^T B, per-pattern sums: every process, all rows) and
    `update` (the bit-wise update of its 1/shares of the rows)."""
    rng = np.random.default_rng(0)
    labels = labels_with_patterns(n, kind, rng).to(device)
    patterns = LabelPatterns.from_labels(labels.cpu()).to(device)
    omega = torch.from_numpy(rng.choice(n, m, replace=False)).to(device)
    U = torch.tanh(torch.randn(m, c, device=device))
    B = torch.where(torch.randn(n, c, device=device) >= 0, 1.0, -1.0)

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    context, update = [], []
    for _ in range(repeats):
        start = clock()
        similar = patterns.similarity(labels[omega])
        IterationContext.build(B, patterns, similar)
        targets = block_targets(similar, patterns)
        middle = clock()
        update_codes(B, U, omega, similar, patterns, targets, gamma=200.0, rows=(0, n // shares))
        context.append(middle - start)
        update.append(clock() - middle)
    return {"n": n, "m": m, "bits": c, "labels": kind, "patterns": int(len(patterns.counts)), "shares": shares,
            "context_seconds": min(context), "update_seconds": min(update),
            "seconds": min(context) + min(update)}


# Cost terms of each part (G: processes sharing the rows; g: label patterns).
CONTEXT_TERMS = ("n*c^2", "g*m", "n*c", "1")
UPDATE_TERMS = ("n*c^2/G", "g*m*c", "n*c/G", "1")


def terms(part: str, n: int, m: int, c: int, g: int, shares: int) -> list[float]:
    if part == "context":
        return [n * c**2, g * m, n * c, 1.0]
    return [n * c**2 / shares, g * m * c, n * c / shares, 1.0]


def fit(part: str, rows: list[dict]) -> dict:
    """Non-negative least squares, relative to each time, of one part's seconds over its cost terms."""
    X = np.array([terms(part, r["n"], r["m"], r["bits"], r["patterns"], r["shares"]) for r in rows])
    y = np.array([r[f"{part}_seconds"] for r in rows])
    relative = X / y[:, None]
    best = None  # the best fit over every subset of the terms with non-negative coefficients
    for subset in itertools.product((False, True), repeat=X.shape[1]):
        columns = np.flatnonzero(subset)
        if not len(columns):
            continue
        solution, *_ = np.linalg.lstsq(relative[:, columns], np.ones_like(y), rcond=None)
        if (solution < 0).any():
            continue
        coefficients = np.zeros(X.shape[1])
        coefficients[columns] = solution
        residual = float(np.sum((relative @ coefficients - 1) ** 2))
        if best is None or residual < best[0]:
            best = (residual, coefficients)
    coefficients = best[1]
    predicted = X @ coefficients
    names = CONTEXT_TERMS if part == "context" else UPDATE_TERMS
    return {"seconds": " + ".join(f"{k}*{t}" for k, t in zip("abde", names)),
            **dict(zip("abde", coefficients.tolist())),
            "max_relative_error": float(np.max(np.abs(predicted - y) / y)), "predicted": predicted.tolist()}


def code_seconds(models: dict, n: int, m: int, c: int, g: int, devices: int) -> float:
    return sum(float(np.dot([models[part][k] for k in "abde"], terms(part, n, m, c, g, devices)))
               for part in ("context", "update"))


NETWORK_RUN = """
import dataclasses, json, sys, time
import numpy as np, torch
from dsah.config import load_params
from dsah.training.distributed import process_group
from dsah.settings import method_settings
from dsah.settings import FROM_SCRATCH, TrainConfig
from dsah.training.loop import TrainData, train
n, samples, width, device, out, threads = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                                           sys.argv[5], int(sys.argv[6]))
params = load_params(sys.argv[7])  # the project's params.yaml: the defaults of every other knob
torch.set_num_threads(threads)
rng = np.random.default_rng(0)
labels = torch.from_numpy(np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)])
data = TrainData(images=torch.from_numpy(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)), labels=labels,
                 pool=torch.arange(500, n), validation=torch.arange(500))
config = dataclasses.replace(params.section("train_imgnet", TrainConfig), **FROM_SCRATCH, width=width, outer_iters=3,
                             samples=samples, epochs=1, batch=128, eval_every=0, device=device)
with process_group(device) as world:
    result = train(data, 12, config, "adsh", 0, method_settings(params, "adsh"), progress=False, log=lambda _: None)
if world.is_main:
    # The first iteration pays for warm-up (allocations, kernel selection): rate over the later ones.
    seconds = [row["train_seconds"] for row in result.history]
    steady = (seconds[-1] - seconds[0]) / (len(seconds) - 1)
    json.dump({"processes": world.size, "threads_per_process": threads, "seconds_per_iteration": steady, "images_per_second": samples / steady,
               "device": result.metrics["device"]}, open(out, "w"))
"""


def time_network(processes: int, threads: int, n: int, samples: int, width: int, device: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "network.json"
        args = [str(n), str(samples), str(width), device, str(out), str(threads), str(PARAMS_FILE)]
        script = Path(folder) / "network_run.py"
        script.write_text(NETWORK_RUN)
        launcher = [sys.executable] + (["-m", "torch.distributed.run", "--standalone",
                                        f"--nproc_per_node={processes}"] if processes > 1 else [])
        subprocess.run([*launcher, str(script), *args], check=True)
        return json.loads(out.read_text())


def predict(model: dict, network_rate: float, n: int, m: int, c: int, g: int, epochs: int, outer: int,
            devices: int, scaling_efficiency: float) -> dict:
    codes = code_seconds(model, n, m, c, g, devices)
    network = epochs * m / (network_rate * devices * (scaling_efficiency if devices > 1 else 1.0))
    return {"n": n, "m": m, "bits": c, "patterns": g, "epochs": epochs, "outer_iters": outer, "devices": devices,
            "network_seconds_per_iteration": network, "code_update_seconds_per_iteration": codes,
            "codes_gathered_bytes_per_iteration": n * c if devices > 1 else 0,
            "training_seconds": outer * (network + codes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (the code update and the network)")
    parser.add_argument("--width", type=int, default=16, help="cifar_resnet width of the timed network")
    parser.add_argument("--samples", type=int, default=2048, help="m for the network timing")
    parser.add_argument("--quick", action="store_true", help="a small grid (for the test suite)")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and device.type == "cpu":
        print("scaling: no GPU available: timing on the CPU", file=sys.stderr)
    repeats = 1 if args.quick else 2
    if args.quick:
        grid = [(2_000, 200, 12, "single", 1), (4_000, 200, 12, "single", 1), (2_000, 400, 24, "multi", 2)]
    else:
        grid = ([(n, 2_000, 48, "multi", 1) for n in (20_000, 100_000, 400_000, 1_000_000)]
                + [(100_000, m, 48, "multi", 1) for m in (500, 1_000, 4_000, 8_000)]
                + [(100_000, 2_000, c, "multi", 1) for c in (12, 24, 96)]
                + [(n, 2_000, 48, "single", 1) for n in (100_000, 1_000_000)]
                + [(1_000_000, 2_000, 48, "multi", shares) for shares in (2, 8)])
    code_rows = []
    for n, m, c, kind, shares in grid:
        code_rows.append(time_code_update(n, m, c, kind, device, repeats, shares))
        print(f"code update n={n} m={m} c={c} {kind} ({code_rows[-1]['patterns']} patterns) 1/{shares} of the rows: "
              f"{code_rows[-1]['seconds']:.3f} s", flush=True)
    model = {"context": fit("context", code_rows), "update": fit("update", code_rows)}
    network_device = "cuda" if device.type == "cuda" else "cpu"
    # On CPUs each process gets one thread and stands for one device; the last entry is one process
    # with every core, for reference.
    runs = [(p, 1) for p in args.processes] + ([(1, os.cpu_count() or 1)] if network_device == "cpu" else [])
    network = []
    for processes, threads in runs:
        network.append(time_network(processes, threads, 2_000 if args.quick else 10_000,
                                    256 if args.quick else args.samples, 4 if args.quick else args.width,
                                    network_device))
        print(f"network {processes} process(es) x {threads} thread(s): "
              f"{network[-1]['images_per_second']:.0f} images/s", flush=True)
    rate = network[0]["images_per_second"]  # one device
    widest = max(network[:len(args.processes)], key=lambda r: r["processes"])
    efficiency = widest["images_per_second"] / (rate * widest["processes"]) if widest["processes"] > 1 else 1.0
    predictions = {
        # NUS-WIDE-21 at 48 bits: ADSH's schedule (m 2,000, 3 epochs, 50 outer iterations)
        f"nuswide21_48bits_{g}_devices": predict(model, rate, 193_734, 2_000, 48, 22_050, 3, 50, g, efficiency)
        for g in (1, 2, 8)
    } | {
        f"collection_1e7_64bits_{g}_devices": predict(model, rate, 10_000_000, 8_000, 64, 100_000, 1, 50, g, efficiency)
        for g in (1, 8)
    }
    write_result(args.out, {
        "benchmark": "scaling", "data": "synthetic images, labels and codes (timings only)",
        "code_update": code_rows, "code_model": model, "network": network,
        "network_backbone": f"cifar_resnet width {4 if args.quick else args.width}, 32x32 images, batch 128",
        "data_parallel_efficiency": efficiency, "predictions": predictions,
        "prediction_notes": f"devices like this run's ({network_device}: one process with one thread each on "
                            "CPUs); network rate of one device, data-parallel efficiency from the largest "
                            "process count measured; each process updates 1/G of the rows (the targets per "
                            "label pattern on every process) and the int8 codes are all-gathered, whose "
                            "time is not modelled",
    })


if __name__ == "__main__":
    main()
