"""DAPH (Shen et al., ACM MM 2017): DSAH's loss and code update with two networks instead of one."""

from __future__ import annotations

from torch import Tensor

from dsah.methods.dsah import DSAH


class DAPH(DSAH):
    """Deep asymmetric pairwise hashing (Shen et al., ACM MM 2017), on this loop: two networks, F for
    queries and G for the database, trained together with discrete updates of the database codes B.
    F(x_i) . b_j follows the label similarity; G(x_j) is pulled to b_j, so images added later get
    codes from G. The original's bit balance/independence regularizers are left out (docs/training.md)."""

    twin = True

    def split(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        return outputs[:, :self.bits], outputs[:, self.bits:]
