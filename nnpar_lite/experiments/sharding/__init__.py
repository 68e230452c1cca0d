"""Chapter 08's runs (sharding), one module per topic:

    reference   the tied and frozen network, the batches, unsharded training in one process
    zero        ZeRO-1 and ZeRO-2 against AdamW and PyTorch's ``ZeroRedundancyOptimizer``
    fsdp        FSDP against AdamW and PyTorch's FSDP2, in fp32 and in mixed precision
    rings       the ring reduce-scatter and all-gather against torch.distributed's
    memory      the bytes each rank holds and sends per ZeRO stage, against the calculator

The algorithms are in :mod:`nnpar_lite.sharding`; here is only what runs, compares and
measures them. Every name the chapter uses is importable from here
(``from nnpar_lite.experiments import sharding as runs``).
"""

from __future__ import annotations

from typing import Any

from .fsdp import _fsdp2_full, _fully_shard, fsdp_against_unsharded  # noqa: F401  (the private two: test workers)
from .memory import (MEMORY_SIZES, PARTS, alive_tensors, counting_sends, held_bytes, memory_and_traffic,
                     memory_table, storage_bytes)
from .reference import (TiedFrozenNet, build_model, first_ranks, global_batches, make_optimizer, my_part,
                        train_unsharded, two_groups)
from .rings import rings_against_torch
from .zero import zero_against_adamw

WORKERS = {worker.__name__: worker for worker in (rings_against_torch, zero_against_adamw, fsdp_against_unsharded,
                                                  memory_and_traffic)}


def sharding_runs(rank: int, world_size: int, runs: list[tuple[str, Any]]) -> list:
    """Several of the chapter's workers (:data:`WORKERS`) in one launch (each launch costs
    seconds): ``[(worker name, its argument), …]`` → their results, in order."""
    unknown = [name for name, _ in runs if name not in WORKERS]
    if unknown:
        raise ValueError(f"no sharding worker named {unknown}; the workers are {sorted(WORKERS)}")
    return [WORKERS[name](rank, world_size, argument) for name, argument in runs]


__all__ = ["fsdp_against_unsharded", "MEMORY_SIZES", "PARTS", "alive_tensors", "counting_sends", "held_bytes",
           "memory_and_traffic", "memory_table", "storage_bytes", "TiedFrozenNet", "build_model", "first_ranks",
           "global_batches", "make_optimizer", "my_part", "train_unsharded", "two_groups", "rings_against_torch",
           "zero_against_adamw", "WORKERS", "sharding_runs"]
