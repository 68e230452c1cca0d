"""Chapter 04's runs: local SGD and FedAvg on the digits against synchronous SGD and each
worker alone; our averaging over processes against PyTorch's ``PeriodicModelAverager``."""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..costmodel import communication_per_epoch
from ..data import digits_split, dirichlet_split, iid_split
from ..model_averaging import allreduce_parameters_, allreduce_parameters_weighted_, local_sgd
from ..models import evaluate, mlp, parameter_count
from ..util import max_abs_difference


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


def shards_for(num_workers: int, alpha: float | None, seed: int = 0) -> list[np.ndarray]:
    """IID shards of the 1,500 training digits for ``alpha=None``, else a Dirichlet label-skew
    split with concentration α (chapter 04's α, not the latency α of the alpha-beta model)."""
    _, y, _, _ = digits_split()
    if alpha is None:
        return iid_split(len(y), num_workers, seed=seed)
    return dirichlet_split(y.numpy(), num_workers, alpha, seed=seed)


def label_counts(num_workers: int, alpha: float | None) -> np.ndarray:
    """How many samples of each label each worker holds: (workers, 10)."""
    _, y, _, _ = digits_split()
    return np.array([np.bincount(y[s].numpy(), minlength=10) for s in shards_for(num_workers, alpha)])


@functools.lru_cache(maxsize=256)     # the widget and the chapter's figures ask for the same runs
def compare_schemes(num_workers: int = 4, local_steps: int = 8, alpha: float | None = 0.1, lr: float = 0.5,
                    total_steps: int = 160) -> dict:
    """Test accuracy of local SGD (averaged every H steps), synchronous data parallelism and
    each worker alone, all for the same number of local steps on the same shards."""
    x, y, x_test, y_test = digits_split()
    shards = shards_for(num_workers, alpha)
    rounds = max(total_steps // local_steps, 1)
    averaged = local_sgd(x, y, shards, local_steps=local_steps, rounds=rounds, lr=lr, eval_on=(x_test, y_test))
    sync = synchronous_sgd(x, y, shards, steps=rounds * local_steps, lr=lr, eval_on=(x_test, y_test))
    alone = [synchronous_sgd(x, y, [shard], steps=rounds * local_steps, lr=lr)["model"] for shard in shards]
    return {
        "averaged": [h["accuracy"] for h in averaged["history"]],
        "averaged steps": [r * local_steps for r in range(rounds + 1)],
        "synchronous": [h["accuracy"] for h in sync["history"]],
        "alone": [evaluate(m, x_test, y_test)["accuracy"] for m in alone],
        "shard sizes": [len(s) for s in shards],
        "communication": communication_per_epoch(parameter_count(averaged["model"]), num_workers, local_steps),
    }


def local_sgd_against_torch(rank: int, world_size: int, config: dict) -> dict:
    """Local SGD two ways in the same process, on this rank's non-IID shard of the digits:
    ours (``average_parameters_`` every H steps) and torch's ``PeriodicModelAverager``
    (period H). Both follow torch's schedule: average after steps 0, H, 2H, ... Returns
    the largest parameter difference after each step and the final test accuracy."""
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

    x_train, y_train, x_test, y_test = digits_split()
    shards = dirichlet_split(y_train.numpy(), world_size, config.get("alpha", 0.1), seed=config.get("seed", 0))
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
            F.cross_entropy(model(x_train[pick]), y_train[pick]).backward()
            opt.step()
        if step % period == 0:
            allreduce_parameters_(ours)
        averager.average_parameters(theirs.parameters())
        differences.append(max_abs_difference(ours, theirs))
    return {"differences": differences, "shard size": len(mine),
            "test": evaluate(ours, x_test, y_test)}


def check_weighted_average(rank: int, world_size: int, seed: int = 0) -> float:
    """``allreduce_parameters_weighted_`` against a re-computation from all ranks' parameters
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
    allreduce_parameters_weighted_(params, weight)
    return max(float(np.abs(p.detach().numpy() - e).max()) for p, e in zip(params, expected))
