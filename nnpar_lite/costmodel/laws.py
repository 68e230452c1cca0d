"""How a parallel step scales: compute against communication, with and without overlap;
efficiency; Amdahl's and Gustafson's laws; workers of different speeds (chapters 01 and 07)."""

from __future__ import annotations

from typing import Sequence

from ..util import real_number, whole_number


def overlap_hides_communication(compute_backward: float, communication: float) -> bool:
    """Data parallelism with buckets launched during the backward pass (as DDP does) hides
    the all-reduce when it takes no longer than the backward computation after the first
    bucket is ready; to first order, when communication ≤ backward time."""
    return communication <= compute_backward


def data_parallel_step_time(compute: float, communication: float, *, overlap: bool = False) -> float:
    """One data-parallel step: compute, then communicate (``overlap=False``, as
    ``allreduce_gradients`` after backward does), or both at once (``overlap=True``,
    DDP's buckets during backward at best): compute + comm, or max(compute, comm)."""
    return max(compute, communication) if overlap else compute + communication


def scaling_efficiency(time_one: float, time_p: float, world_size: int) -> float:
    """Strong scaling efficiency: speed-up / p = t₁ / (p · t_p)."""
    return time_one / (whole_number("world_size", world_size) * time_p)


def amdahl_speedup(parallel_fraction: float, workers: float) -> float:
    """Amdahl 1967, a fixed problem: S = 1 / ((1 − f) + f / p)."""
    real_number("parallel_fraction", parallel_fraction, minimum=0, maximum=1)
    return 1.0 / ((1 - parallel_fraction) + parallel_fraction / workers)


def gustafson_speedup(parallel_fraction: float, workers: float) -> float:
    """Gustafson 1988, the problem grows with p (fixed time): S = (1 − f) + f p."""
    real_number("parallel_fraction", parallel_fraction, minimum=0, maximum=1)
    return (1 - parallel_fraction) + parallel_fraction * workers


def heterogeneous_step(speeds: Sequence[float], sizes: Sequence[int]) -> dict:
    """Synchronous data parallelism with workers of different speeds (samples per second):
    each computes its shard in n_i / s_i, and the step waits for the slowest. Returns each
    worker's compute time, the step time and the idle share of the workers' time."""
    if len(speeds) != len(sizes):
        raise ValueError(f"give one speed per shard: {len(speeds)} speeds for {len(sizes)} shards")
    for i, speed in enumerate(speeds):
        real_number(f"the speed of worker {i}", speed, above=0)
    compute = [n / s for n, s in zip(sizes, speeds)]
    step = max(compute)
    return {"compute": compute, "step": step, "idle": 1 - sum(compute) / (len(compute) * step)}
