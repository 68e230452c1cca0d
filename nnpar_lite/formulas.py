"""The article's formulas (seed 3.1: L = 1/N Σ_i L_i, θ ← θ − η∇L; seed 3.2: θ = 1/K Σ_i θ_i),
one short function each. Each takes one tree per worker (:mod:`.trees`), numpy or torch on any
device, and returns one: torch in, torch out, on the input's device. Bad input raises ValueError
or TypeError naming the worker and the leaf (:mod:`.checks`); inputs are never written."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from . import cache, checks
from .trees import as_tree, rebuild


def coefficients(weights: Sequence[float] | None, count: int) -> list[float]:
    """c_i = w_i / Σ_j w_j, each worker's share of the mean; 1/K each without weights."""
    w = checks.weights(weights, count)         # finite, ≥ 0, not all zero, one per worker
    return [1.0 / count] * count if w is None else [w_i / math.fsum(w) for w_i in w]


def average_losses(losses: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
    """Seed 3.1: L = Σ_i w_i L_i / Σ_i w_i, the article's L = 1/N Σ_i L_i when all w_i = 1.

    The plain mean is the whole batch's loss only for per-sample losses or equal shards;
    for shard means L_i over n_i samples pass ``weights=[n_0, n_1, ...]``. 0-d tensors in:
    a 0-d tensor out, with autograd flowing through."""
    L = checks.losses(losses)
    c = coefficients(weights, len(L))                             # c_i = w_i / Σ_j w_j
    total = sum(c_i * L_i for c_i, L_i in zip(c, L))              # L = Σ_i c_i L_i
    return total if isinstance(total, torch.Tensor) else np.float64(total)


def aggregate_gradients(grads: Sequence[Any], weights: Sequence[float] | None = None, *, out: Any = None,
                        check_finite: bool = True) -> Any:
    """Seed 3.1 step 5: g = Σ_i w_i g_i / Σ_i w_i, the plain mean 1/K Σ_i g_i without weights.

    With worker i's loss the mean over its n_i samples, ``weights=[n_0, ...]`` gives the
    gradient of the mean loss over all samples, uneven shards too. ``out`` (a tree) receives
    the result: a training loop reuses one buffer instead of allocating every step, and may
    skip the NaN/Inf check with ``check_finite=False``."""
    paths, g = checks.workers(grads, "gradient")                 # g[i]: worker i's leaves, checked
    c = coefficients(weights, len(g))                            # c_i = w_i / Σ_j w_j
    o = checks.out(out, g[0], paths, g, "gradient")              # out's leaves, or new ones
    weighted_sum(c, g, o, paths if check_finite else None, "gradient")   # o = Σ_i c_i g_i
    return rebuild(as_tree(grads[0]), o) if out is None else out


def average_parameters(params: Sequence[Any], weights: Sequence[float] | None = None, *, out: Any = None) -> Any:
    """Seed 3.2: θ = Σ_i w_i θ_i / Σ_i w_i, the article's θ = 1/K Σ_i θ_i without weights.

    One tree, ``state_dict`` or ``nn.Module`` per worker (a module's parameters; buffers are
    left out, as torch's model averagers do). Meaningful only for replicas of one model that
    started from the same θ (chapter 04). ``out``, a tree or a module, receives the result."""
    paths, theta = checks.workers(params, "parameter")           # θ[i]: worker i's leaves, checked
    c = coefficients(weights, len(theta))                        # c_i = w_i / Σ_j w_j
    o = checks.out(out, theta[0], paths, theta, "parameter")
    weighted_sum(c, theta, o, paths, "parameter")                # θ = Σ_i c_i θ_i
    return rebuild(as_tree(params[0]), o) if out is None else out


@torch.no_grad()
def sgd_step(params: Any, grads: Any, lr: float, *, out: Any = None) -> Any:
    """Seed 3.1 and 3.2: θ ← θ − η ∇L, leaf by leaf, into a new tree or into ``out`` (``params``
    itself, to update in place). Everything is checked before anything is written."""
    eta, (paths, thetas, gs) = checks.number(lr, "learning rate lr", non_negative=True), checks.step(params, grads)
    outs = checks.out(out, thetas, paths, [], "parameter")          # may be params: in place
    for leaf, (theta, g) in zip(outs, zip(thetas, gs)):
        for o, (theta_b, g_b) in cache.blocks_of(leaf, [theta, g]):
            torch.add(theta_b, g_b, alpha=-eta, out=o)     # o = θ − η g
    return rebuild(params, outs) if out is None else out


@torch.no_grad()
def weighted_sum(c: Sequence[float], xs: Sequence[list], outs: list, paths: list[str] | None = None,
                 what: str = "gradient") -> None:
    """o = Σ_i c_i x_i for every leaf: o = c_0 x_0, then o += c_i x_i, into the buffers ``outs``
    (one pass over memory per worker, no temporaries). A cache-sized block at a time
    (:mod:`.cache`): the block of o stays in cache while the inputs stream past it, and the
    NaN/Inf check (when ``paths`` names the leaves) reads it there, not from memory."""
    for leaf, out in enumerate(outs):
        for o, x in cache.blocks_of(out, [x_i[leaf] for x_i in xs]):
            torch.mul(x[0], c[0], out=o)                 # o = c_0 x_0
            for x_i, c_i in zip(x[1:], c[1:]):
                o.add_(x_i, alpha=c_i)                   # o += c_i x_i
            if paths is not None:                        # a NaN or Inf in any x_i makes o NaN or Inf
                checks.finite_sum(o, x, what, paths[leaf])
