"""What the one training loop (dsah.training.loop) asks of a deep hashing method.

A method is its loss terms, its code-update step and its settings. The loop samples, batches,
augments, steps the optimizer, checkpoints and logs; the method only says what to minimize, how its
network ends (head, one network or two), and, for asymmetric methods, how the database codes change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dsah.similarity import LabelPatterns


@dataclass
class Resources:
    """What the whole training run shares, on the training device."""

    labels: Tensor                      # (n, C) float 0/1, every database image
    patterns: LabelPatterns             # the database's label patterns
    label_codes: Tensor | None = None   # (n, c) H_Y from the label auto-encoder (DSAH only)
    decoder: nn.Module | None = None    # the frozen LAE decoder (DSAH only)


@dataclass
class Batch:
    rows: Tensor              # (b,) database rows of the batch
    positions: Tensor         # (b,) their positions in the sampled block
    labels: Tensor            # (b, C)
    codes: Tensor | None      # (b, c) their database codes B, for methods that keep B


class DeepMethod:
    """Defaults describe a method that keeps no database codes: after training, the database is encoded
    with the network, sign(F(x)), as queries are."""

    name = ""
    keeps_codes = False   # learns the database codes B directly (asymmetric methods)
    twin = False          # two networks: outputs are [query network | database network]

    def __init__(self, settings: Any, bits: int):
        self.settings, self.bits = settings, bits
        self.res: Resources | None = None

    def bind(self, resources: Resources) -> None:
        self.res = resources

    def head(self, in_features: int) -> nn.Module | None:
        """The network's last layer; None is the standard tanh-linear hash layer."""
        return None

    def initial_codes(self, n: int, generator: torch.Generator) -> Tensor | None:
        return None

    def begin_iteration(self, B: Tensor | None, omega: Tensor) -> Any:
        """Per outer iteration, before training on the sampled block omega (m,) of database rows."""
        return None

    def before_step(self, model: nn.Module, step: int, total: int) -> None:
        """Per optimizer step, before the forward pass (e.g. a continuation schedule)."""

    def terms(self, outputs: Tensor, batch: Batch, state: Any) -> dict[str, Tensor]:
        """The weighted loss terms for a batch; the loss is their sum."""
        raise NotImplementedError

    def summary(self) -> dict[str, float]:
        """Numbers of the method's own for the run's metrics (train.json), e.g. how its terms were scaled."""
        return {}

    def state(self) -> dict[str, Any]:
        """What the method learned while training besides the network and B (checkpointed), as tensors."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore state() from a checkpoint."""

    def update_codes(self, B: Tensor | None, outputs: Tensor, omega: Tensor, state: Any,
                     rows: tuple[int, int] | None = None) -> Tensor | None:
        """After training on the block: the new database codes (outputs: (m, k) of the block). rows
        (start, stop): update only those rows, the others are kept (data-parallel shares)."""
        return B

