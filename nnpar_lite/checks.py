"""The formulas' checks: ValueError or TypeError naming worker and leaf, before anything is written."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np
import torch

from .trees import as_tree, empty_like, leaves_with_paths
from .util import real_number


def number(x: Any, name: str, *, non_negative: bool = False) -> float:
    """``x`` as a float if it is a real number (not a bool; TypeError otherwise), finite and ≥ 0
    if asked (:func:`nnpar_lite.util.real_number`, ValueError)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} is {type(x).__name__} ({x!r:.40}); expected a real number")
    return real_number(name, x, minimum=0) if non_negative else float(x)


def count_workers(items: Any, plural: str) -> int:
    """K: ``items`` must be a non-empty list (or tuple), one entry per worker."""
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{plural} must be a list with one entry per worker, got {type(items).__name__}")
    if not items:
        raise ValueError(f"{plural} is an empty list: need at least one worker")
    return len(items)


def same_leaf(x: Any, ref: Any, where: str, ref_name: str) -> None:
    """Raise if leaf ``x`` cannot be combined with ``ref``: kind, shape, dtype, device."""
    for aspect, a, b, error in (
            ("kind", type(x).__module__.split(".")[0], type(ref).__module__.split(".")[0], TypeError),
            ("shape", tuple(x.shape), tuple(ref.shape), ValueError), ("dtype", x.dtype, ref.dtype, TypeError),
            ("device", getattr(x, "device", "cpu"), getattr(ref, "device", "cpu"), ValueError)):
        if a != b:
            raise error(f"{where}: {aspect} {a} differs from {ref_name} {b}"
                        + ("; do not mix numpy and torch" if aspect == "kind" else ""))


def workers(trees: Any, what: str, names: Sequence[str] | None = None) -> tuple[list[str], list[list[Any]]]:
    """K trees that agree leaf by leaf, floating point: their leaves' paths, and each one's leaves."""
    who = names or [f"{what} of worker {i}" for i in range(count_workers(trees, f"{what}s"))]
    per_worker = [dict(leaves_with_paths(as_tree(tree), f"{who[i]}, ")) for i, tree in enumerate(trees)]
    first = per_worker[0]
    for i, leaves in enumerate(per_worker):
        for path in [p for p in first if p not in leaves] + [p for p in leaves if p not in first]:
            raise ValueError(f"{who[i]} {'lacks' if path in first else 'has an extra'} leaf {path!r}: "
                             f"{who[0]} has {list(first)}, {who[i]} has {list(leaves)}")
        for path, ref in first.items():
            same_leaf(leaves[path], ref, f"{who[i]}, leaf {path!r}", f"{who[0]}'s")
            if not (ref.dtype.is_floating_point if isinstance(ref, torch.Tensor) else ref.dtype.kind == "f"):
                raise TypeError(f"{who[0]}, leaf {path!r}: dtype {ref.dtype} is not floating point")
    return list(first), [[leaves[path] for path in first] for leaves in per_worker]   # paired by path


def out(out: Any, refs: list[Any], paths: list[str], avoid: list[list[Any]], what: str) -> list[Any]:
    """The buffers a formula writes: new ones without ``out``, else ``out``'s leaves, if they match
    ``refs`` (leaf by leaf, at ``paths``) and share no memory with the trees in ``avoid``."""
    if out is None:
        return [empty_like(ref) for ref in refs]
    leaves = leaves_with_paths(as_tree(out), "out, ")
    if [p for p, _ in leaves] != paths:
        raise ValueError(f"out has leaves {[p for p, _ in leaves]}, the {what}s have {paths}")
    for (path, o), ref, *inputs in zip(leaves, refs, *avoid):
        same_leaf(o, ref, f"out, leaf {path!r}", f"the {what}s'")
        if isinstance(o, np.ndarray) and not o.flags.writeable:
            raise ValueError(f"out, leaf {path!r} is read-only")
        shared = [i for i, x in enumerate(inputs) if (np.may_share_memory(o, x) if isinstance(o, np.ndarray) else
                  o.numel() > 0 and o.untyped_storage().data_ptr() == x.untyped_storage().data_ptr())]
        if shared:
            raise ValueError(f"out, leaf {path!r} shares memory with the {what} of worker {shared[0]}")
    return [o for _, o in leaves]


def finite(x: Any) -> bool:
    """No NaN or Inf in leaf ``x``. Its sum is NaN or Inf when an element is, and reads memory at
    full speed; only then are the elements looked at (finite numbers can overflow a sum)."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(x.detach().sum() if isinstance(x, torch.Tensor) else x.sum())
    return math.isfinite(total) or bool(np.isfinite(x).all() if isinstance(x, np.ndarray) else x.isfinite().all())


def weights(weights: Any, count: int) -> list[float] | None:
    """K finite weights ≥ 0, not all zero, as floats (None stays None: the plain mean)."""
    if weights is None:
        return None
    if isinstance(weights, (str, bytes, Mapping)) or not hasattr(weights, "__len__"):
        raise TypeError(f"weights must be a sequence of {count} numbers, got {type(weights).__name__}")
    if len(weights) != count:
        raise ValueError(f"got {len(weights)} weights for {count} workers; give one weight per worker")
    w = [number(w_i, f"weight of worker {i}", non_negative=True) for i, w_i in enumerate(list(weights))]
    if math.fsum(w) == 0:
        raise ValueError("all weights are zero; at least one worker must have a positive weight")
    return w


def finite_sum(o: Any, x: list[Any], what: str, path: str) -> None:
    """Raise, naming the worker, if the sum ``o`` of the blocks ``x`` holds NaN or Inf."""
    if not finite(o):
        bad = next((i for i, x_i in enumerate(x) if not finite(x_i)), None)
        raise ValueError(f"{what} of worker {bad}, leaf {path!r} holds NaN or Inf" if bad is not None
                         else f"the weighted sum of the {what}s overflows at leaf {path!r} (inputs finite)")


def losses(values: Any) -> list[Any]:
    """K finite scalar losses of one kind: numbers (as floats) or 0-d tensors (kept, for autograd)."""
    if isinstance(values, (torch.Tensor, np.ndarray)) and values.ndim == 1:
        values = list(values)          # K losses in one vector; each element keeps its autograd history
    leaves = [L if isinstance(L, (torch.Tensor, np.ndarray)) else np.asarray(number(L, f"loss of worker {i}"))
              for i, L in enumerate(values[:count_workers(values, "losses")])]
    workers(leaves, "loss")                      # one kind, shape, dtype and device; floating point
    for i, L in enumerate(leaves):
        if L.ndim != 0 or not finite(L):
            raise ValueError(f"loss of worker {i} is {L!r:.50}; expected a finite scalar (reduce it first)")
    return [L if isinstance(L, torch.Tensor) else float(L) for L in leaves]


def step(params: Any, grads: Any) -> tuple[list[str], list, list]:
    """The leaves' paths, and θ's and g's leaves paired by path, agreeing and finite."""
    paths, (thetas, gs) = workers([params, grads], "parameter", names=("parameter", "gradient"))
    for path, theta, g in zip(paths, thetas, gs):
        for what, x in (("parameter", theta), ("gradient", g)):
            if not finite(x):
                raise ValueError(f"{what} leaf {path!r} holds NaN or Inf")
    return paths, thetas, gs
