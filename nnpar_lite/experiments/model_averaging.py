"""Chapter 04's runs: local SGD and FedAvg on the digits against synchronous SGD and each
worker alone; our averaging over processes against PyTorch's ``PeriodicModelAverager`` and
against a re-computation from every rank's parameters.

The chapter's training runs are in float64: their accuracies then come out the same on any
CPU (float32 rounding, which differs between CPU kernels, could flip a near-tie prediction).
"""

from __future__ import annotations

import copy
import functools
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..costmodel import communication_per_epoch
from ..data import digits_split, dirichlet_split, iid_split
from ..formulas import average_parameters
from ..model_averaging import allreduce_parameters_, allreduce_parameters_weighted_, local_sgd
from ..models import evaluate, mlp, parameter_count
from ..util import max_abs_difference, one_thread

SIZES = (64, 32, 10)     # the chapter's network: 64 pixels, 32 hidden units, 10 digits


def digits64() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one train/test cut of the digits (``data.digits_split``), pixels in float64."""
    x, y, x_test, y_test = digits_split()
    return x.double(), y, x_test.double(), y_test


def fresh_model(sizes: Sequence[int] = SIZES, seed: int = 0) -> torch.nn.Sequential:
    """The chapter's starting point θ_0: ``mlp(sizes, seed=seed)`` in float64."""
    return mlp(tuple(sizes), seed=seed, dtype=torch.float64)


def synchronous_sgd(x: torch.Tensor, y: torch.Tensor, shards: Sequence[np.ndarray], *, steps: int, lr: float,
                    momentum: float = 0.0, model: torch.nn.Module | None = None, seed: int = 0,
                    eval_on: tuple | None = None, record: bool = True) -> dict:
    """The reference: synchronous data parallelism, one SGD (with momentum) step per round on
    the union of the shards, which is one worker on all their samples (``torch.optim.SGD``).
    Returns the model and the history of its loss and accuracy on ``eval_on`` (after every
    step, or only at the start without ``record``)."""
    model = model if model is not None else mlp((x.shape[1], 32, int(y.max()) + 1), seed=seed)
    everything = np.concatenate(list(shards))
    eval_x, eval_y = eval_on if eval_on is not None else (x, y)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    history = [evaluate(model, eval_x, eval_y)]
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x[everything]), y[everything]).backward()
        opt.step()
        if record:
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


# The widget asks for these runs again and again: each is cached on what it depends on, so a
# move of H retrains only the averaged run, and synchronous SGD, which sees every sample
# whatever the split, is trained once per learning rate.
@functools.lru_cache(maxsize=32)
def synchronous_accuracy(lr: float, steps: int) -> tuple[float, ...]:
    """Test accuracy of synchronous data parallelism (all 1,500 samples a step) after each step."""
    x, y, x_test, y_test = digits64()
    with one_thread():                  # a small model: more threads only wait for each other
        run = synchronous_sgd(x, y, [np.arange(len(y))], steps=steps, lr=lr, model=fresh_model(),
                              eval_on=(x_test, y_test))
    return tuple(h["accuracy"] for h in run["history"])


@functools.lru_cache(maxsize=128)
def alone_accuracy(num_workers: int, alpha: float | None, lr: float, steps: int) -> tuple[float, ...]:
    """Test accuracy of each worker trained alone on its own shard: ``steps`` full-batch SGD steps
    θ_k ← θ_k − η ∇L_k from θ_0 (``fresh_model()``), as ``synchronous_sgd`` on that shard alone.
    The K trainings are independent, so they run side by side: one batched product per layer
    for all K models (shards padded, padding weighted 0), a K-th of the Python overhead."""
    x, y, x_test, y_test = digits64()
    shards = shards_for(num_workers, alpha)
    xs, ys, per_sample = _padded(x, y, shards)
    theta = [t.detach().expand(len(shards), *t.shape).clone().requires_grad_() for t in _layers_as_matrices()]
    with one_thread():
        for _ in range(steps):
            losses = F.cross_entropy(_batched_forward(theta, xs).flatten(0, 1), ys.flatten(), reduction="none")
            gradients = torch.autograd.grad((losses * per_sample.flatten()).sum(), theta)   # Σ_k L_k: ∇ of each θ_k apart
            with torch.no_grad():
                for t, g in zip(theta, gradients):
                    t -= lr * g
        with torch.no_grad():
            predictions = _batched_forward(theta, x_test.expand(len(shards), *x_test.shape)).argmax(-1)
    return tuple(float((p == y_test).float().mean()) for p in predictions)     # as models.evaluate counts


def _padded(x, y, shards):
    """Each shard's samples padded to the largest shard: (K, n, 64) inputs, (K, n) labels, and
    (K, n) weights 1/n_k on a shard's samples, 0 on padding, so that Σ weight · loss is L_k."""
    size = max(len(s) for s in shards)
    xs, ys = x.new_zeros(len(shards), size, x.shape[1]), y.new_zeros(len(shards), size)
    per_sample = x.new_zeros(len(shards), size)
    for k, shard in enumerate(shards):
        xs[k, :len(shard)], ys[k, :len(shard)], per_sample[k, :len(shard)] = x[shard], y[shard], 1.0 / len(shard)
    return xs, ys, per_sample


def _layers_as_matrices() -> list[torch.Tensor]:
    """θ_0 of the chapter's network as x @ W1 + b1, relu, @ W2 + b2: [W1, b1, W2, b2]."""
    first, last = fresh_model()[0], fresh_model()[-1]
    return [first.weight.T, first.bias, last.weight.T, last.bias]


def _batched_forward(theta, xs):
    """K copies of the network at once: logits (K, n, 10) for inputs (K, n, 64)."""
    w1, b1, w2, b2 = theta
    return torch.baddbmm(b2[:, None], torch.relu(torch.baddbmm(b1[:, None], xs, w1)), w2)


@functools.lru_cache(maxsize=256)
def compare_schemes(num_workers: int = 4, local_steps: int = 8, alpha: float | None = 0.1, lr: float = 0.5,
                    total_steps: int = 96) -> dict:
    """Test accuracy of local SGD (averaged every H steps), synchronous data parallelism and
    each worker alone, all for the same number of local steps on the same shards."""
    x, y, x_test, y_test = digits64()
    shards = shards_for(num_workers, alpha)
    rounds = max(total_steps // local_steps, 1)
    with one_thread():
        averaged = local_sgd(x, y, shards, local_steps=local_steps, rounds=rounds, lr=lr, model=fresh_model(),
                             eval_on=(x_test, y_test))
    return {
        "averaged": [h["accuracy"] for h in averaged["history"]],
        "averaged steps": [r * local_steps for r in range(rounds + 1)],
        "synchronous": list(synchronous_accuracy(lr, rounds * local_steps)),
        "alone": list(alone_accuracy(num_workers, alpha, lr, rounds * local_steps)),
        "shard sizes": [len(s) for s in shards],
        "communication": communication_per_epoch(parameter_count(averaged["model"]), num_workers, local_steps),
    }


def local_sgd_against_synchronous(num_workers: int = 3, alpha: float | None = 0.5, *, rounds: int = 20,
                                  lr: float = 0.1, settings=((0.0, "local"), (0.9, "local"), (0.9, "average"),
                                                             (0.9, "reset"))) -> dict:
    """Local SGD with H = 1 against synchronous SGD (``torch.optim.SGD`` on the union of the
    shards), from the same θ on the same uneven shards, for each (momentum μ, momentum policy):
    the largest parameter difference after ``rounds`` rounds. With H = 1 seed 3.2 is seed 3.1."""
    x, y, _, _ = digits64()
    shards = shards_for(num_workers, alpha)
    gaps = {}
    with one_thread():
        for momentum, policy in settings:
            averaged = local_sgd(x, y, shards, local_steps=1, rounds=rounds, lr=lr, momentum=momentum,
                                 momentum_policy=policy, model=fresh_model())["model"]
            reference = synchronous_sgd(x, y, shards, steps=rounds, lr=lr, momentum=momentum, model=fresh_model(),
                                        record=False)["model"]
            gaps[momentum, policy] = max_abs_difference(averaged, reference)
    return {"shard sizes": [len(s) for s in shards], "gaps": gaps}


def accuracy_against_communication(local_steps: Sequence[int] = (1, 2, 4, 8, 16, 32), num_workers: int = 4,
                                   alphas: Sequence[float | None] = (None, 0.1), lr: float = 0.5,
                                   total_steps: int = 96) -> list[dict]:
    """For each H: the bytes a worker sends per epoch (one local step per epoch: each uses its
    whole shard) and the test accuracy after ``total_steps`` local steps, per split (α)."""
    rows = []
    for h in local_steps:
        runs = {alpha: compare_schemes(num_workers, h, alpha, lr, total_steps) for alpha in alphas}
        rows.append({"H": h, **runs[alphas[0]]["communication"],
                     "accuracy": {alpha: run["averaged"][-1] for alpha, run in runs.items()}})
    return rows


def drift_against_h(local_steps: Sequence[int] = (1, 2, 4, 8, 16), num_workers: int = 4,
                    alphas: Sequence[float | None] = (None, 0.1), lr: float = 0.5, total_steps: int = 64) -> dict:
    """The mean client drift ‖θ_i − θ̄‖ after a round, over ``total_steps`` local steps, for each H
    and each split (α): {α: [drift for each H]}."""
    x, y, _, _ = digits64()
    drift = {alpha: [] for alpha in alphas}
    for alpha in alphas:
        shards = shards_for(num_workers, alpha)
        for h in local_steps:
            with one_thread():
                run = local_sgd(x, y, shards, local_steps=h, rounds=max(total_steps // h, 1), lr=lr,
                                model=fresh_model())
            drift[alpha].append(float(np.mean([round_["drift"] for round_ in run["history"][1:]])))
    return drift


def train_alone(shard: np.ndarray, *, seed: int, sizes: Sequence[int] = (64, 16, 10), steps: int = 300,
                lr: float = 0.5) -> torch.nn.Sequential:
    """One network trained on one shard from the starting point ``mlp(sizes, seed=seed)``."""
    x, y, _, _ = digits64()
    with one_thread():
        return synchronous_sgd(x, y, [shard], steps=steps, lr=lr, model=fresh_model(sizes, seed), record=False)["model"]


def accuracy_of_average(models: Sequence[torch.nn.Module]) -> float:
    """Test accuracy of the network whose parameters are the plain average of ``models``',
    θ = 1/K Σ_i θ_i (seed 3.2), averaged once."""
    _, _, x_test, y_test = digits64()
    merged = copy.deepcopy(models[0])
    average_parameters(list(models), out=merged)
    return evaluate(merged, x_test, y_test)["accuracy"]


def batch_norm_replicas(num_workers: int = 2, alpha: float | None = 0.1, *, steps: int = 5,
                        lr: float = 0.1) -> list[torch.nn.Sequential]:
    """Replicas of one MLP with BatchNorm (float64, same θ), each trained ``steps`` SGD steps on its
    own shard: their running means and variances, buffers, follow their own data."""
    x, y, _, _ = digits64()
    replicas = []
    for shard in shards_for(num_workers, alpha):
        model = mlp(SIZES, seed=0, batch_norm=True, dtype=torch.float64)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(steps):                 # training mode: each forward updates the running statistics
            optimizer.zero_grad()
            F.cross_entropy(model(x[shard]), y[shard]).backward()
            optimizer.step()
        replicas.append(model)
    return replicas


def accuracy_on_test(model: torch.nn.Module) -> float:
    """A model's accuracy on the 297 test digits."""
    _, _, x_test, y_test = digits64()
    return evaluate(model, x_test, y_test)["accuracy"]


# ======================================================== real processes
def local_sgd_against_torch(rank: int, world_size: int, config: dict) -> dict:
    """Local SGD two ways in the same process, on this rank's non-IID shard of the digits:
    ours (``allreduce_parameters_`` every H steps) and torch's ``PeriodicModelAverager``
    (period H). Both follow torch's schedule: average after steps 0, H, 2H, ... Returns
    the largest parameter difference after each step and the final test accuracy."""
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

    x_train, y_train, x_test, y_test = digits_split()
    shards = dirichlet_split(y_train.numpy(), world_size, config.get("alpha", 0.1), seed=config.get("seed", 0))
    mine = torch.from_numpy(shards[rank])
    period, lr, batch = config.get("period", 3), config.get("lr", 0.5), config.get("batch", 32)
    ours, theirs = mlp(SIZES, seed=config.get("seed", 0)), mlp(SIZES, seed=config.get("seed", 0))
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


def check_weighted_average(rank: int, world_size: int, weights: Sequence[float], seed: int = 0) -> float:
    """``allreduce_parameters_weighted_`` with rank r's weight ``weights[r]`` against a numpy
    re-computation, Σ_r w_r θ_r / Σ_r w_r, from every rank's parameters gathered with
    ``all_gather``; parameters of 15, 3 and 7 values (25 in all, which 2 and 3 ranks do not
    divide). The largest difference."""
    gen = torch.Generator().manual_seed(seed + rank)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64))
              for shape in ((5, 3), (3,), (7,))]
    gathered = [[torch.empty_like(p) for _ in range(world_size)] for p in params]
    for p, bucket in zip(params, gathered):
        dist.all_gather(bucket, p.detach())
    w = np.array(weights, dtype=np.float64)
    expected = [sum(w[r] * bucket[r].numpy() for r in range(world_size)) / w.sum() for bucket in gathered]
    allreduce_parameters_weighted_(params, weights[rank])
    return max(float(np.abs(p.detach().numpy() - e).max()) for p, e in zip(params, expected))
