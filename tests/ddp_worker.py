"""A tiny DSAH run, in one process or in each process of `torchrun --nproc_per_node N`:
python ddp_worker.py OUT_PREFIX [CHECKPOINT]. Rank r writes OUT_PREFIX-rank<r>.npz (codes, losses,
validation mAP)."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from fixtures import easy_two_class_data, method_config, train_config  # noqa: E402

from dsah.training.distributed import process_group  # noqa: E402
from dsah.training.loop import train

# A global batch of 32: one process takes all of it, two take 16 rows each.
TINY = train_config(width=8, outer_iters=4, samples=128, epochs=2, batch=32, lr=0.01, eval_every=1, device="cpu")
SETTINGS = method_config("dsah", eta=0.5, mu=0.2, lam=0.5)

if __name__ == "__main__":
    torch.set_num_threads(1)
    prefix, checkpoint = sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None
    data, _ = easy_two_class_data()
    with process_group("cpu") as world:
        result = train(data, 8, TINY, "dsah", 3, SETTINGS, progress=False, checkpoint=checkpoint)
    np.savez(f"{prefix}-rank{world.rank}.npz", codes=result.codes.numpy(),
             loss=np.array([row["loss"] for row in result.history]),
             val_mAP=np.array([row.get("val_mAP", np.nan) for row in result.history]),
             processes=result.metrics["processes"], resyncs=result.metrics["code_resyncs"],
             seconds=result.metrics["train_seconds"])
