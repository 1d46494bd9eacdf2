"""Benchmark: training the label auto-encoder on the real MS-COCO labels (122,218 x 80). Writes JSON.

    python bench/lae_coco.py --labels $DSAH_DATA_HOME/coco-hashing-labels.tsv.gz --out bench/results/lae_coco_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import project_config, write_result  # noqa: E402

from dsah.data.coco import read_coco_labels  # noqa: E402
from dsah.data.labels import matrix  # noqa: E402
from dsah.training.lae import train_lae  # noqa: E402
from dsah.settings import LAEConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True, help="COCO label table or annotations")
    parser.add_argument("--out", required=True)
    parser.add_argument("--bits", type=int, nargs="+", default=[12, 48])
    args = parser.parse_args()
    labels = matrix(read_coco_labels(Path(args.labels)))
    labels = labels[labels.sum(axis=1) > 0]
    config = project_config("train_lae", LAEConfig)
    runs = []
    for bits in args.bits:
        start = time.perf_counter()
        result = train_lae(labels, bits, config, seed=0, progress=False)
        runs.append({"bits": bits, "seconds": time.perf_counter() - start, **result.metrics})
        print(runs[-1])
    write_result(args.out, {"benchmark": "lae_coco", "rows": int(len(labels)), "classes": int(labels.shape[1]),
                            "config": config.__dict__, "runs": runs, "limit_seconds": 30})


if __name__ == "__main__":
    main()
