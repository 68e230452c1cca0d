"""The first real processes the chapters start: who is who, and a rank that fails on purpose."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..distributed import on_rank_device, rank_device


@on_rank_device
def whoami(rank: int, world_size: int) -> dict:
    """Each rank reports who it is, and the sum of all ranks by an all-reduce (on a GPU of its
    own under NCCL, on the CPU under gloo)."""
    total = torch.tensor([float(rank)], device=rank_device(rank))
    dist.all_reduce(total)
    return {"rank": rank, "world_size": world_size, "pid": os.getpid(), "backend": dist.get_backend(),
            "sum of ranks": total.item()}


def fail_on_rank(rank: int, world_size: int, bad_rank: int) -> int:
    """Rank ``bad_rank`` raises; the others wait in a collective that never completes."""
    if rank == bad_rank:
        raise ValueError(f"rank {rank} was told to fail")
    dist.barrier()
    return rank
