"""Parameter averaging (seed 3.2, "task parallelism"): K workers simulated, and over processes.

The article's formulas: each worker trains its own copy of the model on its own
data, θ_i ← θ_i − η ∇L_i, and the copies are averaged, θ = 1/K Σ_i θ_i. The
field calls this model averaging; averaging every H local steps is *local SGD*
(Stich 2019, Lin et al. 2020), and with clients holding private data it is
*federated averaging* (McMahan et al. 2017).

It only makes sense for replicas of one architecture that start from the same
θ. With H = 1, plain SGD and weights equal to the shard sizes, one round is
exactly one step of synchronous data parallelism.

The first half simulates K workers in one process (numpy networks of chapter
02, and torch MLPs on the digits); the second averages over a real process
group: :func:`allreduce_parameters_` (every rank ends with the mean) and
:func:`allreduce_parameters_weighted_` (FedAvg's weights).
"""

from __future__ import annotations

import copy
import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .collectives import allreduce_mean_, check_weight
from .data import even_shard_sizes, split_batch
from .formulas import aggregate_gradients, average_parameters, sgd_step
from .models import evaluate, mlp
from .util import whole_number


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
    whole_number("local_steps (H)", local_steps)


# ===================================================================== torch
def _loss_and_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """∇L_i, by parameter name: the gradient of the mean cross-entropy of ``model`` on (x, y)."""
    names, params = zip(*model.named_parameters())
    return dict(zip(names, torch.autograd.grad(F.cross_entropy(model(x), y), params)))


def local_sgd(x: torch.Tensor, y: torch.Tensor, shards: Sequence[np.ndarray], *, local_steps: int, rounds: int,
              lr: float, momentum: float = 0.0, momentum_policy: str = "local", weighted: bool = True,
              model: torch.nn.Module | None = None, seed: int = 0, eval_on: tuple | None = None) -> dict:
    """Local SGD (FedAvg with full local batches), K workers simulated in one process.

    Every round each worker starts from the shared θ, takes ``local_steps`` (H) steps of
    gradient descent on its whole shard, θ_i ← θ_i − η v_i with v_i ← μ v_i + ∇L_i (plain
    SGD when μ = 0), and the K copies are averaged, θ = Σ n_i θ_i / Σ n_i (plain mean if
    not ``weighted``). The momentum buffers v_i are then, by ``momentum_policy``: "local",
    kept per worker (as ``PeriodicModelAverager``, which never touches optimizer state);
    "average", averaged like θ (so H = 1 is exactly synchronous SGD with momentum); "reset".

    Returns the averaged model, each worker's last local model, and the history of the
    averaged model's loss and accuracy on ``eval_on`` (default: all data) with, after each
    round, the client *drift*: the mean distance ‖θ_i − θ‖ of the workers from their average.
    """
    _check_local_sgd(local_steps, momentum_policy, shards)
    model = model if model is not None else mlp((x.shape[1], 32, int(y.max()) + 1), seed=seed)
    weights = [len(s) for s in shards] if weighted else None
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    velocity = [{n: torch.zeros_like(t) for n, t in theta.items()} for _ in shards]
    replicas = [copy.deepcopy(model) for _ in shards]
    eval_x, eval_y = eval_on if eval_on is not None else (x, y)
    history = [evaluate(model, eval_x, eval_y)]
    for _ in range(rounds):
        for replica, v, shard in zip(replicas, velocity, shards):
            _local_steps(replica, v, theta, x[shard], y[shard], local_steps, lr, momentum)
        theta = average_parameters(replicas, weights)                   # θ = Σ w_i θ_i / Σ w_i
        if momentum_policy == "average":                                # v_i ← Σ w_i v_i / Σ w_i
            velocity = [{n: t.clone() for n, t in aggregate_gradients(velocity, weights).items()} for _ in shards]
        elif momentum_policy == "reset":                                # v_i ← 0
            velocity = [{n: torch.zeros_like(t) for n, t in theta.items()} for _ in shards]
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(theta[n])
        history.append({**evaluate(model, eval_x, eval_y), "drift": client_drift(replicas, theta)})
    return {"model": model, "workers": replicas, "history": history}


def _check_local_sgd(local_steps: int, momentum_policy: str, shards: Sequence) -> None:
    _check_local_steps(local_steps)
    if momentum_policy not in ("local", "average", "reset"):
        raise ValueError(f"momentum_policy is {momentum_policy!r}; expected 'local', 'average' or 'reset'")
    if len(shards) < 1 or any(len(s) == 0 for s in shards):
        raise ValueError("every worker needs a non-empty shard")


def _local_steps(replica: torch.nn.Module, v: dict, theta: dict, x: torch.Tensor, y: torch.Tensor,
                 steps: int, lr: float, momentum: float) -> None:
    """One worker's round: start from the shared θ, then H steps θ_i ← θ_i − η v, v ← μ v + ∇L_i."""
    params = dict(replica.named_parameters())
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(theta[n])
    for _ in range(steps):
        g = _loss_and_gradient(replica, x, y)
        with torch.no_grad():
            for n in v:
                v[n].mul_(momentum).add_(g[n])                  # v ← μ v + ∇L_i
        sgd_step(params, v, lr, out=params)                     # θ_i ← θ_i − η v


@torch.no_grad()
def client_drift(replicas: Sequence[torch.nn.Module], theta: dict) -> float:
    """How far the workers' models wandered from their average: the mean of ‖θ_i − θ‖."""
    return float(np.mean([math.sqrt(sum(float(((p - theta[n]) ** 2).sum()) for n, p in r.named_parameters()))
                          for r in replicas]))


def permute_hidden_units(model: torch.nn.Sequential, permutation: Sequence[int]) -> torch.nn.Sequential:
    """A copy of a one-hidden-layer MLP (Linear, ReLU, Linear) with its hidden units reordered.

    Row i of the first layer and column i of the second move together, so the
    copy computes exactly the same function, with different parameters. The
    average of a network and its permuted copy is in general a different, worse
    network: why averaging needs a common starting point.
    """
    first, last = model[0], model[-1]
    permutation = torch.as_tensor(list(permutation))
    if permutation.dtype.is_floating_point or permutation.dtype == torch.bool or permutation.is_complex():
        raise TypeError(f"permutation must hold whole numbers (unit indices), got dtype {permutation.dtype}")
    if sorted(permutation.tolist()) != list(range(first.out_features)):
        raise ValueError(f"permutation must reorder all {first.out_features} hidden units exactly once")
    permuted = copy.deepcopy(model)
    with torch.no_grad():
        permuted[0].weight.copy_(first.weight[permutation])
        permuted[0].bias.copy_(first.bias[permutation])
        permuted[-1].weight.copy_(last.weight[:, permutation])
    return permuted


# ======================================================== real processes
def _tensors(params: torch.nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """A module's trainable parameters (each shared, tied one once), or every tensor given."""
    if isinstance(params, torch.nn.Module):
        return [p.detach() for p in params.parameters() if p.requires_grad]
    return [p.detach() for p in params]


def _in_group(group) -> bool:
    """Is this rank a member of ``group``? (``get_rank`` is −1 on the ranks outside it.)"""
    return dist.get_rank(group) >= 0


def allreduce_parameters_(params: torch.nn.Module | Iterable[torch.Tensor], *, group=None) -> None:
    """Seed 3.2 across processes, θ ← 1/K Σ_r θ_r over the K ranks of ``group``, in place:
    flatten, all-reduce, divide, copy back (torch's ``model_averaging.utils.average_parameters``;
    here :func:`~nnpar_lite.collectives.allreduce_mean_`). A module's trainable parameters, or the
    tensors given; optimizer state and buffers are left alone, and so are the ranks outside ``group``."""
    tensors = _tensors(params)
    if tensors and _in_group(group):
        allreduce_mean_(tensors, group=group)


def allreduce_parameters_weighted_(params: torch.nn.Module | Iterable[torch.Tensor], weight: float, *,
                                   group=None) -> None:
    """θ ← Σ_r w_r θ_r / Σ_r w_r over the ranks of ``group``, in place, w_r being each rank's
    ``weight`` (FedAvg weights client r by its sample count n_r; a rank with w_r = 0 only
    receives). Σ_r w_r rides along in the same all-reduce
    (:func:`~nnpar_lite.collectives.allreduce_mean_`)."""
    check_weight(weight)
    tensors = _tensors(params)
    if tensors and _in_group(group):
        allreduce_mean_(tensors, weight=weight, group=group)


def average_parameters_(params: torch.nn.Module | Iterable[torch.Tensor], *, weight: float | None = None,
                        group=None) -> None:
    """The earlier name, kept for readers' code: :func:`allreduce_parameters_`, or with
    ``weight`` :func:`allreduce_parameters_weighted_`."""
    if weight is None:
        return allreduce_parameters_(params, group=group)
    return allreduce_parameters_weighted_(params, weight, group=group)
