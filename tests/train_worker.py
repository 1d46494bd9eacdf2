"""A tiny training run in its own process (for kill-and-resume tests): python train_worker.py OUT CKPT."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from fixtures import easy_two_class_data, method_config, train_config  # noqa: E402

from dsah.training.loop import train

TINY = train_config(width=8, outer_iters=6, samples=96, epochs=2, batch=32, lr=0.01, eval_every=0)
SETTINGS = method_config("dsah", eta=0.5, mu=0.2, lam=0.5)

if __name__ == "__main__":
    torch.set_num_threads(1)
    out, checkpoint = Path(sys.argv[1]), Path(sys.argv[2])
    data, _ = easy_two_class_data()
    result = train(data, 8, TINY, "dsah", 3, SETTINGS, checkpoint=checkpoint, progress=False)
    np.save(out, result.codes.numpy())
