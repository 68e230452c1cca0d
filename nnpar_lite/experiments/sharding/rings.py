"""Chapter 08's rings (the reduce-scatter and all-gather ZeRO and FSDP run on) against
torch.distributed's own collectives, in four dtypes; which of torch's run on this backend."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

from ...collectives import all_gather, reduce_scatter
from ...util import max_abs_difference
from .reference import first_ranks


def rings_against_torch(rank: int, world_size: int, config: dict) -> dict | None:
    """This module's ring reduce-scatter and all-gather against torch.distributed's own, on
    chunks of each length in ``config["lengths"]``: the largest difference per dtype (the
    ring adds in another order, so float sums agree to rounding), and which of torch's
    collectives ran here."""
    group, rank, world_size = first_ranks(config, rank, world_size)
    if rank is None:
        return None
    largest: dict[str, float] = {}
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        for length in config["lengths"]:
            whole = torch.randn(world_size * length, generator=torch.Generator().manual_seed(100 * rank + length))
            whole = whole.to(dtype)
            ours, theirs = [(reduce_scatter(whole.new_empty(length), whole, use_ring=ring, group=group),
                             all_gather(whole.new_empty(world_size * length), whole[:length], use_ring=ring,
                                        group=group)) for ring in (True, False)]
            largest[name] = max(max_abs_difference(list(ours), list(theirs)), largest.get(name, 0.0))
    return {"largest difference": largest, "torch collectives": _native_collectives(world_size, group)}


def _native_collectives(world_size: int, group=None) -> dict[str, bool]:
    """Which of torch.distributed's reduce-scatter and all-gather into one tensor run on this
    backend (gloo or NCCL), by trying them."""
    found = {}
    for name in ("reduce_scatter_tensor", "all_gather_into_tensor", "reduce_scatter_single", "all_gather_single"):
        fn = getattr(dist, name, None)
        if fn is None:
            found[name] = False
            continue
        big, small = torch.ones(2 * world_size), torch.ones(2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")          # the older names are deprecated in newer torch
                fn(small, big, group=group) if "reduce" in name else fn(big, small, group=group)
            found[name] = True
        except (RuntimeError, ValueError):
            found[name] = False
    return found
