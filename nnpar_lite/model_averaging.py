"""Parameter averaging (seed 3.2, "task parallelism"), simulated with K workers in one process.

The article's formulas: each worker trains its own copy of the model on its own
data, θ_i ← θ_i − η ∇L_i, and the copies are averaged, θ = 1/K Σ_i θ_i. The
field calls this model averaging; averaging every H local steps is *local SGD*
(Stich 2019, Lin et al. 2020), and with clients holding private data it is
*federated averaging* (McMahan et al. 2017).

It only makes sense for replicas of one architecture that start from the same
θ. With H = 1, plain SGD and weights equal to the shard sizes, one round is
exactly one step of synchronous data parallelism.

The first half simulates K workers in one process (numpy networks of chapter
02, and torch MLPs on the digits); the second runs local SGD over a real
process group, with :func:`average_parameters_` as the averaging step.
"""

from __future__ import annotations

import copy
import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .data import even_shard_sizes
from .data_parallel import allreduce_mean_, mlp, split_batch
from .formulas import aggregate_gradients, average_parameters, sgd_step


def train_local_sgd(model, X: np.ndarray, Y: np.ndarray, *, num_workers: int, rounds: int,
                    local_steps: int, lr: float, shard_sizes: Sequence[int] | None = None,
                    weighted: bool = True) -> list[float]:
    """K replicas of ``model``, each taking ``local_steps`` SGD steps on its shard per
    round, then averaged; ``model`` ends as the average. Returns the loss of the
    averaged model on the whole batch before the first round and after each."""
    _check_local_steps(local_steps)
    shards = split_batch(X, Y, shard_sizes or even_shard_sizes(len(X), num_workers))
    weights = [len(X_k) for X_k, _ in shards] if weighted else None
    losses = [model.loss(X, Y)]
    for _ in range(rounds):
        replicas = [model.copy() for _ in shards]                  # every replica starts from θ
        for replica, (X_k, Y_k) in zip(replicas, shards):
            for _ in range(local_steps):
                replica.params = sgd_step(replica.params, replica.gradients(X_k, Y_k), lr)  # θ_i ← θ_i − η∇L_i
        model.params = average_parameters([r.params for r in replicas], weights)       # θ = Σ w_i θ_i / Σ w_i
        losses.append(model.loss(X, Y))
    return losses


def _check_local_steps(local_steps) -> None:
    if isinstance(local_steps, bool) or not isinstance(local_steps, int) or local_steps < 1:
        raise ValueError(f"local_steps (H) is {local_steps!r}; expected an integer ≥ 1")


# ===================================================================== torch
def _loss_and_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on (x, y)."""
    logits = model(x)
    return {"loss": float(F.cross_entropy(logits, y)), "accuracy": float((logits.argmax(1) == y).float().mean())}


def local_sgd(x: torch.Tensor, y: torch.Tensor, shards: Sequence[np.ndarray], *, local_steps: int, rounds: int,
              lr: float, momentum: float = 0.0, momentum_policy: str = "local", weighted: bool = True,
              model: torch.nn.Module | None = None, seed: int = 0, eval_on: tuple | None = None) -> dict:
    """Local SGD (FedAvg with full local batches), K workers simulated in one process.

    Every round each worker starts from the shared θ, takes ``local_steps`` (H)
    steps of gradient descent on its whole shard, θ_i ← θ_i − η v_i with
    v_i ← μ v_i + ∇L_i (plain SGD when μ = 0), and the K copies are averaged,
    θ = Σ n_i θ_i / Σ n_i (plain mean if not ``weighted``). At an averaging step
    the momentum buffers v_i are, by ``momentum_policy``:

    * ``"local"``: kept per worker (what ``PeriodicModelAverager`` does: it
      averages parameters and never touches optimizer state);
    * ``"average"``: averaged like θ (momentum is linear in the gradients, so
      with H = 1 this is exactly synchronous data parallelism with momentum);
    * ``"reset"``: set to zero.

    Returns the averaged model, each worker's last local model, and the history
    of the averaged model's loss and accuracy on ``eval_on`` (default: all data)
    with, after each round, the *drift*: the mean distance ‖θ_i − θ‖ of the
    workers' models from their average.
    """
    _check_local_steps(local_steps)
    if momentum_policy not in ("local", "average", "reset"):
        raise ValueError(f"momentum_policy is {momentum_policy!r}; expected 'local', 'average' or 'reset'")
    if len(shards) < 1 or any(len(s) == 0 for s in shards):
        raise ValueError("every worker needs a non-empty shard")
    model = model if model is not None else mlp((x.shape[1], 32, int(y.max()) + 1), seed=seed)
    weights = [len(s) for s in shards] if weighted else None
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    velocity = [{n: torch.zeros_like(t) for n, t in theta.items()} for _ in shards]
    replicas = [copy.deepcopy(model) for _ in shards]
    eval_x, eval_y = eval_on if eval_on is not None else (x, y)
    history = [evaluate(model, eval_x, eval_y)]
    for _ in range(rounds):
        for replica, v, shard in zip(replicas, velocity, shards):
            params = dict(replica.named_parameters())
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(theta[n])                                   # start from the shared θ
            for _ in range(local_steps):
                g = _loss_and_gradient(replica, x[shard], y[shard])
                with torch.no_grad():
                    for n in v:
                        v[n].mul_(momentum).add_(g[n])                  # v ← μ v + ∇L_i
                sgd_step(params, v, lr, out=params)                     # θ_i ← θ_i − η v
        theta = average_parameters(replicas, weights)                   # θ = Σ w_i θ_i / Σ w_i
        if momentum_policy == "average":
            averaged = aggregate_gradients(velocity, weights)
            velocity = [{n: t.clone() for n, t in averaged.items()} for _ in shards]
        elif momentum_policy == "reset":
            velocity = [{n: torch.zeros_like(t) for n, t in theta.items()} for _ in shards]
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(theta[n])
            # Client drift: how far the workers' models wandered from their average.
            drift = np.mean([math.sqrt(sum(float(((p - theta[n]) ** 2).sum()) for n, p in r.named_parameters()))
                             for r in replicas])
        history.append({**evaluate(model, eval_x, eval_y), "drift": float(drift)})
    return {"model": model, "workers": replicas, "history": history}


def synchronous_sgd(x: torch.Tensor, y: torch.Tensor, shards: Sequence[np.ndarray], *, steps: int, lr: float,
                    momentum: float = 0.0, model: torch.nn.Module | None = None, seed: int = 0,
                    eval_on: tuple | None = None) -> dict:
    """The reference: synchronous data parallelism, one SGD (with momentum) step per round on
    the union of the shards, which is one worker on all their samples (``torch.optim.SGD``).
    Returns the model and the history of its loss and accuracy on ``eval_on``."""
    model = model if model is not None else mlp((x.shape[1], 32, int(y.max()) + 1), seed=seed)
    everything = np.concatenate(list(shards))
    eval_x, eval_y = eval_on if eval_on is not None else (x, y)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    history = [evaluate(model, eval_x, eval_y)]
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x[everything]), y[everything]).backward()
        opt.step()
        history.append(evaluate(model, eval_x, eval_y))
    return {"model": model, "history": history}


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def communication_per_epoch(num_parameters: int, num_workers: int, local_steps: int, *,
                            steps_per_epoch: int = 1, bytes_per_value: int = 4) -> dict[str, float]:
    """What one worker sends per epoch when the models are averaged every H local steps by a
    ring all-reduce: rounds = steps_per_epoch / H, each sending 2 (K−1)/K · P values."""
    rounds = steps_per_epoch / local_steps
    per_round = 2 * (num_workers - 1) / num_workers * num_parameters * bytes_per_value
    return {"rounds": rounds, "bytes": rounds * per_round}


def permute_hidden_units(model: torch.nn.Sequential, permutation: Sequence[int]) -> torch.nn.Sequential:
    """A copy of a one-hidden-layer MLP (Linear, ReLU, Linear) with its hidden units reordered.

    Row i of the first layer and column i of the second move together, so the
    copy computes exactly the same function, with different parameters. The
    average of a network and its permuted copy is in general a different, worse
    network: why averaging needs a common starting point.
    """
    first, last = model[0], model[-1]
    permutation = torch.as_tensor(list(permutation))
    if sorted(permutation.tolist()) != list(range(first.out_features)):
        raise ValueError(f"permutation must reorder all {first.out_features} hidden units exactly once")
    permuted = copy.deepcopy(model)
    with torch.no_grad():
        permuted[0].weight.copy_(first.weight[permutation])
        permuted[0].bias.copy_(first.bias[permutation])
        permuted[-1].weight.copy_(last.weight[:, permutation])
    return permuted


# ======================================================== real processes
def average_parameters_(params: torch.nn.Module | Iterable[torch.Tensor], *, weight: float | None = None,
                        group=None) -> None:
    """Seed 3.2 across processes: θ ← 1/K Σ_r θ_r (or Σ_r w_r θ_r / Σ_r w_r with ``weight``),
    in place, for every trainable parameter. Optimizer state and buffers are left alone."""
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    tensors = [p.detach() for p in params if p.requires_grad]
    allreduce_mean_(tensors, weight=weight, group=group)


def local_sgd_against_torch(rank: int, world_size: int, config: dict) -> dict:
    """Local SGD two ways in the same process, on this rank's non-IID shard of the digits:
    ours (``average_parameters_`` every H steps) and torch's ``PeriodicModelAverager``
    (period H). Both follow torch's schedule: average after steps 0, H, 2H, ... Returns
    the largest parameter difference after each step and the final test accuracy."""
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

    from .data import digits, dirichlet_split

    X, y = (torch.from_numpy(a) for a in digits())
    shards = dirichlet_split(y[:1500].numpy(), world_size, config.get("alpha", 0.1), seed=config.get("seed", 0))
    mine = torch.from_numpy(shards[rank])
    period, lr, batch = config.get("period", 3), config.get("lr", 0.5), config.get("batch", 32)
    ours, theirs = mlp((64, 32, 10), seed=config.get("seed", 0)), mlp((64, 32, 10), seed=config.get("seed", 0))
    opts = [torch.optim.SGD(m.parameters(), lr=lr) for m in (ours, theirs)]
    averager = PeriodicModelAverager(period=period, warmup_steps=0)
    gen = torch.Generator().manual_seed(config.get("seed", 0) + rank)
    differences = []
    for step in range(config.get("steps", 12)):
        pick = mine[torch.randint(len(mine), (batch,), generator=gen)]
        for model, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            F.cross_entropy(model(X[pick]), y[pick]).backward()
            opt.step()
        if step % period == 0:
            average_parameters_(ours)
        averager.average_parameters(theirs.parameters())
        with torch.no_grad():
            differences.append(max(float((p - q).abs().max()) for p, q in
                                   zip(ours.parameters(), theirs.parameters())))
    return {"differences": differences, "shard size": len(mine),
            "test": evaluate(ours, X[1500:], y[1500:])}


def check_weighted_average(rank: int, world_size: int, seed: int = 0) -> float:
    """``average_parameters_(weight=w)`` against a re-computation from all ranks' parameters
    gathered with ``all_gather``; the largest difference."""
    gen = torch.Generator().manual_seed(seed + rank)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64))
              for shape in ((5, 3), (3,), (7,))]
    weight = float(rank + 1) ** 2
    gathered_params = [[torch.empty_like(p) for _ in range(world_size)] for p in params]
    for p, bucket in zip(params, gathered_params):
        dist.all_gather(bucket, p.detach())
    weights = [torch.empty(1, dtype=torch.float64) for _ in range(world_size)]
    dist.all_gather(weights, torch.tensor([weight], dtype=torch.float64))
    w = np.array([float(t) for t in weights])
    expected = [sum(w[r] * bucket[r].numpy() for r in range(world_size)) / w.sum() for bucket in gathered_params]
    average_parameters_(params, weight=weight)
    return max(float(np.abs(p.detach().numpy() - e).max()) for p, e in zip(params, expected))
