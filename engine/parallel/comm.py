"""The collectives a tensor-parallel rank uses, over torch.distributed.

Two groups: `group` carries the model's tensors (NCCL on CUDA, gloo on the CPU) with a
finite timeout; `control` (gloo, CPU) carries rank 0's per-step messages, pickled, and has
a long timeout because workers wait on it while the engine is idle. A peer that dies closes
its sockets, so a wait on either group fails at once rather than at the timeout.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class TPComm:
    def __init__(self, rank: int, size: int, group: Any, control: Any) -> None:
        self.rank = rank
        self.size = size
        self.group = group
        self.control = control

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (row-parallel outputs, the vocab-parallel embedding)."""
        dist.all_reduce(x, group=self.group)
        return x

    def gather_last_dim(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's x side by side along the last dim (the LM head's vocab shards)."""
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x, group=self.group)
        return torch.cat(parts, dim=-1)

    def min_int(self, value: int) -> int:
        """The smallest of every rank's value (KV blocks: each rank's memory may differ)."""
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.control)
        return int(t.item())

    def send(self, message: Any) -> None:
        """Rank 0: one message to every worker."""
        dist.broadcast_object_list([message], src=0, group=self.control)

    def receive(self) -> Any:
        """Workers: the next message from rank 0 (waits while the engine is idle)."""
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]
