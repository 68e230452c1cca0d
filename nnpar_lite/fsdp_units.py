"""FSDP's units (ZeRO-3, :mod:`nnpar_lite.fsdp`): which parameters are flattened together, and
this rank's shard of each.

A *unit* is the parameters one selected module owns, flattened into one buffer of N·S elements,
S = ⌈n / N⌉ (zero padding at the end), of which rank r keeps elements [r·S, (r+1)·S): its
shard, the only weights the wrapped model's ``parameters()`` then yields. Which modules are
selected is ``shard_module``'s choice (default :func:`owns_parameters`); a parameter belongs to
the innermost selected module around it, as in FSDP2 (:func:`plan_units`).
"""

from __future__ import annotations

from typing import Callable

import torch

from .collectives import chunk_size, padded


def owns_parameters(module: torch.nn.Module) -> bool:
    """The default choice of modules to shard: those that hold parameters themselves
    (a Linear, a LayerNorm), not through their children."""
    return any(True for _ in module.parameters(recurse=False))


class FlatUnit:
    """The parameters one selected module owns, flattened into one buffer of N·S elements (zero
    padding at the end) of which this rank keeps elements [r·S, (r+1)·S): ``shard``.
    ``owner`` is that module; ``users`` lists, for each parameter, every (module, attribute)
    that refers to it: more than one when the weight is tied."""

    def __init__(self, name: str, params: list[tuple[str, torch.nn.Parameter]], users: list, rank: int, world: int,
                 owner: torch.nn.Module | None = None):
        self.name, self.users, self.owner = name, users, owner
        self.names = [n for n, _ in params]
        self.shapes = [p.shape for _, p in params]
        self.numels = [p.numel() for _, p in params]
        self.size = chunk_size(sum(self.numels), world)
        flat = padded(torch.cat([p.detach().reshape(-1) for _, p in params]), world)
        self.shard = torch.nn.Parameter(flat[rank * self.size:(rank + 1) * self.size].clone(),
                                        requires_grad=params[0][1].requires_grad)
        self.full: torch.Tensor | None = None      # gathered for forward (autograd sees it)
        self.cache: torch.Tensor | None = None     # gathered again for backward
        self.active = 0                            # modules running forward with it


def plan_units(module: torch.nn.Module, select: Callable, rank: int, world: int) -> tuple[list[FlatUnit], list]:
    """FSDP2's nesting: a parameter belongs to the innermost selected module around the first
    module that holds it (that module itself, its parent, …, the root), so selecting the root
    shards everything no selected descendant takes, as ``fully_shard(root)`` does. A selected
    module's trainable and frozen parameters make one unit each. Parameters that no selected
    module encloses stay whole: (units, [(name, p)])."""
    selected = {name: m for name, m in module.named_modules() if select(m)}
    holders: dict[int, list] = {}
    for name, m in module.named_modules():
        for attr, p in m._parameters.items():
            if p is not None:
                holders.setdefault(id(p), []).append((name, m, attr))
    named = {id(p): (n, p) for n, p in module.named_parameters()}
    grouped: dict[tuple[str, bool], list] = {}
    for pid, (name, p) in named.items():
        owners = [o for o in (_innermost(h, selected) for h, _, _ in holders[pid]) if o is not None]
        if owners:
            grouped.setdefault((owners[0], p.requires_grad), []).append((name, p))
    for (owner, _), params in grouped.items():
        _check_unit(owner, params)
    units = [FlatUnit(f"{owner or 'root'}{'' if trainable else ' (frozen)'}", params,
                      [[(m, attr) for _, m, attr in holders[id(p)]] for _, p in params], rank, world,
                      owner=selected[owner]) for (owner, trainable), params in grouped.items()]
    owned = {id(p) for params in grouped.values() for _, p in params}
    return units, [named[pid] for pid in named if pid not in owned]


def _innermost(name: str, selected: dict) -> str | None:
    """The longest name in ``selected`` that is ``name`` or one of its ancestors ("" is the root)."""
    parts = name.split(".") if name else []
    return next((".".join(parts[:k]) for k in range(len(parts), -1, -1) if ".".join(parts[:k]) in selected), None)


def _check_unit(module_name: str, params: list) -> None:
    for name, p in params:
        if not p.is_floating_point() or p.dtype != params[0][1].dtype:
            raise ValueError(f"module {module_name or 'root'!r}: parameter {name!r} is {p.dtype} but "
                             f"{params[0][0]!r} is {params[0][1].dtype}: one flat shard needs one floating dtype")
