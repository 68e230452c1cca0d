"""Chapter 03's runs: data parallelism checked against DDP and one big batch, the ring against
``dist.all_reduce``, the step timed; and the K-worker gradient the chapter's widget draws.

The workers here are spawned by :func:`nnpar_lite.distributed.launch` (they live in a
module so that spawn can import them); the algorithm they run is in
:mod:`nnpar_lite.data_parallel`.
"""

from __future__ import annotations

import functools
import time
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data import demo_batch, digits_split, even_shard_sizes, skewed_shard_sizes
from ..data_parallel import (
    allreduce_gradients,
    allreduce_gradients_naive,
    compare_with_big_batch,
    ring_allreduce,
    shard_gradients,
)
from ..formulas import aggregate_gradients, sgd_step
from ..models import mlp, parameter_count
from ..progress import progress
from ..util import max_abs_difference, one_thread


def _global_batches(config: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same sequence of global batches on every rank (digits, or random data)."""
    gen = torch.Generator().manual_seed(config.get("seed", 0))
    n, steps = sum(config["shard_sizes"]), config["steps"]
    if config.get("data", "digits") == "digits":
        X, y, _, _ = digits_split()
        order = torch.randperm(len(X), generator=gen)
        picks = [order[(s * n) % len(X):][:n] for s in range(steps)]
        picks = [p if len(p) == n else order[:n] for p in picks]
        return [(X[p], y[p]) for p in picks]
    sizes = config["sizes"]
    return [(torch.randn(n, sizes[0], generator=gen), torch.randint(0, sizes[-1], (n,), generator=gen))
            for _ in range(steps)]


def train_against_ddp(rank: int, world_size: int, config: dict) -> dict:
    """Train three copies of one model side by side and compare them after every step.

    * ours: each rank on its shard, mean loss, ``allreduce_gradients`` (weighted by
      shard size if ``config["weighted"]``), SGD;
    * DDP: PyTorch's ``DistributedDataParallel`` on the same shard, SGD;
    * reference: one process on the whole global batch (every rank computes it).

    Without weights ours must equal DDP; with weights it must equal the reference
    (and DDP too when the shards are equal). Returns the largest parameter
    difference per step from each, and this rank's final parameters.
    """
    ours, ddp, reference = _three_copies(config)
    shard_sizes, bucket_mb = config["shard_sizes"], config.get("bucket_mb", 25.0)
    optimizers = {name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=config.get("lr", 0.1))
                  for name, m in (("ours", ours), ("ddp", ddp), ("reference", reference))}
    local = slice(sum(shard_sizes[:rank]), sum(shard_sizes[:rank + 1]))
    weight = shard_sizes[rank] if config.get("weighted", False) else None
    report: dict = {"vs_ddp": [], "vs_reference": [], "losses": []}
    for x, y in _global_batches(config):
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ours(x[local]), y[local])
        loss.backward()
        allreduce_gradients(ours, weight=weight, bucket_mb=bucket_mb)
        F.cross_entropy(ddp(x[local]), y[local]).backward()   # DDP all-reduces during backward
        F.cross_entropy(reference(x), y).backward()
        for opt in optimizers.values():
            opt.step()
        report["vs_ddp"].append(max_abs_difference(ours, ddp.module))
        report["vs_reference"].append(max_abs_difference(ours, reference))
        report["losses"].append(loss.item())
    report["params"] = {n: p.detach().clone() for n, p in ours.named_parameters()}
    return report


def _three_copies(config: dict):
    """The same MLP three times (ours, wrapped in DDP, the reference), frozen parameters frozen."""
    from torch.nn.parallel import DistributedDataParallel

    sizes, seed = config.get("sizes", (64, 32, 10)), config.get("seed", 0)
    ours, ddp_module, reference = (mlp(sizes, seed=seed) for _ in range(3))
    for frozen in config.get("frozen", []):                  # e.g. "0.bias": trained by nobody
        for model in (ours, reference, ddp_module):
            model.get_parameter(frozen).requires_grad_(False)
    ddp = DistributedDataParallel(ddp_module, device_ids=None, bucket_cap_mb=config.get("bucket_mb", 25.0))
    return ours, ddp, reference


def train_against_ddp_configs(rank: int, world_size: int, configs: Sequence[dict]) -> list[dict]:
    """:func:`train_against_ddp` for several configurations in one launch (one spawn)."""
    return [train_against_ddp(rank, world_size, config) for config in configs]


def check_ring_allreduce(rank: int, world_size: int, numels: Sequence[int]) -> list[float]:
    """``ring_allreduce`` against ``dist.all_reduce`` on random tensors of the given sizes;
    the largest difference for each size."""
    differences = []
    for numel in numels:
        x = torch.randn(numel, generator=torch.Generator().manual_seed(1000 * rank + numel), dtype=torch.float64)
        expected = x.clone()
        dist.all_reduce(expected)
        ring_allreduce(x)
        differences.append(float((x - expected).abs().max()) if numel else 0.0)
    return differences


def time_allreduce_strategies(rank: int, world_size: int, num_tensors: int = 200, numel: int = 1000,
                              repeats: int = 5) -> dict:
    """Median seconds to average ``num_tensors`` gradients: one all-reduce per parameter,
    against buckets (one for all of them here)."""
    params = [torch.nn.Parameter(torch.zeros(numel)) for _ in range(num_tensors)]
    for p in params:
        p.grad = torch.randn(numel)
    times: dict[str, list[float]] = {"per parameter": [], "bucketed": []}
    for _ in range(repeats):
        for name, fn in (("per parameter", allreduce_gradients_naive), ("bucketed", allreduce_gradients)):
            dist.barrier()
            start = time.perf_counter()
            fn(params)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def time_training_step(rank: int, world_size: int, global_batches: Sequence[int] = (256, 4096),
                       sizes=(64, 256, 256, 10), steps: int = 12, threads: int = 1) -> dict[int, dict]:
    """For each global batch size: the median compute time (forward + backward on this
    rank's share) and communication time (``allreduce_gradients``) of one training step,
    with ``threads`` threads per process (1: each process stands for one core), and the
    work behind them, which holds on any machine: the samples this rank computed on and
    the values it all-reduced per step."""
    torch.set_num_threads(threads)
    model = mlp(sizes, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    timings = {}
    for global_batch in global_batches:
        local = global_batch // world_size
        x, y = torch.randn(local, sizes[0]), torch.randint(0, sizes[-1], (local,))
        compute, communicate = [], []
        for _ in range(steps):
            dist.barrier()
            start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            middle = time.perf_counter()
            if world_size > 1:
                allreduce_gradients(model)
            end = time.perf_counter()
            opt.step()
            compute.append(middle - start)
            communicate.append(end - middle)
        timings[global_batch] = {"compute": float(np.median(compute[2:])),
                                 "communication": float(np.median(communicate[2:])),
                                 "samples per rank": local,
                                 "values all-reduced": parameter_count(model) if world_size > 1 else 0}
    return timings


def train_digits_simulated(num_workers: int = 4, *, steps: int = 150, global_batch: int = 128, lr: float = 0.5,
                           hidden: int = 32, seed: int = 0) -> dict:
    """Train an MLP on the digits with K simulated workers (steps 1–6 in torch, gradients
    weighted by shard size), with a progress bar in a notebook. Returns the loss of each
    global batch after its step, the test accuracy (the 297 held-out images) and the model."""
    x, y, x_test, y_test = digits_split()
    model = mlp((64, hidden, 10), seed=seed)
    params = dict(model.named_parameters())
    sizes = even_shard_sizes(global_batch, num_workers)
    losses = []
    with one_thread():
        for step in progress(range(steps), f"{num_workers} worker{'s' if num_workers > 1 else ''}"):
            batch = (step * global_batch + torch.arange(global_batch)) % len(x)              # step 1 (and split)
            grads = shard_gradients(model, x[batch], y[batch], sizes)                       # steps 2–4
            gradient = aggregate_gradients(grads, sizes)                                    # step 5
            sgd_step(params, gradient, lr, out=params)                                      # step 6, in place
            with torch.no_grad():
                losses.append(float(F.cross_entropy(model(x[batch]), y[batch])))
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    return {"losses": losses, "test accuracy": accuracy, "model": model}


@functools.lru_cache(maxsize=256)   # the widget's controls offer a few hundred settings; a move back is free
def gradient_comparison(num_workers: int = 3, skew: float = 0.6, reduction: str = "mean",
                        weighted: bool = True, *, batch_norm: bool = False) -> dict:
    """The K-worker gradient of 120 digits, aggregated as configured, beside the big-batch
    gradient (:func:`nnpar_lite.data_parallel.compare_with_big_batch`), with the shard sizes."""
    x, y = demo_batch()
    model = mlp((64, 32, 10), seed=0, batch_norm=batch_norm, dtype=torch.float64)
    sizes = skewed_shard_sizes(len(x), num_workers, skew)
    with one_thread():
        return {"sizes": sizes, **compare_with_big_batch(model, x, y, sizes, reduction=reduction, weighted=weighted)}
