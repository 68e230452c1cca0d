"""Data parallelism (seed 3.1): simulated with K workers in one process, and real.

The article's six steps, for a model with ``params``, ``gradients(X, Y)`` and
``loss(X, Y)`` (the networks of :mod:`nnpar_lite.models`):

1. split the batch into K shards;
2.–4. each worker runs forward, loss and backward on its shard, with the same θ;
5. aggregate the K gradients: ``aggregate_gradients``, weighted by shard size;
6. one update of θ: ``sgd_step``.

With each worker's loss the mean over its shard and the weights the shard
sizes, step 5 gives exactly the gradient of the mean loss over the whole batch,
so K workers take exactly the steps of one worker on the big batch.

The second half runs the same scheme over a real process group
(torch.distributed): :func:`allreduce_gradients` is step 5 across processes,
bucketed as PyTorch's ``DistributedDataParallel`` (DDP) does it, and
:func:`ring_allreduce` is the algorithm inside an all-reduce, written out with
send and receive for reading.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .data import even_shard_sizes, split_by_sizes
from .formulas import aggregate_gradients, sgd_step


def split_batch(X: np.ndarray, Y: np.ndarray, shard_sizes: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Step 1: cut the batch (X, Y) into consecutive shards of the given sizes."""
    return list(zip(split_by_sizes(X, shard_sizes), split_by_sizes(Y, shard_sizes)))


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
def mlp(sizes: Sequence[int] = (64, 64, 10), *, seed: int = 0, batch_norm: bool = False,
        dtype: torch.dtype = torch.float32) -> torch.nn.Sequential:
    """A multi-layer perceptron: Linear, (BatchNorm,) ReLU, ..., Linear; the same θ for the same seed."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out, dtype=dtype))
        if i < len(sizes) - 2:
            if batch_norm:
                layers.append(torch.nn.BatchNorm1d(n_out, dtype=dtype))
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


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
def plan_buckets(params: Sequence[torch.Tensor], bucket_mb: float) -> list[list[int]]:
    """Group parameter indices into buckets of at most ``bucket_mb`` MiB, in *reverse*
    order (the order backward produces gradients, so a bucket is ready early), never
    mixing dtypes or devices. A tensor larger than the cap gets a bucket of its own."""
    if not (isinstance(bucket_mb, numbers.Real) and math.isfinite(bucket_mb) and bucket_mb > 0):
        raise ValueError(f"bucket_mb must be a positive number, got {bucket_mb!r}")
    cap = bucket_mb * 2 ** 20
    buckets: list[list[int]] = []
    size = 0.0
    for i in reversed(range(len(params))):
        nbytes = params[i].numel() * params[i].element_size()
        last = params[buckets[-1][-1]] if buckets else None
        same_kind = last is not None and last.dtype == params[i].dtype and last.device == params[i].device
        if buckets and same_kind and size + nbytes <= cap:
            buckets[-1].append(i)
            size += nbytes
        else:
            buckets.append([i])
            size = nbytes
    return buckets


def _with_gradients(params: torch.nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The parameters whose gradient is to be averaged: trainable and with a .grad."""
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"parameter {i} is {type(p).__name__}; expected a torch.Tensor")
    return [p for p in params if p.requires_grad and p.grad is not None]


def allreduce_mean_(tensors: Sequence[torch.Tensor], *, weight: float | None = None, bucket_mb: float = 25.0,
                    group=None) -> None:
    """Average the given tensors in place over the group, bucket by bucket.

        without weight:  t ← 1/K Σ_r t_r
        with weight w_r: t ← Σ_r w_r t_r / Σ_r w_r

    Tensors are flattened into buckets of at most ``bucket_mb`` MiB in reverse
    order, one all-reduce each, all in flight at once; Σ_r w_r rides along at
    the end of the last bucket, so weighting costs no extra round trip. Every
    rank must pass tensors of the same shapes in the same order.
    """
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, numbers.Real)
                               or not math.isfinite(weight) or weight < 0):
        raise ValueError(f"weight must be a finite number ≥ 0 (the local sample count), got {weight!r}")
    world = dist.get_world_size(group)
    if not tensors:
        return
    buckets = plan_buckets(tensors, bucket_mb)
    flats = [torch.cat([tensors[i].reshape(-1) for i in bucket]) for bucket in buckets]
    if weight is not None:
        for flat in flats:
            flat.mul_(float(weight))
        flats[-1] = torch.cat([flats[-1], flats[-1].new_tensor([float(weight)])])
    works = [dist.all_reduce(flat, group=group, async_op=True) for flat in flats]
    for work in works:
        work.wait()
    if weight is not None:
        total = float(flats[-1][-1])
        flats[-1] = flats[-1][:-1]
        if total <= 0:
            raise ValueError("the weights of all ranks add up to 0: no rank has a sample")
    scale = 1.0 / (total if weight is not None else world)
    with torch.no_grad():
        for bucket, flat in zip(buckets, flats):
            flat.mul_(scale)
            offset = 0
            for i in bucket:
                t = tensors[i]
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()


def allreduce_gradients(params: torch.nn.Module | Iterable[torch.Tensor], *, weight: float | None = None,
                        bucket_mb: float = 25.0, group=None) -> None:
    """Seed 3.1 step 5 across processes: average every ``.grad`` in place over the group.

        without weight:  g ← 1/K Σ_r g_r           (what DDP computes)
        with weight w_r: g ← Σ_r w_r g_r / Σ_r w_r   (w_r = local sample count: the exact
                                                     gradient of the global mean loss)

    Gradients are flattened into buckets of at most ``bucket_mb`` MiB in reverse
    parameter order (backward produces the last layer's first), one all-reduce
    per bucket (:func:`allreduce_mean_`). Parameters with ``requires_grad=False``
    or no ``.grad`` are left alone. Every rank must call it with the same
    parameters, in the same order.
    """
    allreduce_mean_([p.grad for p in _with_gradients(params)], weight=weight, bucket_mb=bucket_mb, group=group)


def allreduce_gradients_naive(params: torch.nn.Module | Iterable[torch.Tensor], *, group=None) -> None:
    """The same average, one blocking all-reduce per parameter: correct, and slow when
    there are many small parameters (every call pays the latency α)."""
    params = _with_gradients(params)
    world = dist.get_world_size(group)
    for p in params:
        dist.all_reduce(p.grad, group=group)
        p.grad.div_(world)


VERBOSE = False  # set True to print every send and receive of ring_allreduce


def ring_allreduce(tensor: torch.Tensor, *, group=None) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place, by the ring algorithm (Patarasuk & Yuan 2009).

    The tensor is cut into p chunks (sizes may differ by one). Reduce-scatter:
    in p − 1 steps each rank sends one chunk to its right neighbour and adds the
    chunk arriving from its left, until rank r holds the full sum of chunk r + 1.
    All-gather: p − 1 more steps pass the finished chunks around the ring. Each
    rank sends 2 (p − 1)/p · n elements in all, whatever p: the bandwidth-optimal
    all-reduce.
    """
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if world == 1:
        return tensor
    flat = tensor.view(-1) if tensor.is_contiguous() else None
    if flat is None:
        raise ValueError("ring_allreduce needs a contiguous tensor")
    chunks = list(torch.tensor_split(flat, world))
    right, left = (rank + 1) % world, (rank - 1) % world
    incoming = torch.empty_like(chunks[0])

    def exchange(send_index: int, recv_index: int, phase: str) -> torch.Tensor:
        send, size = chunks[send_index], chunks[recv_index].numel()
        buffer = incoming[:size]
        if VERBOSE:
            print(f"[rank {rank}] {phase}: send chunk {send_index} → rank {right}, "
                  f"receive chunk {recv_index} ← rank {left}", flush=True)
        # isend, then recv: a ring of blocking sends would wait on each other for ever.
        request = dist.isend(send, _global(right, group), group=group) if send.numel() else None
        if size:
            dist.recv(buffer, _global(left, group), group=group)
        if request is not None:
            request.wait()
        return buffer

    for step in range(world - 1):                       # reduce-scatter
        send_index, recv_index = (rank - step) % world, (rank - step - 1) % world
        chunks[recv_index].add_(exchange(send_index, recv_index, "reduce-scatter"))
    for step in range(world - 1):                       # all-gather
        send_index, recv_index = (rank + 1 - step) % world, (rank - step) % world
        chunks[recv_index].copy_(exchange(send_index, recv_index, "all-gather"))
    return tensor


def _global(rank_in_group: int, group) -> int:
    return rank_in_group if group is None else dist.get_global_rank(group, rank_in_group)


# ============================================ workers, spawned by launch()
def _global_batches(config: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same sequence of global batches on every rank (digits, or random data)."""
    gen = torch.Generator().manual_seed(config.get("seed", 0))
    n, steps = sum(config["shard_sizes"]), config["steps"]
    if config.get("data", "digits") == "digits":
        from .data import digits
        X, y = (torch.from_numpy(a) for a in digits())
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
    from torch.nn.parallel import DistributedDataParallel

    sizes, lr = config.get("sizes", (64, 32, 10)), config.get("lr", 0.1)
    shard_sizes, bucket_mb = config["shard_sizes"], config.get("bucket_mb", 25.0)
    ours, reference = mlp(sizes, seed=config.get("seed", 0)), mlp(sizes, seed=config.get("seed", 0))
    ddp_module = mlp(sizes, seed=config.get("seed", 0))
    for frozen in config.get("frozen", []):                  # e.g. "0.bias": trained by nobody
        for model in (ours, reference, ddp_module):
            model.get_parameter(frozen).requires_grad_(False)
    ddp = DistributedDataParallel(ddp_module, device_ids=None, bucket_cap_mb=bucket_mb)
    optimizers = {name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr)
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
        report["vs_ddp"].append(_largest_difference(ours, ddp.module))
        report["vs_reference"].append(_largest_difference(ours, reference))
        report["losses"].append(loss.item())
    report["params"] = {n: p.detach().clone() for n, p in ours.named_parameters()}
    return report


def train_against_ddp_configs(rank: int, world_size: int, configs: Sequence[dict]) -> list[dict]:
    """:func:`train_against_ddp` for several configurations in one launch (one spawn)."""
    return [train_against_ddp(rank, world_size, config) for config in configs]


@torch.no_grad()
def _largest_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


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
    with ``threads`` threads per process (1: each process stands for one core)."""
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
                                 "communication": float(np.median(communicate[2:]))}
    return timings


def time_against_ddp(rank: int, world_size: int, sizes=(512, 1024, 1024, 10), batch: int = 64,
                     rounds: int = 30, bucket_mb: float = 25.0) -> dict:
    """Median step time of ``allreduce_gradients`` against DDP, in the same processes,
    alternating one step of each per round so that both see the same machine load."""
    from torch.nn.parallel import DistributedDataParallel

    ours = mlp(sizes, seed=0)
    ddp = DistributedDataParallel(mlp(sizes, seed=0), device_ids=None, bucket_cap_mb=bucket_mb)
    opts = {"ours": torch.optim.SGD(ours.parameters(), lr=0.01), "ddp": torch.optim.SGD(ddp.parameters(), lr=0.01)}
    gen = torch.Generator().manual_seed(rank)
    x, y = torch.randn(batch, sizes[0], generator=gen), torch.randint(0, sizes[-1], (batch,), generator=gen)

    def step_ours():
        opts["ours"].zero_grad()
        F.cross_entropy(ours(x), y).backward()
        allreduce_gradients(ours, bucket_mb=bucket_mb)
        opts["ours"].step()

    def step_ddp():
        opts["ddp"].zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opts["ddp"].step()

    times: dict[str, list[float]] = {"ours": [], "ddp": []}
    for round_ in range(rounds + 3):
        for name, step in (("ours", step_ours), ("ddp", step_ddp)) if round_ % 2 else \
                (("ddp", step_ddp), ("ours", step_ours)):
            dist.barrier()
            start = time.perf_counter()
            step()
            if round_ >= 3:  # the first rounds warm up allocators and gloo's buffers
                times[name].append(time.perf_counter() - start)
    parameters = sum(p.numel() for p in ours.parameters())
    ratios = [a / b for a, b in zip(times["ours"], times["ddp"])]
    return {"parameters": parameters, "ours": float(np.median(times["ours"])),
            "ddp": float(np.median(times["ddp"])), "median ratio": float(np.median(ratios)),
            "max difference": _largest_difference(ours, ddp.module)}


def train_digits_simulated(num_workers: int = 4, *, steps: int = 150, global_batch: int = 128, lr: float = 0.5,
                           hidden: int = 32, seed: int = 0, progress: bool = True) -> dict:
    """Train an MLP on the digits with K simulated workers (steps 1–6 in torch, gradients
    weighted by shard size), with a progress bar. Returns the loss of each global batch
    after its step, the test accuracy (297 held-out images) and the model."""
    from tqdm.auto import tqdm

    from .data import digits

    X, y = (torch.from_numpy(a) for a in digits())
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    train, test = order[:1500], order[1500:]
    model = mlp((64, hidden, 10), seed=seed)
    params = dict(model.named_parameters())
    sizes = even_shard_sizes(global_batch, num_workers)
    losses = []
    for step in tqdm(range(steps), desc=f"{num_workers} workers", disable=not progress):
        batch = train[(step * global_batch + torch.arange(global_batch)) % len(train)]       # step 1 (and split)
        grads = shard_gradients(model, X[batch], y[batch], sizes)                          # steps 2–4
        gradient = aggregate_gradients(grads, sizes)                                       # step 5
        sgd_step(params, gradient, lr, out=params)                                         # step 6, in place
        with torch.no_grad():
            losses.append(float(F.cross_entropy(model(X[batch]), y[batch])))
    with torch.no_grad():
        accuracy = float((model(X[test]).argmax(1) == y[test]).float().mean())
    return {"losses": losses, "test accuracy": accuracy, "model": model}
