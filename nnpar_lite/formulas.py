"""The article's formulas, one short function each, on numpy or torch, any device.

Seed section 3.1 (data parallelism):   L = 1/N Σ_i L_i,   θ ← θ − η ∇L
Seed section 3.2 (task parallelism):   θ_i ← θ_i − η ∇L_i,   θ = 1/K Σ_i θ_i

Every function takes one *tree* per worker (a tensor, an ndarray, or a
list/tuple/dict of them, such as a ``state_dict``) and returns a tree of the
same structure: torch in, torch out, on the input's device; numpy in, numpy
out. Bad input raises ``ValueError`` or ``TypeError`` naming the worker and the
leaf, and the inputs are never modified. The checking and the one-pass
arithmetic live in :mod:`nnpar_lite.trees`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np
import torch

from . import trees


def average_losses(losses: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
    """Seed 3.1: the loss of the whole batch from the workers' losses.

        L = Σ_i w_i L_i / Σ_i w_i        (the article's L = 1/N Σ_i L_i when w_i = 1)

    Without weights this is the plain mean, which equals the loss of the whole
    batch only when every ``L_i`` is a per-sample loss or all shards are the
    same size. When worker i's ``L_i`` is the *mean* over its n_i samples, pass
    ``weights=[n_0, n_1, ...]`` to get the mean over all samples.

    ``losses`` holds K scalars (Python or numpy numbers, 0-d arrays or 0-d
    tensors). Torch tensors in: a 0-d tensor out, and autograd flows through.
    """
    values = _check_losses(losses)
    coefficients = trees.normalised_weights(weights, len(values))  # w_i / Σ_j w_j
    total = sum(c * loss for c, loss in zip(coefficients, values))
    return total if isinstance(total, torch.Tensor) else np.float64(total)


def aggregate_gradients(grads: Sequence[Any], weights: Sequence[float] | None = None, *,
                        out: Any = None) -> Any:
    """Seed 3.1 step 5: aggregate the workers' gradients.

        g = Σ_i w_i g_i / Σ_i w_i        (the plain mean 1/K Σ_i g_i without weights)

    ``grads`` holds one gradient tree per worker. With each worker's loss a mean
    over its n_i samples, ``weights=[n_0, n_1, ...]`` gives the gradient of the
    mean loss over all samples, also for uneven shards. ``out`` (a tree of the
    same structure) receives the result and is returned: a real data-parallel
    loop reuses one buffer rather than allocating each step.
    """
    coefficients = trees.normalised_weights(weights, trees.count_workers(grads, "gradients"))
    return trees.weighted_sum(grads, coefficients, out=out, what="gradient")


def average_parameters(params: Sequence[Any], weights: Sequence[float] | None = None, *,
                       out: Any = None) -> Any:
    """Seed 3.2: average the workers' parameters.

        θ = Σ_i w_i θ_i / Σ_i w_i        (the article's θ = 1/K Σ_i θ_i without weights)

    ``params`` holds one tree, ``state_dict`` or ``nn.Module`` per worker (for a
    module, its parameters; buffers such as BatchNorm's running statistics are
    not parameters and are left out, as torch's model averagers do). Only
    replicas of one architecture that started from the same θ can be averaged
    meaningfully (chapter 04 shows why). ``out``, a tree or a module, receives
    the result and is returned; without it a new dict is returned for modules.
    """
    coefficients = trees.normalised_weights(weights, trees.count_workers(params, "parameters"))
    return trees.weighted_sum(params, coefficients, out=out, what="parameter")


def sgd_step(params: Any, grads: Any, lr: float, *, out: Any = None) -> Any:
    """Seed 3.1 and 3.2: one step of stochastic gradient descent.

        θ ← θ − η ∇L

    ``params`` and ``grads`` are trees of the same structure; ``lr`` is η ≥ 0.
    Returns the new parameters as a new tree, or writes them into ``out`` (which
    may be ``params`` itself, to update in place). Everything, NaN and Inf
    included, is checked before anything is written.
    """
    lr = _check_learning_rate(lr)
    (param_leaves, grad_leaves) = _check_step(params, grads)
    if out is None:
        out = trees.rebuild(params, [trees.empty_like_leaf(p) for _, p in param_leaves])
    # No aliasing check: θ − ηg is elementwise, so out may be params (in place).
    out_leaves = trees.check_out(out, param_leaves, [], what="parameter")
    for (_, p), (_, g), o in zip(param_leaves, grad_leaves, out_leaves):
        if isinstance(o, torch.Tensor):
            with torch.no_grad():
                torch.add(p.detach(), g.detach(), alpha=-lr, out=o)
        else:
            np.subtract(p, o.dtype.type(lr) * g, out=o)
    return out


# ----------------------------------------------------------------- checks
def _check_losses(losses: Sequence[Any]) -> list[Any]:
    if isinstance(losses, (torch.Tensor, np.ndarray)) and losses.ndim == 1:
        losses = list(losses)  # K losses in one vector; a tensor's elements keep their autograd history
    count = trees.count_workers(losses, "losses")
    values, kinds, device = [], set(), None
    for i, loss in enumerate(losses):
        if isinstance(loss, torch.Tensor):
            if loss.ndim != 0:
                raise ValueError(f"loss of worker {i} has shape {tuple(loss.shape)}; expected a scalar "
                                 "(reduce it with .mean() or .sum() first)")
            if not loss.dtype.is_floating_point:
                raise TypeError(f"loss of worker {i} has dtype {loss.dtype}; expected floating point")
            if device is not None and loss.device != device:
                raise ValueError(f"loss of worker {i} is on {loss.device}, worker 0's on {device}")
            device = loss.device
            kinds.add("torch")
            finite = bool(torch.isfinite(loss.detach()))
        elif isinstance(loss, np.ndarray) and loss.ndim != 0:
            raise ValueError(f"loss of worker {i} has shape {loss.shape}; expected a scalar")
        elif isinstance(loss, (numbers.Real, np.ndarray)) and not isinstance(loss, bool):
            loss = float(loss)
            kinds.add("number")
            finite = math.isfinite(loss)
        else:
            raise TypeError(f"loss of worker {i} is {type(loss).__name__} ({loss!r:.40}); "
                            "expected a number or a 0-d tensor")
        if len(kinds) > 1:
            raise TypeError(f"loss of worker {i} mixes torch tensors with plain numbers; "
                            "give all K losses as tensors or all as numbers")
        if not finite:
            raise ValueError(f"loss of worker {i} is {loss}; a NaN or Inf loss poisons the average")
        values.append(loss)
    assert len(values) == count
    return values


def _check_learning_rate(lr: Any) -> float:
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"learning rate lr is {type(lr).__name__} ({lr!r:.40}); expected a real number")
    lr = float(lr)
    if not math.isfinite(lr) or lr < 0:
        raise ValueError(f"learning rate lr is {lr}; expected a finite number ≥ 0")
    return lr


def _check_step(params: Any, grads: Any) -> tuple[list, list]:
    """Pair the parameters' and gradients' leaves; check they agree and are finite."""
    param_leaves = trees.leaves_with_paths(params, what="parameter")
    grad_leaves = trees.leaves_with_paths(grads, what="gradient")
    trees.check_floating(param_leaves, worker=None, what="parameter")
    by_path = dict(grad_leaves)
    if set(by_path) != {path for path, _ in param_leaves}:
        raise ValueError(f"gradients have leaves {sorted(by_path)}, parameters have "
                         f"{sorted(path for path, _ in param_leaves)}")
    grad_leaves = [(path, by_path[path]) for path, _ in param_leaves]
    for (path, p), (_, g) in zip(param_leaves, grad_leaves):
        trees.check_same_leaf(g, p, worker=None, path=path, what="gradient", ref_name="the parameter")
    for what, leaves in (("parameter", param_leaves), ("gradient", grad_leaves)):
        for path, x in leaves:
            finite = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) \
                else bool(np.isfinite(x).all())
            if not finite:
                raise ValueError(f"{what} leaf {path!r} holds NaN or Inf")
    return param_leaves, grad_leaves
