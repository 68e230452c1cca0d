"""Chapter 09's asynchrony: stale-gradient SGD on the digits for several staleness values and
learning rates; stale gradient descent on a quadratic against its stability bound; a parameter
server on real processes, and its run replayed in one process.

The algorithms are in :mod:`nnpar_lite.asynchronous` (and the quadratic in
:mod:`nnpar_lite.asynchronous`); here is only what runs and compares them. Runs are
in float64, so that their accuracies come out the same on any CPU.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from ...asynchronous import delayed_quadratic, largest_stable_lr_under_staleness, serve, stale_sgd, work
from ...data import digits_split
from ...models import evaluate, mlp
from ...util import one_thread


def worker_batches(worker: int, config: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Worker ``worker``'s batches (1 … K): its own random draw of the 1,500 training digits,
    ``batches`` batches of ``batch`` images, in float64."""
    x, y, _, _ = digits_split()
    gen = torch.Generator().manual_seed(1000 * config.get("seed", 0) + worker)
    picks = torch.randint(0, len(x), (config["batches"], config["batch"]), generator=gen)
    return [(x[p].double(), y[p]) for p in picks]


def parameter_server_run(rank: int, world_size: int, config: dict) -> dict:
    """Rank 0 is the parameter server (``asynchronous.serve``) for ``updates`` updates; ranks
    1 … K are workers (``asynchronous.work``) on their own digits, worker k slowed down by
    ``delays[k − 1]`` seconds per gradient. With ``head start`` k, worker 2 computes its first
    gradient only once worker 1 has had k updates applied (:func:`_head_start`), so that it is
    k updates stale whatever the machine's timing. Rank 0 returns the record of every update and
    the final parameters; a worker returns how many gradients it sent."""
    model = mlp(config["sizes"], seed=config.get("seed", 0), dtype=torch.float64)
    if rank == 0:
        records = serve(model, config["lr"], config["updates"])
        start = records[0]["time"] if records else 0.0
        for r in records:
            r["time"] -= start
        return {"records": records, "params": [p.detach().clone() for p in model.parameters()]}
    return {"sent": work(model, worker_batches(rank, config), delay=config.get("delays", [0.0] * world_size)[rank - 1],
                         before_gradient=_head_start(rank, config.get("head start", 0)))}


def _head_start(rank: int, updates: int):
    """Worker 2 waits, before its first gradient, for a message from worker 1, which sends it
    once ``updates`` of its own gradients have been applied (it has their replies); None (no
    waiting) for other ranks or a head start of 0."""
    token = torch.zeros(1)
    if updates and rank == 1:
        return lambda sent: dist.send(token, dst=2) if sent == updates else None
    if updates and rank == 2:
        return lambda sent: dist.recv(token, src=1) if sent == 0 else None
    return None


def replay_parameter_server(records: Sequence[dict], config: dict) -> torch.nn.Module:
    """The server's run again, in one process: ``stale_sgd`` on the batches in the order the
    server applied them, each with the staleness it had. Equal to the real run's θ."""
    model = mlp(config["sizes"], seed=config.get("seed", 0), dtype=torch.float64)
    batches = {w: worker_batches(w, config) for w in {r["worker"] for r in records}}
    stale_sgd(model, [batches[r["worker"]][r["batch"]] for r in records], config["lr"],
              [r["staleness"] for r in records])
    return model


@functools.lru_cache(maxsize=None)
def staleness_sweep(taus: tuple = (0, 1, 2, 4, 8, 16), lrs: tuple = (0.1, 0.3, 1.0), *, steps: int = 200,
                    batch: int = 32, sizes: tuple = (64, 32, 10), seed: int = 0) -> dict:
    """Test accuracy of stale-gradient SGD (``asynchronous.stale_sgd``) on the digits after
    ``steps`` updates, for each learning rate and staleness τ: {lr: [accuracy for each τ]},
    the same batches in the same order for every run (float64)."""
    x, y, x_test, y_test = digits_split()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    batches = [(x[rows].double(), y[rows]) for rows in
               (order[(s * batch + torch.arange(batch)) % len(x)] for s in range(steps))]
    result = {}
    with one_thread():
        for lr in lrs:
            result[lr] = []
            for tau in taus:
                model = mlp(sizes, seed=seed, dtype=torch.float64)
                losses = stale_sgd(model, batches, lr, tau)
                diverged = not all(np.isfinite(losses))
                result[lr].append(0.0 if diverged else evaluate(model, x_test.double(), y_test)["accuracy"])
    return {"taus": list(taus), "accuracy": result}


def quadratic_stability(taus: Sequence[int] = (0, 1, 2, 4, 8, 16), factors: Sequence[float] = (0.7, 1.3),
                        steps: int = 400) -> dict:
    """Stale gradient descent on L = θ² / 2 (λ = 1) at η = factor × the bound of
    ``asynchronous.largest_stable_lr_under_staleness``, for each τ: whether it converged (|θ| below 1/2 over the
    last 20 steps) — below the bound it must, above it must not. Also the bound for τ = 0 … max."""
    runs = {}
    for tau in taus:
        for factor in factors:
            lr = factor * largest_stable_lr_under_staleness(1.0, tau)
            runs[(tau, lr)] = max(abs(t) for t in delayed_quadratic(lr, tau, steps=steps)[-20:]) < 0.5
    return {"taus": list(taus), "bound": [largest_stable_lr_under_staleness(1.0, t) for t in range(max(taus) + 1)], "runs": runs}
