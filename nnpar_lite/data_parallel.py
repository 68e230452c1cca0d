"""Data parallelism (seed 3.1): simulated with K workers in one process, and real.

The article's six steps, for a model with ``params``, ``gradients(X, Y)`` and
``loss(X, Y)`` (the networks of :mod:`nnpar_lite.models`):

1. split the batch into K shards (:func:`nnpar_lite.data.split_batch`);
2.–4. each worker runs forward, loss and backward on its shard, with the same θ;
5. aggregate the K gradients: ``aggregate_gradients``, weighted by shard size;
6. one update of θ: ``sgd_step``.

With each worker's loss the mean over its shard and the weights the shard
sizes, step 5 gives exactly the gradient of the mean loss over the whole batch,
so K workers take exactly the steps of one worker on the big batch.

The second half runs the same scheme over a real process group
(torch.distributed): :func:`allreduce_gradients` is step 5 across processes,
bucketed as PyTorch's ``DistributedDataParallel`` (DDP) does it, on
:func:`nnpar_lite.collectives.allreduce_mean_`; ``ring_allreduce``, the algorithm inside an
all-reduce written out with send and receive, is :func:`nnpar_lite.collectives.ring_allreduce`.
Both run step 5 after step 4 (chapter 03); :class:`DataParallel`
(:mod:`nnpar_lite.data_parallel_overlap`) overlaps them, each bucket's all-reduce starting while
backward still runs (chapter 09).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .collectives import allreduce_mean_, check_weight, on_some_rank
from .data import even_shard_sizes, split_batch, split_by_sizes
from .formulas import aggregate_gradients, sgd_step

# Names chapters and readers use here, defined where they belong: the primitives in collectives,
# the split in data, the overlapped DataParallel in its own module.
from .collectives import plan_buckets, ring_allreduce  # noqa: F401
from .data_parallel_overlap import DataParallel, plan_buckets_like_ddp  # noqa: F401


def simulated_step(model, shards: list[tuple[np.ndarray, np.ndarray]], lr: float, *,
                   weighted: bool = True) -> dict:
    """Steps 2–6 for K simulated workers; returns the aggregated gradient.

    ``weighted=False`` is the article's plain mean of the K gradients, exact only
    for equal shards.
    """
    grads = [model.gradients(X_k, Y_k) for X_k, Y_k in shards]      # steps 2–4, worker by worker
    weights = [len(X_k) for X_k, _ in shards] if weighted else None
    gradient = aggregate_gradients(grads, weights)                   # step 5
    model.params = sgd_step(model.params, gradient, lr)              # step 6
    return gradient


def train_simulated(model, X: np.ndarray, Y: np.ndarray, *, num_workers: int, epochs: int, lr: float,
                    shard_sizes: Sequence[int] | None = None, weighted: bool = True) -> list[float]:
    """Full-batch training by K simulated workers; the loss before each epoch and after the last."""
    shards = split_batch(X, Y, shard_sizes or even_shard_sizes(len(X), num_workers))
    if len(shards) != num_workers:
        raise ValueError(f"{len(shards)} shard sizes given for num_workers={num_workers}")
    losses = [model.loss(X, Y)]
    for _ in range(epochs):
        simulated_step(model, shards, lr, weighted=weighted)
        losses.append(model.loss(X, Y))
    return losses


# ===================================================================== torch
def shard_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, shard_sizes: Sequence[int], *,
                    reduction: str = "mean") -> list[dict[str, torch.Tensor]]:
    """Steps 1–4 with torch: each worker's gradient of its shard's loss (cross-entropy,
    ``reduction`` "mean" or "sum"), all from the same θ."""
    grads = []
    for x_k, y_k in zip(split_by_sizes(x, shard_sizes), split_by_sizes(y, shard_sizes)):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x_k), y_k, reduction=reduction).backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
    model.zero_grad(set_to_none=True)
    return grads


def big_batch_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reference: the gradient of the mean loss over the whole batch, one worker."""
    return shard_gradients(model, x, y, [len(x)])[0]


def compare_with_big_batch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, shard_sizes: Sequence[int],
                           *, reduction: str = "mean", weighted: bool = True) -> dict:
    """Aggregate K workers' gradients as configured and compare with the big-batch gradient.

    Returns the relative error ‖g − g_big‖ / ‖g_big‖ and the scale ⟨g, g_big⟩ / ‖g_big‖²
    (1 when right; N/K, the per-worker batch, for sum-reduced losses averaged as DDP does),
    and both gradients flattened ("ours", "big batch").
    """
    grads = shard_gradients(model, x, y, shard_sizes, reduction=reduction)
    g = aggregate_gradients(grads, list(shard_sizes) if weighted else None)
    ref = big_batch_gradient(model, x, y)
    flat_g = torch.cat([g[n].reshape(-1) for n in ref]).double()
    flat_ref = torch.cat([ref[n].reshape(-1) for n in ref]).double()
    return {"relative error": float((flat_g - flat_ref).norm() / flat_ref.norm()),
            "scale": float(flat_g @ flat_ref / (flat_ref @ flat_ref)),
            "ours": flat_g.numpy(), "big batch": flat_ref.numpy()}


# ======================================================== real processes
def trainable_parameters(params: torch.nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The parameters whose gradients are averaged: those with ``requires_grad``, a tied tensor once."""
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"parameter {i} is {type(p).__name__}; expected a torch.Tensor")
    return list({id(p): p for p in params if p.requires_grad}.values())


def agree_on_gradients(params: torch.nn.Module | Iterable[torch.Tensor], *, group=None) -> list[torch.Tensor]:
    """Which parameters have a gradient on *some* rank, agreed by one small all-reduce of a mask
    (one number per trainable parameter, :func:`~nnpar_lite.collectives.on_some_rank`), as DDP's
    ``find_unused_parameters=True`` agrees (:func:`allreduce_gradients_naive`;
    :func:`allreduce_gradients` lets the mask ride in a bucket).

        used_i = Σ_r [rank r has a gradient for parameter i] > 0

    A parameter used on some ranks only gets a zero gradient on the others (it did not touch
    their loss, so their gradient *is* zero), and every rank then averages the same tensors: no
    bucket differs in size between ranks. A parameter no rank used keeps ``.grad`` None, so
    torch's optimizers skip it (no weight decay, no moment update). Returns the used ones."""
    trainable = trainable_parameters(params)
    if not trainable:
        return []
    used = on_some_rank([p.grad is not None for p in trainable], device=trainable[0].device, group=group)
    for p, u in zip(trainable, used):
        if u and p.grad is None:
            p.grad = torch.zeros_like(p)
    return [p for p, u in zip(trainable, used) if u]


def allreduce_gradients(params: torch.nn.Module | Iterable[torch.Tensor], *, weight: float | None = None,
                        bucket_mb: float = 25.0, group=None) -> None:
    """Seed 3.1 step 5 across processes: average every ``.grad`` in place over the group.

        without weight:  g ← 1/K Σ_r g_r           (what DDP computes)
        with weight w_r: g ← Σ_r w_r g_r / Σ_r w_r   (w_r = local sample count: the exact
                                                     gradient of the global mean loss)

    Gradients are flattened into buckets of at most ``bucket_mb`` MiB in reverse
    parameter order (backward produces the last layer's first), one all-reduce
    per bucket (:func:`~nnpar_lite.collectives.allreduce_mean_`). Parameters with
    ``requires_grad=False`` are left alone. A parameter this rank did not use counts as a zero
    gradient here (it did not touch this rank's loss), so every rank sends buckets of the same
    sizes; a mask of which parameters had a gradient rides at the end of the last bucket, and one
    that no rank used keeps no gradient, so torch's optimizers skip it: DDP's
    ``find_unused_parameters=True``. Every rank must call it with the same parameters, in the
    same order.
    """
    check_weight(weight)
    trainable = trainable_parameters(params)
    had = [p.grad is not None for p in trainable]
    for p in trainable:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    used = allreduce_mean_([p.grad for p in trainable], weight=weight, bucket_mb=bucket_mb, group=group, tally=had)
    for p, count in zip(trainable, used):
        if count == 0:
            p.grad = None


def allreduce_gradients_naive(params: torch.nn.Module | Iterable[torch.Tensor], *, group=None) -> None:
    """The same average, one blocking all-reduce per parameter: correct, and slow when
    there are many small parameters (every call pays the latency α)."""
    world = dist.get_world_size(group)
    for p in agree_on_gradients(params, group=group):
        dist.all_reduce(p.grad, group=group)
        p.grad.div_(world)
