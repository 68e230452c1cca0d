"""Chapters 01 and 07's measurements: all-reduce times to calibrate the alpha-beta model,
and heterogeneous workers sharing one batch."""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..costmodel import heterogeneous_step
from ..data import even_shard_sizes, proportional_sizes, split_by_sizes
from ..formulas import average_losses


def measure_allreduce(rank: int, world_size: int, sizes_bytes, repeats: int = 10) -> dict[int, float]:
    """Median seconds of ``dist.all_reduce`` of float32 tensors of each size, on every rank."""
    timings = {}
    for nbytes in sizes_bytes:
        tensor = torch.ones(max(int(nbytes) // 4, 1))
        runs = max(3, repeats if nbytes < 2 ** 22 else repeats // 3)
        dist.all_reduce(tensor)  # warm-up: connections, buffers
        times = []
        for _ in range(runs):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(tensor)
            times.append(time.perf_counter() - start)
        timings[int(nbytes)] = statistics.median(times)
    return timings


def per_sample_losses(num_samples: int) -> np.ndarray:
    """Per-sample losses of an unshuffled batch that grow along it (the later samples are
    harder), which is what makes unequal shards' means disagree."""
    return 0.2 + 1.8 * np.linspace(0.0, 1.0, num_samples) ** 2


def heterogeneous_comparison(speeds: Sequence[float], global_batch: int = 120) -> dict:
    """Equal shards against shards in proportion to speed, for workers of the given speeds:
    the step (:func:`nnpar_lite.costmodel.heterogeneous_step`), and the batch's mean loss
    against the plain and the size-weighted mean of the shard losses."""
    losses, result = per_sample_losses(global_batch), {}
    for name, sizes in (("equal", even_shard_sizes(global_batch, len(speeds))),
                        ("proportional", proportional_sizes(global_batch, speeds))):
        shard_means = [float(s.mean()) for s in split_by_sizes(losses, sizes)]
        result[name] = {"sizes": sizes, **heterogeneous_step(speeds, sizes), "true loss": float(losses.mean()),
                        "plain mean of shard losses": float(average_losses(shard_means)),
                        "weighted mean of shard losses": float(average_losses(shard_means, weights=sizes))}
    return result
