"""Cost formulas: communication (the alpha-beta model) and pipeline schedules.

alpha-beta model (Hockney 1994; Thakur et al. 2005): sending n bytes between
two processes takes α + n·β, α the latency, β the time per byte (1/bandwidth).
Every formula here returns seconds (or a fraction), given α, β and sizes;
chapter 06 measures α and β on the learner's machine.
"""

from __future__ import annotations

import numbers


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
    return int(value)


def bubble_fraction(num_stages: int, num_microbatches: int) -> float:
    """The idle share of a GPipe (or 1F1B) pipeline step: (p − 1) / (m + p − 1).

    With p stages and m micro-batches each stage works m time slots of the
    m + p − 1 that the step lasts (Huang et al. 2019, GPipe).
    """
    p, m = _positive_int("num_stages", num_stages), _positive_int("num_microbatches", num_microbatches)
    return (p - 1) / (m + p - 1)


def pipeline_step_time(num_stages: int, num_microbatches: int, forward_time: float, backward_time: float) -> float:
    """Duration of one GPipe or 1F1B step with equal stages: (m + p − 1)(t_f + t_b)."""
    p, m = _positive_int("num_stages", num_stages), _positive_int("num_microbatches", num_microbatches)
    return (m + p - 1) * (forward_time + backward_time)


def peak_activations(num_stages: int, num_microbatches: int, stage: int, schedule: str) -> int:
    """Micro-batches whose activations stage ``stage`` holds at its peak.

    GPipe runs all m forwards before any backward: m. 1F1B starts backwards as
    soon as it can: at most p − stage (Narayanan et al. 2019, PipeDream-Flush).
    """
    p, m = _positive_int("num_stages", num_stages), _positive_int("num_microbatches", num_microbatches)
    if not 0 <= stage < p:
        raise ValueError(f"stage must be in 0..{p - 1}, got {stage}")
    if schedule == "gpipe":
        return m
    if schedule == "1f1b":
        return min(p - stage, m)
    raise ValueError(f"schedule must be 'gpipe' or '1f1b', got {schedule!r}")


def ring_allreduce_time(nbytes: float, world_size: int, alpha: float, beta: float) -> float:
    """All-reduce of n bytes over p processes by the ring: 2(p − 1) α + 2 (p − 1)/p · n β.

    2(p − 1) steps (reduce-scatter, then all-gather), each sending a chunk of n/p
    bytes to the next process (Patarasuk & Yuan 2009).
    """
    p = _positive_int("world_size", world_size)
    if nbytes < 0 or alpha < 0 or beta < 0:
        raise ValueError("nbytes, alpha and beta must be ≥ 0")
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes * beta


# ------------------------------------------------------------- collectives
def tree_allreduce_time(nbytes: float, world_size: int, alpha: float, beta: float) -> float:
    """Reduce to a root along a binary tree, then broadcast back: 2 ⌈log₂ p⌉ (α + n β).

    Fewer latency terms than the ring for many processes, but the whole message
    crosses every level: good for small messages, poor for large ones.
    """
    p = _positive_int("world_size", world_size)
    levels = (p - 1).bit_length()  # ⌈log₂ p⌉
    return 2 * levels * (alpha + nbytes * beta)


def parameter_server_time(nbytes: float, world_size: int, alpha: float, beta: float) -> float:
    """One server, p − 1 workers (Li et al. 2014): every worker sends its n bytes to the
    server and receives the result; the server's link carries 2 (p − 1) n bytes in turn:
    2 (p − 1)(α + n β)."""
    p = _positive_int("world_size", world_size)
    return 2 * (p - 1) * (alpha + nbytes * beta)


ALLREDUCE_TIMES = {"ring": ring_allreduce_time, "tree": tree_allreduce_time,
                   "parameter server": parameter_server_time}


def fit_alpha_beta(nbytes, seconds, world_size: int = 2) -> tuple[float, float]:
    """α and β of the ring model from measured all-reduce times, by least squares on the
    *relative* error (each point weighted by 1/t, so small messages count as much as large).

    The ring predicts t = 2(p − 1) α + 2 (p − 1)/p · n β: a straight line in n.
    """
    import numpy as np

    n, t = np.asarray(nbytes, dtype=float), np.asarray(seconds, dtype=float)
    if n.shape != t.shape or n.ndim != 1 or len(n) < 2:
        raise ValueError("need at least two (nbytes, seconds) pairs of equal length")
    if np.any(t <= 0) or np.any(n < 0):
        raise ValueError("times must be positive and sizes non-negative")
    p = _positive_int("world_size", world_size)
    if p < 2:
        raise ValueError("an all-reduce over one process costs nothing: need world_size ≥ 2")
    design = np.stack([np.full_like(n, 2 * (p - 1)), 2 * (p - 1) / p * n], axis=1) / t[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    return float(alpha), float(beta)


# ------------------------------------------------------------- data parallel
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
    return time_one / (_positive_int("world_size", world_size) * time_p)


# --------------------------------------------------------- parallel laws
def amdahl_speedup(parallel_fraction: float, workers: float) -> float:
    """Amdahl 1967, a fixed problem: S = 1 / ((1 − f) + f / p)."""
    _check_fraction(parallel_fraction)
    return 1.0 / ((1 - parallel_fraction) + parallel_fraction / workers)


def gustafson_speedup(parallel_fraction: float, workers: float) -> float:
    """Gustafson 1988, the problem grows with p (fixed time): S = (1 − f) + f p."""
    _check_fraction(parallel_fraction)
    return (1 - parallel_fraction) + parallel_fraction * workers


def _check_fraction(f: float) -> None:
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"parallel_fraction must be between 0 and 1, got {f}")


# ------------------------------------------------------------------ memory
OPTIMIZER_STATES = {"sgd": 0, "sgd-momentum": 1, "adam": 2}


def training_memory(num_params: int, *, optimizer: str = "adam", bytes_per_value: int = 4,
                    num_tensors: int = 0, activation_bytes: float = 0.0, zero_stage: int = 0,
                    data_parallel: int = 1, tensor_parallel: int = 1, pipeline_parallel: int = 1) -> dict[str, float]:
    """Bytes per worker for training a model of ``num_params`` parameters.

    parameters P·b, gradients P·b, optimizer state s·P·b (s = 0 for SGD, 1 with
    momentum, 2 for Adam's two moments; PyTorch's Adam adds a 4-byte step
    counter per parameter tensor, ``num_tensors``). Tensor and pipeline
    parallelism split the model: each worker holds 1/(t·p) of all three. ZeRO
    (Rajbhandari et al. 2020) shards over the d data-parallel replicas: stage 1
    the optimizer state, stage 2 also the gradients, stage 3 also the parameters.
    ``activation_bytes`` (of one replica) is divided by t·p, to first order.
    """
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_STATES)}, got {optimizer!r}")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    d = _positive_int("data_parallel", data_parallel)
    split = _positive_int("tensor_parallel", tensor_parallel) * _positive_int("pipeline_parallel", pipeline_parallel)
    params = num_params * bytes_per_value / split
    states = OPTIMIZER_STATES[optimizer] * params
    if optimizer == "adam":
        states += 4 * num_tensors / split
    memory = {"parameters": params / (d if zero_stage >= 3 else 1),
              "gradients": params / (d if zero_stage >= 2 else 1),
              "optimizer state": states / (d if zero_stage >= 1 else 1),
              "activations": activation_bytes / split}
    memory["total"] = sum(memory.values())
    return memory


# ------------------------------------------------------------- measuring
def measure_allreduce(rank: int, world_size: int, sizes_bytes, repeats: int = 10) -> dict[int, float]:
    """Median seconds of ``dist.all_reduce`` of float32 tensors of each size, on every rank
    (a worker for :func:`nnpar_lite.distributed.launch`)."""
    import statistics
    import time

    import torch
    import torch.distributed as dist

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
