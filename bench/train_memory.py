"""Benchmark: the train stage's peak anonymous memory at two database sizes. Writes JSON.

For n = 20,000 and 200,000 database images (plus 1,000 queries), a prepared folder and a 64-px image
store are written (labels drawn from the real COCO label table; pixels are noise: memory does not depend
on them), then the real stage scripts run on them: train_lae, then train (DSAH, two outer iterations).
The train process's RssAnon is sampled from /proc every 20 ms: memory-mapped store pages are the page
cache's (RssFile), not the process's. Goal: the larger within 1.3x of the smaller.

    python bench/train_memory.py --coco-labels $DSAH_DATA_HOME/coco-hashing-labels.tsv.gz \
        --out bench/results/train_memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from dsah.data.coco import COCO_CLASSES, read_coco_labels  # noqa: E402
from dsah.data.table import write_table  # noqa: E402
from dsah.io import write_json  # noqa: E402

SIZE, QUERIES, VALIDATION = 64, 1000, 1000


def make_data(folder: Path, n: int, labels: pd.Series, rng: np.random.Generator) -> None:
    """prepared/ (split table, meta) and images/ (the store) for n database images and the queries."""
    rows = n + QUERIES
    picked = labels.to_numpy()[rng.integers(0, len(labels), rows)]
    split = np.where(np.arange(rows) < QUERIES, "query", "database")
    validation = np.zeros(rows, dtype=bool)
    validation[QUERIES:QUERIES + VALIDATION] = True
    table = pd.DataFrame({"id": [f"img{i:07d}" for i in range(rows)], "split": split, "validation": validation,
                          "labels": picked, "image": [f"synthetic/{i:07d}.jpg" for i in range(rows)],
                          "store_index": np.arange(rows)})
    write_table(table, folder / "prepared" / "split.csv")
    write_json({"dataset": "coco", "protocol": f"synthetic-{n}", "base_protocol": "coco", "family": "coco",
                "subset": 0, "stand_in": True, "classes": list(COCO_CLASSES), "notes": ["synthetic: a benchmark"]},
               folder / "prepared" / "meta.json")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    store = np.lib.format.open_memmap(folder / "images" / "images.npy", mode="w+", dtype=np.uint8,
                                      shape=(rows, SIZE, SIZE, 3))
    block = rng.integers(0, 256, (1000, SIZE, SIZE, 3), dtype=np.uint8)
    for start in range(0, rows, len(block)):
        store[start:start + len(block)] = block[:rows - start]
    store.flush()
    del store
    write_json({"dataset": "coco", "available": True, "size": SIZE, "rows": rows, "skipped": 0},
               folder / "images" / "store.json")
    (folder / "models" / "plan").mkdir(parents=True, exist_ok=True)
    write_json({"used": True}, folder / "models" / "plan" / "lae.json")


def status(pid: int) -> dict[str, int]:
    """The process's memory lines from /proc, in kB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def run_sampled(command: list[str], cwd: Path) -> dict[str, float]:
    """Run a command, sampling its memory every 20 ms; the peaks in MB and the wall time."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    while process.poll() is None:
        try:
            for key, value in status(process.pid).items():
                peak[key] = max(peak[key], value)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.02)
    output = process.stdout.read()
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {"peak_RssAnon_MB": peak["RssAnon"] / 1024, "peak_RssFile_MB": peak["RssFile"] / 1024,
            "VmHWM_MB": peak["VmHWM"] / 1024, "seconds": time.perf_counter() - start,
            "last_line": output.strip().splitlines()[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-labels", type=Path, required=True, help="coco-hashing-labels.tsv.gz (real labels)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--samples", type=int, default=2000, help="train_imgnet.samples")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    labels = read_coco_labels(args.coco_labels)["labels"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(dataset="coco", method="dsah", bits=12)
    params["train_imgnet"].update(outer_iters=2, samples=args.samples, eval_every=1)
    params["train_lae"].update(steps=300)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dsah-memory-bench-"))
    results = []
    for n in args.sizes:
        folder = workdir / f"n{n}"
        shutil.rmtree(folder, ignore_errors=True)
        make_data(folder, n, labels, np.random.default_rng(n))
        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        python = [sys.executable]
        common = ["--params", "params.yaml", "--prepared", "prepared", "--images", "images"]
        run_sampled([*python, str(ROOT / "stages" / "train_lae.py"), *common, "--plan", "models/plan/lae.json",
                     "--model", "models/lae.pt", "--codes", "models/label_codes.npy", "--metrics", "lae.json"], folder)
        measured = run_sampled([*python, str(ROOT / "stages" / "train.py"), *common, "--features", "features",
                                "--lae", "models/lae.pt", "--label-codes", "models/label_codes.npy",
                                "--model", "models/model.pt", "--codes", "models/database_codes.npy",
                                "--live", "live", "--metrics", "train.json",
                                "--checkpoint", "models/checkpoints/train.pt"], folder)
        train = json.loads((folder / "train.json").read_text())
        results.append({"database": n, "queries": QUERIES, "store_MB": (n + QUERIES) * SIZE * SIZE * 3 / 1e6,
                        **{k: v for k, v in measured.items() if k != "last_line"},
                        "train_seconds": train["train_seconds"], "val_mAP": train["val_mAP"]})
        print(f"n = {n}: peak RssAnon {measured['peak_RssAnon_MB']:.0f} MB, peak RssFile "
              f"{measured['peak_RssFile_MB']:.0f} MB (store {results[-1]['store_MB']:.0f} MB), "
              f"{measured['seconds']:.0f} s; {measured['last_line']}")
        shutil.rmtree(folder)
    ratio = results[-1]["peak_RssAnon_MB"] / results[0]["peak_RssAnon_MB"]
    print(f"peak anonymous memory, largest / smallest: {ratio:.2f}x (goal: at most 1.3x)")
    write_result(args.out, {
        "benchmark": "train stage peak anonymous memory (stages/train.py, DSAH, 2 outer iterations, 64 px store)",
        "train_imgnet": params["train_imgnet"], "results": results, "ratio_largest_to_smallest": ratio,
        "goal": "<= 1.3",
    })


if __name__ == "__main__":
    main()
