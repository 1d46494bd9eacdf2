"""Benchmark for a GPU: outer iterations of the training loop at 224 px from a memory-mapped image store,
with every training step checked for host-device syncs. Writes JSON.

Needs only torch, numpy and this repository (PYTHONPATH=src): a synthetic store of n noise images at
224 px is written to disk, then dsah.training.loop.train runs DSAH with sync_check=True, which turns any operation
of the training steps that makes the host wait for the GPU into an error (torch.cuda.set_sync_debug_mode)
— the proof that the hot loop never stalls. Measured twice: with the store resident on the GPU (it fits)
and streamed from the memory map (each outer iteration reads its sampled block into pinned memory).
On a CPU it runs too (sync_check is a no-op there), as a check of the script.

    PYTHONPATH=src python bench/gpu_stream.py --images 20000 --out bench/results/gpu_stream.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PARAMS, project_config, write_result  # noqa: E402

from dsah.data.loading import ImageRows  # noqa: E402
from dsah.settings import method_settings  # noqa: E402
from dsah.settings import FROM_SCRATCH, TrainConfig  # noqa: E402
from dsah.training.loop import TrainData, train


def store_file(folder: Path, n: int, size: int) -> np.ndarray:
    """n noise images of size x size on disk, memory-mapped (noise: timings do not depend on content)."""
    store = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    block = np.random.default_rng(0).integers(0, 256, (512, size, size, 3), dtype=np.uint8)
    for start in range(0, n, len(block)):
        store[start:start + len(block)] = block[:n - start]
    store.flush()
    return np.load(folder / "images.npy", mmap_mode="r")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="database images in the store")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=2000, help="train_imgnet.samples")
    parser.add_argument("--iterations", type=int, default=2, help="outer iterations")
    parser.add_argument("--width", type=int, default=16, help="cifar_resnet width")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dsah-gpu-stream-") as folder:  # the store is GBs: never left behind
        measure(args, Path(folder))


def measure(args: argparse.Namespace, folder: Path) -> None:
    start = time.perf_counter()
    store = store_file(folder, args.images, args.size)
    print(f"store: {args.images} x {args.size} px ({store.nbytes / 1e9:.1f} GB) in {time.perf_counter() - start:.0f} s")
    rng = np.random.default_rng(1)
    labels = torch.from_numpy((rng.random((args.images, 20)) < 0.1).astype(np.float32))
    labels[labels.sum(1) == 0, 0] = 1
    config = project_config("train_imgnet", TrainConfig, **FROM_SCRATCH, width=args.width,
                            outer_iters=args.iterations, samples=args.samples, epochs=1, eval_every=0)
    settings = method_settings(PARAMS, "adsh")  # DSAH's loop and code update without the LAE's inputs
    results = []
    for mode, budget in (("resident", 0.25), ("streamed", 0.0)):  # streamed: every block from the memory map
        data = TrainData(images=ImageRows(store, np.arange(args.images)), labels=labels,
                         pool=torch.arange(1000, args.images), validation=torch.arange(1000))
        tick = time.perf_counter()
        result = train(data, 32, config, "adsh", 0, settings, progress=False, sync_check=True, resident_budget=budget)
        seconds = time.perf_counter() - tick
        metrics = result.metrics
        results.append({"mode": mode, "train_seconds": metrics["train_seconds"], "wall_seconds": seconds,
                        "images_per_second": metrics["images_per_second"], "device": metrics["device"],
                        "sync_check": torch.cuda.is_available()})
        checked = "on: no step waited for the GPU" if torch.cuda.is_available() else "off: no GPU"
        print(f"{mode}: {metrics['images_per_second']:.0f} images/s over {args.iterations} outer iterations on "
              f"{metrics['device']} (sync check {checked})")
    write_result(args.out, {"benchmark": "training from a memory-mapped store, steps checked for host syncs",
                            "images": args.images, "size": args.size, "samples": args.samples,
                            "width": args.width, "results": results})


if __name__ == "__main__":
    main()
