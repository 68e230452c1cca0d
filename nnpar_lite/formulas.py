"""The article's formulas (seed 3.1: L = 1/N Σ_i L_i, θ ← θ − η∇L; seed 3.2: θ = 1/K Σ_i θ_i),
one short function each. Each takes one tree per worker (:mod:`.trees`), numpy or torch on any
device, and returns one: torch in, torch out, on the input's device. Bad input raises ValueError
or TypeError naming the worker and the leaf (:mod:`.checks`); inputs are never written."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from . import checks
from .trees import as_tree, empty_like, rebuild


def average_losses(losses: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
    """Seed 3.1: L = Σ_i w_i L_i / Σ_i w_i, the article's L = 1/N Σ_i L_i when all w_i = 1.

    The plain mean is the whole batch's loss only for per-sample losses or equal shards;
    for shard means L_i over n_i samples pass ``weights=[n_0, n_1, ...]``. 0-d tensors in:
    a 0-d tensor out, with autograd flowing through."""
    L = checks.losses(losses)
    c = checks.coefficients(weights, len(L))                      # c_i = w_i / Σ_j w_j
    total = sum(c_i * L_i for c_i, L_i in zip(c, L))
    return total if isinstance(total, torch.Tensor) else np.float64(total)


def aggregate_gradients(grads: Sequence[Any], weights: Sequence[float] | None = None, *, out: Any = None,
                        check_finite: bool = True) -> Any:
    """Seed 3.1 step 5: g = Σ_i w_i g_i / Σ_i w_i, the plain mean 1/K Σ_i g_i without weights.

    With worker i's loss the mean over its n_i samples, ``weights=[n_0, ...]`` gives the
    gradient of the mean loss over all samples, uneven shards too. ``out`` (a tree) receives
    the result: a training loop reuses one buffer instead of allocating every step, and may
    skip the NaN/Inf check (one read of the result) with ``check_finite=False``."""
    return _weighted_mean(grads, weights, out, "gradient", check_finite)


def average_parameters(params: Sequence[Any], weights: Sequence[float] | None = None, *, out: Any = None) -> Any:
    """Seed 3.2: θ = Σ_i w_i θ_i / Σ_i w_i, the article's θ = 1/K Σ_i θ_i without weights.

    One tree, ``state_dict`` or ``nn.Module`` per worker (a module's parameters; buffers are
    left out, as torch's model averagers do). Meaningful only for replicas of one model that
    started from the same θ (chapter 04). ``out``, a tree or a module, receives the result."""
    return _weighted_mean(params, weights, out, "parameter")


@torch.no_grad()
def sgd_step(params: Any, grads: Any, lr: float, *, out: Any = None) -> Any:
    """Seed 3.1 and 3.2: θ ← θ − η ∇L, leaf by leaf, into a new tree or into ``out`` (``params``
    itself, to update in place). Everything is checked before anything is written."""
    eta, (paths, thetas, gs) = checks.number(lr, "learning rate lr", non_negative=True), checks.step(params, grads)
    outs = [empty_like(t) for t in thetas] if out is None else checks.out(out, thetas, paths, [], "parameter")
    for theta, g, o in zip(thetas, gs, outs):
        if isinstance(o, torch.Tensor):
            torch.add(theta, g, alpha=-eta, out=o)         # o = θ − η g
        else:
            np.subtract(theta, o.dtype.type(eta) * g, out=o)
    return rebuild(params, outs) if out is None else out


@torch.no_grad()
def _weighted_mean(trees: Sequence[Any], weights: Any, out: Any, what: str, check_finite: bool = True) -> Any:
    """Σ_i c_i x_i leaf by leaf, c_i = w_i / Σ_j w_j: one buffer, one multiply-add per worker."""
    paths, xs = checks.workers(trees, what)                # xs[i][leaf]: worker i's leaves
    c = checks.coefficients(weights, len(xs))
    template = as_tree(trees[0])                           # an nn.Module stands for its parameters
    outs = [empty_like(x) for x in xs[0]] if out is None else checks.out(as_tree(out), xs[0], paths, xs, what)
    for leaf, o in enumerate(outs):
        x = [x_i[leaf] for x_i in xs]
        if isinstance(o, torch.Tensor):                    # in place: no temporaries
            torch.mul(x[0], c[0], out=o)                   # o = c_0 x_0
            for x_i, c_i in zip(x[1:], c[1:]):
                o.add_(x_i, alpha=c_i)                     # o += c_i x_i
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                o[...] = sum(c_i * x_i for c_i, x_i in zip(c, x))
        if check_finite and not checks.finite(o):    # NaN or Inf in an x_i makes o NaN or Inf (0·Inf = NaN)
            bad = next((i for i, x_i in enumerate(x) if not checks.finite(x_i)), None)
            raise ValueError(f"{what} of worker {bad}, leaf {paths[leaf]!r} holds NaN or Inf" if bad is not None
                             else f"the weighted sum of the {what}s overflows at leaf {paths[leaf]!r} (inputs finite)")
    return rebuild(template, outs) if out is None else out
