"""Trees: a tensor, an ndarray, or a list, tuple or dict of trees (a ``state_dict`` is one).

The formulas take one tree per worker; this module walks a tree leaf by leaf, naming each
leaf by its path (``"fc.weight"``, ``"layers[1]"``), and builds a tree of the same shape.
An ``nn.Module`` stands for the tree of its parameters."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

ROOT = "<root>"


def leaves_with_paths(tree: Any, who: str = "", path: str = ROOT) -> list[tuple[str, Any]]:
    """Every leaf with its path, dicts in key order; ``TypeError`` for anything else."""
    if isinstance(tree, (torch.Tensor, np.ndarray)):
        return [(path, tree)]
    if not isinstance(tree, (Mapping, list, tuple)):
        raise TypeError(f"{who}leaf {path!r} is {type(tree).__name__} ({repr(tree)[:40]}); "
                        "a leaf must be a torch.Tensor or a numpy.ndarray")
    items = tree.items() if isinstance(tree, Mapping) else enumerate(tree)
    prefix = "" if path == ROOT else path
    return [leaf for key, value in items for leaf in leaves_with_paths(
        value, who, f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}{'.' if prefix else ''}{key}")]


def rebuild(template: Any, leaves: list[Any]) -> Any:
    """A tree shaped like ``template`` whose leaves are ``leaves``, in walk order."""
    it = iter(leaves)

    def build(node):
        if isinstance(node, (torch.Tensor, np.ndarray)):
            return next(it)
        if isinstance(node, Mapping):
            return {key: build(value) for key, value in node.items()}
        return type(node)(build(value) for value in node)
    return build(template)


def as_tree(x: Any) -> Any:
    """A module's parameters as a dict name → tensor (sharing their memory); a tree as it is."""
    return {name: p.detach() for name, p in x.named_parameters()} if isinstance(x, torch.nn.Module) else x


def empty_like(x: Any) -> Any:
    """An uninitialised leaf of ``x``'s shape, dtype and device, outside autograd."""
    return torch.empty_like(x, requires_grad=False) if isinstance(x, torch.Tensor) else np.empty_like(x)
