"""Trees of arrays: the containers the formulas work on, checked and combined.

A *tree* is a ``torch.Tensor``, a ``numpy.ndarray``, or a list, tuple or dict
(a ``state_dict`` is a dict) whose values are trees. The formulas in
:mod:`nnpar_lite.formulas` take one tree per worker; this module

* walks a tree and names every leaf by its path (``"fc.weight"``, ``"[1]"``),
* checks that K workers' trees agree leaf by leaf and says exactly where they
  do not (which worker, which leaf, what differs), before anything is written,
* computes ``out = Σ_i c_i x_i`` for fixed coefficients ``c_i`` in **one pass
  over memory**: the output is built block by block, each block small enough
  to stay in cache while every worker's slice is added into it. Stacking the
  K inputs into one tensor first (``torch.stack(xs).mean(0)``) would read and
  write everything twice and need K times the memory.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

# Output block sizes, in bytes. On a CPU a block stays in cache while the K
# inputs are added into it; on a GPU the 50 MB L2 of a recent card plays that
# role, and a large block keeps kernel launches few.
# Measured on a 2-core EPYC (2 MB L2 per core, 32 MB L3): 4 MB blocks reach
# about 0.85 of copy bandwidth, 256 KB blocks about 0.3 (per-op overhead).
CPU_BLOCK_BYTES = 4 * 1024 * 1024
CUDA_BLOCK_BYTES = 16 * 1024 * 1024

ROOT = "<root>"


# ----------------------------------------------------------------- walking
def _child_path(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{'' if path == ROOT else path}[{key}]"
    return str(key) if path == ROOT else f"{path}.{key}"


def is_leaf(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray))


def module_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's parameters as a dict name → tensor that shares their memory."""
    return {name: p.detach() for name, p in module.named_parameters()}


def leaves_with_paths(tree: Any, *, worker: int | None = None, what: str = "tree",
                      path: str = ROOT) -> list[tuple[str, Any]]:
    """Every leaf of ``tree`` with its path, in a fixed order (dicts in key order).

    Raises ``TypeError`` naming the path for anything that is neither a
    container nor an array (a string, ``None``, a Python number).
    """
    if is_leaf(tree):
        return [(path, tree)]
    if isinstance(tree, Mapping):
        out = []
        for key, value in tree.items():
            out += leaves_with_paths(value, worker=worker, what=what, path=_child_path(path, key))
        return out
    if isinstance(tree, (list, tuple)):
        out = []
        for i, value in enumerate(tree):
            out += leaves_with_paths(value, worker=worker, what=what, path=_child_path(path, i))
        return out
    raise TypeError(f"{_who(worker, what)}leaf {path!r} is {type(tree).__name__} "
                    f"({_short_repr(tree)}); a leaf must be a torch.Tensor or a numpy.ndarray")


def rebuild(template: Any, leaves: list[Any]) -> Any:
    """A tree shaped like ``template`` whose leaves are ``leaves`` in walk order."""
    it = iter(leaves)

    def build(node):
        if is_leaf(node):
            return next(it)
        if isinstance(node, Mapping):
            items = [(k, build(v)) for k, v in node.items()]
            try:
                return type(node)(items)
            except TypeError:
                return dict(items)
        values = [build(v) for v in node]
        if hasattr(node, "_fields"):  # namedtuple
            return type(node)(*values)
        return type(node)(values)

    return build(template)


def _who(worker: int | None, what: str) -> str:
    return f"{what} " if worker is None else f"{what} of worker {worker}, "


def _short_repr(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


def _structure(tree: Any, path: str = ROOT) -> list[tuple[str, str]]:
    """The tree's skeleton: (path, kind) for containers and leaves, in walk order."""
    if is_leaf(tree):
        return [(path, "leaf")]
    if isinstance(tree, Mapping):
        out = [(path, "dict with keys " + repr(sorted(map(str, tree))))]
        for key, value in tree.items():
            out += _structure(value, _child_path(path, key))
        return out
    if isinstance(tree, (list, tuple)):
        out = [(path, f"{type(tree).__name__} of length {len(tree)}")]
        for i, value in enumerate(tree):
            out += _structure(value, _child_path(path, i))
        return out
    return [(path, type(tree).__name__)]


# ---------------------------------------------------------------- checking
def _kind(x: Any) -> str:
    return "torch.Tensor" if isinstance(x, torch.Tensor) else "numpy.ndarray"


def check_same_leaf(x: Any, ref: Any, *, worker: int | None, path: str, what: str,
                    ref_name: str = "worker 0") -> None:
    """Raise if leaf ``x`` cannot be combined with ``ref`` (kind, shape, dtype, device)."""
    where = f"{_who(worker, what)}leaf {path!r}"
    if _kind(x) != _kind(ref):
        raise TypeError(f"{where} is a {_kind(x)} but {ref_name}'s is a {_kind(ref)}; "
                        "do not mix numpy and torch")
    if tuple(x.shape) != tuple(ref.shape):
        raise ValueError(f"{where}: shape {tuple(x.shape)} differs from {ref_name}'s {tuple(ref.shape)}")
    if x.dtype != ref.dtype:
        raise TypeError(f"{where}: dtype {x.dtype} differs from {ref_name}'s {ref.dtype}")
    if isinstance(x, torch.Tensor) and x.device != ref.device:
        raise ValueError(f"{where}: device {x.device} differs from {ref_name}'s {ref.device}")


def _is_floating(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dtype.is_floating_point
    return np.issubdtype(x.dtype, np.floating)


def count_workers(items: Any, plural: str) -> int:
    """K, the number of workers: ``items`` must be a non-empty list, one entry per worker."""
    if isinstance(items, (torch.Tensor, np.ndarray, Mapping, str)) or not isinstance(items, Sequence):
        raise TypeError(f"{plural} must be a list with one entry per worker, got {type(items).__name__}")
    if len(items) == 0:
        raise ValueError(f"{plural} is an empty list: need at least one worker")
    return len(items)


def check_trees(trees: Sequence[Any], *, what: str) -> list[list[tuple[str, Any]]]:
    """Check K workers' trees agree and return each worker's (path, leaf) list.

    Raises ``ValueError`` for an empty list or a differing structure, shape or
    device, and ``TypeError`` for a non-array leaf, a dtype that differs or is
    not floating point, or numpy mixed with torch. The message names the
    worker and the leaf.
    """
    count_workers(trees, f"{what}s")
    per_worker = [leaves_with_paths(t, worker=i, what=what) for i, t in enumerate(trees)]
    skeleton = _structure(trees[0])
    for i, tree in enumerate(trees[1:], start=1):
        other = dict(_structure(tree))
        for path, kind in skeleton:
            if other.get(path) != kind:
                found = other.get(path, "nothing")
                raise ValueError(f"{what} of worker {i} differs in structure from worker 0's at "
                                 f"{path!r}: worker 0 has {kind}, worker {i} has {found}")
        # Same skeleton, so the same leaf paths: pair leaves by path, not by
        # position, so that dicts with the same keys in another order agree.
        by_path = dict(per_worker[i])
        per_worker[i] = [(path, by_path[path]) for path, _ in per_worker[0]]
    check_floating(per_worker[0], worker=0, what=what)
    for i in range(1, len(trees)):
        for (path, leaf), (_, ref) in zip(per_worker[i], per_worker[0]):
            check_same_leaf(leaf, ref, worker=i, path=path, what=what)
    return per_worker


def check_floating(leaves: list[tuple[str, Any]], *, worker: int | None, what: str) -> None:
    for path, leaf in leaves:
        if not _is_floating(leaf):
            raise TypeError(f"{_who(worker, what)}leaf {path!r}: dtype {leaf.dtype} is not floating "
                            "point; only real floating-point leaves can be combined")


def check_out(out: Any, template_leaves: list[tuple[str, Any]], inputs: list[list[tuple[str, Any]]],
              *, what: str) -> list[Any]:
    """Check ``out`` can receive the result (structure, shape, dtype, device, writable,
    no memory shared with an input) and return its leaves in walk order."""
    if isinstance(out, torch.nn.Module):
        out = module_parameters(out)
    out_leaves = leaves_with_paths(out, what="out")
    inputs_by_path = [dict(leaves) for leaves in inputs]
    if [p for p, _ in out_leaves] != [p for p, _ in template_leaves]:
        raise ValueError(f"out has leaves {[p for p, _ in out_leaves]}, the {what}s have "
                         f"{[p for p, _ in template_leaves]}")
    for (path, o), (_, ref) in zip(out_leaves, template_leaves):
        where = f"out, leaf {path!r}"
        if _kind(o) != _kind(ref):
            raise TypeError(f"{where} is a {_kind(o)} but the {what}s are each a {_kind(ref)}")
        if tuple(o.shape) != tuple(ref.shape):
            raise ValueError(f"{where}: shape {tuple(o.shape)} differs from the {what}s' {tuple(ref.shape)}")
        if o.dtype != ref.dtype:
            raise TypeError(f"{where}: dtype {o.dtype} differs from the {what}s' {ref.dtype}")
        if isinstance(o, torch.Tensor) and o.device != ref.device:
            raise ValueError(f"{where}: device {o.device} differs from the {what}s' {ref.device}")
        if isinstance(o, np.ndarray) and not o.flags.writeable:
            raise ValueError(f"{where} is read-only")
        for worker, leaves in enumerate(inputs_by_path):
            if _shares_memory(o, leaves[path]):
                raise ValueError(f"{where} shares memory with the {what} of worker {worker}; "
                                 "pass a separate buffer as out")
    return [o for _, o in out_leaves]


def _shares_memory(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return bool(np.may_share_memory(a, b))
    if a.numel() == 0 or b.numel() == 0:
        return False
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def non_finite_message(per_worker: list[list[tuple[str, Any]]], leaf: int, where: slice,
                       *, what: str) -> str:
    """Name the first worker whose leaf number ``leaf`` holds NaN or Inf in ``where``."""
    for worker, leaves in enumerate(per_worker):
        path, x = leaves[leaf]
        part = x.reshape(-1)[where]
        finite = bool(torch.isfinite(part).all()) if isinstance(part, torch.Tensor) \
            else bool(np.isfinite(part).all())
        if not finite:
            return f"{what} of worker {worker}, leaf {path!r} holds NaN or Inf"
    path = per_worker[0][leaf][0]
    return f"the weighted sum of the {what}s overflows at leaf {path!r} (every input is finite)"


# ------------------------------------------------------------ coefficients
def _as_real_number(w: Any, *, index: int, what: str) -> float:
    if isinstance(w, (torch.Tensor, np.ndarray)) and w.ndim == 0:
        w = w.item()
    if isinstance(w, bool) or not isinstance(w, numbers.Real):
        raise TypeError(f"{what} of worker {index} is {type(w).__name__} ({_short_repr(w)}); "
                        "expected a real number")
    return float(w)


def normalised_weights(weights: Any, count: int, *, what: str = "weight") -> list[float]:
    """``c_i = w_i / Σ_j w_j``: the coefficients of a weighted mean; ``1/K`` each for None.

    The weights must be K finite, non-negative real numbers, not all zero.
    """
    if weights is None:
        return [1.0 / count] * count
    if isinstance(weights, (str, bytes, Mapping)):
        raise TypeError(f"weights must be a sequence of {count} numbers, got {type(weights).__name__}")
    if isinstance(weights, (torch.Tensor, np.ndarray)):
        if weights.ndim != 1:
            raise ValueError(f"weights must be one-dimensional, got shape {tuple(weights.shape)}")
        weights = weights.tolist()
    try:
        weights = list(weights)
    except TypeError:
        raise TypeError(f"weights must be a sequence of {count} numbers, "
                        f"got {type(weights).__name__}") from None
    if len(weights) != count:
        raise ValueError(f"got {len(weights)} weights for {count} workers; give one weight per worker")
    values = [_as_real_number(w, index=i, what=what) for i, w in enumerate(weights)]
    for i, w in enumerate(values):
        if not math.isfinite(w):
            raise ValueError(f"{what} of worker {i} is {w}; weights must be finite")
        if w < 0:
            raise ValueError(f"{what} of worker {i} is {w}; weights must be non-negative")
    total = math.fsum(values)
    if total == 0:
        raise ValueError("all weights are zero; at least one worker must have a positive weight")
    return [w / total for w in values]


# --------------------------------------------------------------- computing
def weighted_sum_into(out: Any, xs: list[Any], coefficients: list[float]) -> slice | None:
    """``out ← Σ_i c_i xs[i]`` for one leaf, one pass over memory, block by block.

    Returns None, or the slice of the first output block that is not finite.
    """
    if isinstance(out, torch.Tensor):
        return _weighted_sum_torch(out, xs, coefficients)
    return _weighted_sum_numpy(out, xs, coefficients)


def block_elements(x: Any) -> int:
    itemsize = x.element_size() if isinstance(x, torch.Tensor) else x.itemsize
    is_cuda = isinstance(x, torch.Tensor) and x.device.type == "cuda"
    return max(1, (CUDA_BLOCK_BYTES if is_cuda else CPU_BLOCK_BYTES) // itemsize)


def _weighted_sum_torch(out: torch.Tensor, xs: list[torch.Tensor], cs: list[float]) -> slice | None:
    with torch.no_grad():
        if not out.is_contiguous():
            result = torch.empty_like(out, memory_format=torch.contiguous_format)
            bad = _weighted_sum_torch(result, xs, cs)
            out.copy_(result)
            return bad
        flat_out = out.view(-1)
        flat_xs = [x.detach().reshape(-1) for x in xs]
        blocks = _blocks(flat_out.numel(), block_elements(out))
        # The sum of each finished block, taken while it is still in cache, is
        # NaN or Inf whenever the block is (and 0 * Inf = NaN catches a worker
        # of weight 0): NaN/Inf detection for the price of a cached read.
        block_sums = torch.empty(len(blocks), dtype=torch.float32 if out.element_size() < 4 else out.dtype,
                                 device=out.device)
        for i, part in enumerate(blocks):
            block = flat_out[part]
            torch.mul(flat_xs[0][part], cs[0], out=block)
            for x, c in zip(flat_xs[1:], cs[1:]):
                block.add_(x[part], alpha=c)
            block_sums[i] = block.sum(dtype=block_sums.dtype)
        if bool(torch.isfinite(block_sums).all()):
            return None
        for part in blocks:  # rare: find the block, or learn that only its sum overflowed
            if not bool(torch.isfinite(flat_out[part]).all()):
                return part
    return None


def _weighted_sum_numpy(out: np.ndarray, xs: list[np.ndarray], cs: list[float]) -> slice | None:
    flat_out = out.reshape(-1)
    if not np.shares_memory(flat_out, out):  # out is not contiguous: compute aside, copy in
        result = np.empty(out.shape, out.dtype)
        bad = _weighted_sum_numpy(result, xs, cs)
        np.copyto(out, result)
        return bad
    flat_xs = [x.reshape(-1) for x in xs]
    blocks = _blocks(flat_out.size, block_elements(out))
    scratch = np.empty(blocks[0].stop - blocks[0].start, out.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        for part in blocks:
            block = flat_out[part]
            tmp = scratch[:block.size]
            np.multiply(flat_xs[0][part], out.dtype.type(cs[0]), out=block)
            for x, c in zip(flat_xs[1:], cs[1:]):
                np.multiply(x[part], out.dtype.type(c), out=tmp)
                np.add(block, tmp, out=block)
            if not np.isfinite(block.sum(dtype=np.float64)) and not np.isfinite(block).all():
                return part
    return None


def _blocks(numel: int, step: int) -> list[slice]:
    return [slice(start, min(start + step, numel)) for start in range(0, max(numel, 1), step)]


def empty_like_leaf(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.empty_like(x, memory_format=torch.contiguous_format, requires_grad=False)
    return np.empty(x.shape, x.dtype)


def weighted_sum(trees: Sequence[Any], coefficients: list[float], *, out: Any = None,
                 what: str) -> Any:
    """``Σ_i c_i trees[i]`` leaf by leaf: a new tree, or written into ``out`` and returned.

    Everything is checked before the first write; the inputs are never written.
    NaN or Inf is found during the single pass (checking first would cost a
    second pass over all K inputs), so when that error is raised an ``out``
    given by the caller may hold part of the result.
    """
    if trees and all(isinstance(t, torch.nn.Module) for t in trees):
        trees = [module_parameters(m) for m in trees]
    elif any(isinstance(t, torch.nn.Module) for t in trees):
        raise TypeError(f"{what}s mix nn.Module replicas with other trees")
    per_worker = check_trees(trees, what=what)
    if out is None:
        out_leaves = [empty_like_leaf(x) for _, x in per_worker[0]]
        out_tree = rebuild(trees[0], out_leaves)
    else:
        out_tree = out
        out_leaves = check_out(out, per_worker[0], per_worker, what=what)
    for leaf, o in enumerate(out_leaves):
        bad = weighted_sum_into(o, [leaves[leaf][1] for leaves in per_worker], coefficients)
        if bad is not None:
            raise ValueError(non_finite_message(per_worker, leaf, bad, what=what))
    return out_tree
