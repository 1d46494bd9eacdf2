"""Data-parallel training under torchrun: who this process is, and the few collectives the loop needs.

The training loop (dsah.training.loop) runs unchanged in one process or in N: under torchrun (which sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address) every process draws the same samples and batch order
from the same seeded generators, takes its own contiguous share of each batch, and DistributedDataParallel
averages the gradients. The network outputs of the block are summed across processes (each row is
written by exactly one), so every process sees all of them in the discrete code update; each updates
its own share of the database rows (a row's update reads only that row), the shares are gathered, and
a checksum confirms that all processes hold identical codes.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from dsah.errors import ConfigError, DSAHError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The process that validates, logs, checkpoints and writes outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, length: int, rank: int | None = None) -> tuple[int, int]:
        """[start, stop) of this process's (or `rank`'s) contiguous share of `length` items."""
        rank = self.rank if rank is None else rank
        return length * rank // self.size, length * (rank + 1) // self.size

    def gather_rows(self, B: Tensor) -> Tensor:
        """Every process's own share of the rows of B (+-1 codes), joined on every process. Sent as
        int8, a quarter of float32."""
        if not self.distributed:
            return B
        shares = [self.share(len(B), rank) for rank in range(self.size)]
        longest = max(stop - start for start, stop in shares)
        start, stop = shares[self.rank]
        mine = torch.zeros(longest, B.shape[1], dtype=torch.int8, device=B.device)
        mine[:stop - start] = B[start:stop].to(torch.int8)
        pieces = [torch.empty_like(mine) for _ in range(self.size)]
        torch.distributed.all_gather(pieces, mine)
        return torch.cat([piece[:b - a] for piece, (a, b) in zip(pieces, shares)]).to(B.dtype)

    def sum(self, tensor: Tensor) -> Tensor:
        """In-place sum over all processes (identity in one process)."""
        if self.distributed:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def broadcast(self, value: object) -> object:
        """Rank 0's Python object, on every process."""
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def same_codes(self, B: Tensor, log: Callable[[str], None]) -> tuple[Tensor, bool]:
        """Confirm every process holds identical codes B (+-1); if not, take rank 0's and say so.

        The check is a row-weighted checksum per bit in float64 (exact for +-1 entries), compared by
        all-reducing its minimum and maximum: 2c numbers per outer iteration, not n x c, and no n x c
        temporary. Returns (codes, whether they had to be resynchronised)."""
        if not self.distributed:
            return B, False
        weights = (torch.arange(1, B.shape[0] + 1, device=B.device, dtype=torch.float64) * 7919) % 1_000_003
        checksum = torch.stack([(weights * B[:, k]).sum() for k in range(B.shape[1])])
        low, high = checksum.clone(), checksum.clone()
        torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
        if torch.equal(low, high):
            return B, False
        if self.is_main:
            log("distributed: the code update differed between processes; using rank 0's codes")
        B = B.contiguous()
        torch.distributed.broadcast(B, src=0)
        return B, True


def current_world() -> World:
    """The process group this process belongs to (one process when none was started)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return World(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


@contextmanager
def process_group(device: str = "auto") -> Iterator[World]:
    """Join the process group torchrun described in the environment (nccl on GPUs, gloo on CPUs) for
    the duration of the block; a plain one-process run passes through."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        yield World()
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs on this node: "
                              "start at most one process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        world = current_world()
        if world.is_main:
            print(f"distributed: {world.size} processes ({'nccl, one GPU each' if use_cuda else 'gloo, CPU'})",
                  file=sys.stderr, flush=True)
        yield world
    finally:
        torch.distributed.destroy_process_group()


def run_on_this_node(processes: int, argv: list[str]) -> None:
    """`torchrun --standalone --nproc_per_node=processes ARGV` (ARGV: a script and its arguments), through
    torch's launcher API, which leaves the script's own options alone."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # As torchrun does: processes sharing a node's cores should not each start a thread per core.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=str(uuid.uuid4()), max_restarts=0)
    try:
        elastic_launch(config, entrypoint=sys.executable)(*argv)
    except ChildFailedError as error:
        raise DSAHError(f"a training process failed (its error is above): {error.get_first_failure()[1].message}"
                        ) from None
