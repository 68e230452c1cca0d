"""Data parallelism (seed 3.1), simulated with K workers in one process.

The article's six steps, for a model with ``params``, ``gradients(X, Y)`` and
``loss(X, Y)`` (the networks of :mod:`nnpar_lite.models`):

1. split the batch into K shards;
2.–4. each worker runs forward, loss and backward on its shard, with the same θ;
5. aggregate the K gradients: ``aggregate_gradients``, weighted by shard size;
6. one update of θ: ``sgd_step``.

With each worker's loss the mean over its shard and the weights the shard
sizes, step 5 gives exactly the gradient of the mean loss over the whole batch,
so K workers take exactly the steps of one worker on the big batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

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
