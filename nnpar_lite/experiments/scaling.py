"""Chapters 07 and 10's measurements: all-reduce times to calibrate the alpha-beta model, the
scaling of chapter 03's training step against that model, heterogeneous workers sharing one
batch, the bytes a training step's tensors hold, and this machine's matrix-product speed.

The formulas they are compared with are in :mod:`nnpar_lite.costmodel`; here is only what
runs and measures.
"""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from .. import costmodel
from ..costmodel import heterogeneous_step
from ..data import even_shard_sizes, per_sample_losses, proportional_sizes, split_by_sizes
from ..data_parallel import allreduce_gradients
from ..formulas import average_losses
from ..models import mlp
from ..util import one_thread


def measure_allreduce(rank: int, world_size: int, sizes_bytes, repeats: int = 10) -> dict[int, float]:
    """Median seconds of ``dist.all_reduce`` of float32 tensors of each size, on every rank:
    of 3 × ``repeats`` runs below 1 MB (cheap, and the most scattered), of ``repeats`` above."""
    timings = {}
    for nbytes in sizes_bytes:
        tensor = torch.ones(max(int(nbytes) // 4, 1))
        runs = 3 * repeats if nbytes < 2 ** 20 else repeats
        for _ in range(2):
            dist.all_reduce(tensor)  # warm-up: connections, buffers, page faults
        times = []
        for _ in range(runs):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(tensor)
            times.append(time.perf_counter() - start)
        timings[int(nbytes)] = statistics.median(times)
    return timings


def synthetic_allreduce_times(alpha: float, beta: float, world_size: int, sizes, *, noise: float = 0.0,
                              seed: int = 0) -> np.ndarray:
    """Ring all-reduce times t = 2(p − 1) α + 2 (p − 1)/p · n β for each size n, each multiplied
    by a log-normal factor of spread ``noise`` (0.2: about ±20 %), as measured times scatter."""
    exact = np.array([costmodel.ring_allreduce_time(n, world_size, alpha, beta) for n in sizes])
    return exact * np.exp(noise * np.random.default_rng(seed).standard_normal(len(exact)))


def _median_step_times(model: torch.nn.Module, local_batch: int, steps: int, group) -> dict[str, float]:
    """Median compute (forward + backward) and communication (``allreduce_gradients`` over
    ``group``; none when ``group`` is None) of ``steps`` steps on a random local batch."""
    width, classes = model[0].in_features, model[-1].out_features
    x, y = torch.randn(local_batch, width), torch.randint(0, classes, (local_batch,))
    compute, communicate = [], []
    for _ in range(steps):
        if group is not None:
            dist.barrier(group=group)
        start = time.perf_counter()
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        middle = time.perf_counter()
        if group is not None:
            allreduce_gradients(model, group=group)
        compute.append(middle - start)
        communicate.append(time.perf_counter() - middle)
    return {"compute": statistics.median(compute[2:]), "communication": statistics.median(communicate[2:])}


def time_step_alone_and_together(rank: int, world_size: int, global_batches: Sequence[int] = (256, 4096),
                                 sizes: Sequence[int] = (64, 256, 256, 10), steps: int = 30) -> dict[int, dict]:
    """Chapter 03's training step timed twice in one launch, one thread per process: rank 0
    alone on each whole global batch while the others wait at a barrier, then every rank on
    1/p of it with ``allreduce_gradients``. Returns {1: {batch: times}, p: {batch: times}},
    each with the median "compute" and "communication" seconds (the first two steps dropped)."""
    torch.set_num_threads(1)
    model = mlp(sizes, seed=0)
    alone = {b: _median_step_times(model, b, steps, None) for b in global_batches} if rank == 0 else None
    dist.barrier()
    together = {b: _median_step_times(model, b // world_size, steps, dist.group.WORLD) for b in global_batches}
    return {1: alone, world_size: together}


def efficiency_against_model(timings: dict[int, dict], alpha: float, beta: float,
                             sizes: Sequence[int] = (64, 256, 256, 10)) -> dict[int, dict]:
    """Chapter 03's step timed on 1 and 2 processes (``timings[world][batch]``, from
    :func:`time_step_alone_and_together`) against the model:
    half the compute of one process plus a ring all-reduce of the fp32 gradients.

    Efficiency t₁ / (p t_p): measured, predicted without overlap (compute + comm) and with
    perfect overlap (max(compute, comm)); and whether the all-reduce would hide behind the
    backward pass, taken as two thirds of the compute (it does twice the forward's work)."""
    gradient_bytes = 4 * sum(p.numel() for p in mlp(sizes).parameters())
    communication = costmodel.ring_allreduce_time(gradient_bytes, 2, alpha, beta)
    result = {}
    for batch, one in timings[1].items():
        two, half = timings[2][batch], one["compute"] / 2
        result[batch] = {
            "gradient bytes": gradient_bytes, "predicted communication": communication,
            "measured": costmodel.scaling_efficiency(one["compute"], two["compute"] + two["communication"], 2),
            "predicted": costmodel.scaling_efficiency(
                one["compute"], costmodel.data_parallel_step_time(half, communication), 2),
            "predicted with overlap": costmodel.scaling_efficiency(
                one["compute"], costmodel.data_parallel_step_time(half, communication, overlap=True), 2),
            "hidden by overlap": costmodel.overlap_hides_communication(2 / 3 * half, communication)}
    return result


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


@one_thread()                       # a small model: more threads only wait for each other
def tensor_bytes_after_one_step(sizes: Sequence[int] = (512, 1024, 1024, 10), precision: str = "fp32",
                                batch: int = 32) -> dict[str, int]:
    """One Adam step of ``mlp(sizes)``, then Σ numel × element_size over the tensors it keeps:
    the weights, their gradients (``.grad``) and the optimizer's state. This counts what the
    tensors hold, not what PyTorch's allocator reserves around them.

    "mixed": the model computes in bfloat16 (2 bytes, as fp16) and Adam updates an fp32 master
    copy of the weights (Micikevicius et al. 2018); the master copy counts as optimizer state,
    as in ZeRO's 2Ψ + 2Ψ + 12Ψ. Its fp32 gradient exists only during the step."""
    if precision not in ("fp32", "mixed"):
        raise ValueError(f"precision must be 'fp32' or 'mixed', got {precision!r}")
    model = mlp(sizes) if precision == "fp32" else mlp(sizes).to(torch.bfloat16)
    params = list(model.parameters())
    master = params if precision == "fp32" else [p.detach().float().requires_grad_() for p in params]
    optimizer = torch.optim.Adam(master)
    x = torch.randn(batch, sizes[0], generator=torch.Generator().manual_seed(0), dtype=params[0].dtype)
    torch.nn.functional.cross_entropy(model(x).float(), torch.arange(batch) % sizes[-1]).backward()
    if precision == "mixed":
        for p, m in zip(params, master):
            m.grad = p.grad.float()
    optimizer.step()
    if precision == "mixed":
        for m in master:
            m.grad = None                                      # the fp32 gradient is transient
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return {"num_params": sum(p.numel() for p in params), "num_tensors": len(params),
            "parameters": sum(p.numel() * p.element_size() for p in params),
            "gradients": sum(p.grad.numel() * p.grad.element_size() for p in params),
            "optimizer state": sum(t.numel() * t.element_size() for t in state)
            + (0 if precision == "fp32" else sum(m.numel() * m.element_size() for m in master))}


def matmul_flops(size: int = 1024, repeats: int = 5) -> float:
    """Measured float32 FLOP/s of this machine's CPU on a size × size matrix product: 2 n³ per
    product, best of ``repeats`` (an achieved throughput, not a datasheet peak)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b                                                      # warm-up: threads, caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best
