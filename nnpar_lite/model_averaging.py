"""Parameter averaging (seed 3.2, "task parallelism"), simulated with K workers in one process.

The article's formulas: each worker trains its own copy of the model on its own
data, θ_i ← θ_i − η ∇L_i, and the copies are averaged, θ = 1/K Σ_i θ_i. The
field calls this model averaging; averaging every H local steps is *local SGD*
(Stich 2019, Lin et al. 2020), and with clients holding private data it is
*federated averaging* (McMahan et al. 2017).

It only makes sense for replicas of one architecture that start from the same
θ. With H = 1, plain SGD and weights equal to the shard sizes, one round is
exactly one step of synchronous data parallelism.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .data import even_shard_sizes
from .data_parallel import split_batch
from .formulas import average_parameters, sgd_step


def train_local_sgd(model, X: np.ndarray, Y: np.ndarray, *, num_workers: int, rounds: int,
                    local_steps: int, lr: float, shard_sizes: Sequence[int] | None = None,
                    weighted: bool = True) -> list[float]:
    """K replicas of ``model``, each taking ``local_steps`` SGD steps on its shard per
    round, then averaged; ``model`` ends as the average. Returns the loss of the
    averaged model on the whole batch before the first round and after each."""
    if isinstance(local_steps, bool) or not isinstance(local_steps, int) or local_steps < 1:
        raise ValueError(f"local_steps (H) is {local_steps!r}; expected an integer ≥ 1")
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
