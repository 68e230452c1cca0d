"""ZeRO-3 as PyTorch's FSDP (Rajbhandari et al., SC 2020): each rank stores 1/N of the weights,
and gathers a layer's weights only while it computes with them.

In three parts a reader can hold:

* units (:mod:`nnpar_lite.fsdp_units`): each selected module's parameters flattened into one
  buffer, of which this rank keeps one shard;
* gather and free (:class:`Gathering`): a unit is all-gathered before its module's forward and
  freed after; autograd keeps a note instead of the gathered weight, and backward gathers it
  again;
* the gradient's reduce-scatter (:class:`AllGatherUnit`, whose backward it is): each rank's
  shard receives the average of its chunk.

:class:`FullyShardedDataParallel` wires them into a module with forward hooks; ZeRO-1 and 2 are
in :mod:`nnpar_lite.sharding`.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import torch

from .collectives import all_gather, allreduce_mean_, rank_and_size, reduce_scatter
from .fsdp_units import FlatUnit, owns_parameters, plan_units
from .sharding import check_same_device


class _Saved:
    """What autograd keeps, instead of a gathered weight, until backward asks for it."""

    def __init__(self, unit: FlatUnit, t: torch.Tensor):
        self.unit, self.size, self.stride, self.offset = unit, t.size(), t.stride(), t.storage_offset()


class _Sharded:
    """What a module holds in place of a sharded weight while its unit is not gathered.

    Used inside a forward, in a tensor operation or for an attribute (``.T``, ``.shape``), it
    gathers its unit on demand, for the rest of that forward: so the parent's own forward can
    read a weight tied to a sharded module, as GPT-2's ``h @ self.wte.weight.T`` does. Outside a
    forward it says where the weight went instead of being ``None``."""

    def __init__(self, gathering: "Gathering", unit: FlatUnit, index: int):
        self._gathering, self._unit, self._index = gathering, unit, index

    def gathered(self) -> torch.Tensor:
        return self._gathering.gather_on_demand(self._unit, self._index)

    def __getattr__(self, name: str):
        if name.startswith("_"):                 # copy, pickle and the like: not a tensor's attribute
            raise AttributeError(name)
        return getattr(self.gathered(), name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return func(*_gathered_in(args), **_gathered_in(kwargs or {}))

    def __repr__(self) -> str:
        return f"<{self._unit.names[self._index]}: sharded, 1/{self._gathering.world_size} on each rank>"


def _gathered_in(tree: Any) -> Any:
    """``tree`` with every :class:`_Sharded` replaced by its gathered weight."""
    if isinstance(tree, _Sharded):
        return tree.gathered()
    if isinstance(tree, (list, tuple)):
        return type(tree)(_gathered_in(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _gathered_in(v) for k, v in tree.items()}
    return tree


class AllGatherUnit(torch.autograd.Function):
    """Forward: all-gather a unit's N shards, the weights whole. Backward: the gradient of the
    whole weights, summed over the ranks chunk by chunk (a reduce-scatter); this rank's chunk
    ÷ N, in the shard's dtype, is the gradient of its shard. The unit is needed no more in this
    backward: freed."""

    @staticmethod
    def forward(ctx, shard: torch.Tensor, gathering: "Gathering", unit: FlatUnit) -> torch.Tensor:
        ctx.gathering, ctx.unit = gathering, unit
        return gathering.gather_data(unit)

    @staticmethod
    def backward(ctx, grad_full: torch.Tensor):
        gathering, unit = ctx.gathering, ctx.unit
        mine = reduce_scatter(grad_full.new_empty(unit.size), grad_full.contiguous(), group=gathering.group,
                              use_ring=gathering.use_ring)
        gathering.note("reduce-scatter", unit, "backward")
        unit.cache = None
        gathering.note("free", unit, "backward")
        return mine.to(unit.shard.dtype).div_(gathering.world_size), None, None


# Gathering and freeing are one state (what is whole now), which forward, autograd's saved-tensor
# hooks and backward all read; split, each part would reach into the others.
# Over 120 lines: see above.
class Gathering:
    """Gather and free: a unit's weights are whole only while a forward, or a backward, needs them.

    Before a module's forward its units are all-gathered (:meth:`gather`, once however many
    modules use a unit) and put into the modules; when no module is using a unit any more, the
    gathered weights are freed and placeholders put back (:meth:`release`). Autograd would keep
    the gathered weights for backward: a saved-tensor hook keeps a note instead (:meth:`pack`),
    and backward gathers the unit again (:meth:`unpack`; :meth:`gather_for_backward`). ``trace``,
    a list, records each gather, free and reduce-scatter. No prefetching: each all-gather starts
    when its module needs it."""

    def __init__(self, units: list[FlatUnit], *, compute_dtype: torch.dtype | None = None, group=None,
                 use_ring: bool = False):
        self.units, self.compute_dtype, self.group, self.use_ring = units, compute_dtype, group, use_ring
        self.rank, self.world_size = rank_and_size(group)
        self.trace: list | None = None
        self.gathered: dict[int, FlatUnit] = {}  # storage address of a gathered buffer -> its unit
        self.on_demand: list[FlatUnit] = []      # units gathered again by the parent's own forward
        self.in_forward = False

    def place_holders(self, unit: FlatUnit) -> None:
        """Between gathers, each module using the unit holds a :class:`_Sharded` for its weight."""
        for index, users in enumerate(unit.users):
            for m, attr in users:
                setattr(m, attr, _Sharded(self, unit, index))

    @contextlib.contextmanager
    def forward_pass(self) -> Iterator[None]:
        """Around the wrapped module's forward: what a forward that raised left gathered is
        dropped; autograd keeps notes instead of gathered weights; units gathered on demand are
        freed at the end."""
        for unit in self.units if self.gathered else ():
            unit.full, unit.cache, unit.active = None, None, 0
            self.place_holders(unit)
        self.gathered.clear()
        self.in_forward, self.on_demand = True, []
        try:
            with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
                yield
            for unit in self.on_demand:
                self.release(unit)
        finally:
            self.in_forward = False

    def gather(self, unit: FlatUnit) -> None:
        """All-gather a unit before a module's forward (once, however many modules use it)."""
        if unit.full is None:
            if unit.shard.requires_grad and torch.is_grad_enabled():
                unit.full = AllGatherUnit.apply(unit.shard, self, unit)
            else:
                unit.full = self.gather_data(unit)
            self.gathered[unit.full.untyped_storage().data_ptr()] = unit
            pieces = unit.full[:sum(unit.numels)].split(unit.numels)
            views = [piece.view(shape) for piece, shape in zip(pieces, unit.shapes)]
            for view, users in zip(views, unit.users):
                for m, attr in users:
                    setattr(m, attr, view)
            self.note("all-gather", unit, "forward")
        unit.active += 1

    def gather_on_demand(self, unit: FlatUnit, index: int) -> torch.Tensor:
        """A placeholder was used: inside a forward, gather its unit for the rest of it (freed
        when the whole forward ends) and return the weight; outside, say where it is."""
        if not self.in_forward:
            raise RuntimeError(f"{unit.names[index]!r} is sharded over {self.world_size} ranks: it is whole only "
                               "while a forward uses it. Read the full weights with gather_full_params(model)")
        if unit not in self.on_demand:
            self.gather(unit)
            self.on_demand.append(unit)
        module, attr = unit.users[index][0]
        return getattr(module, attr)

    def release(self, unit: FlatUnit) -> None:
        """One module is done with the unit; when none is, free the gathered weights."""
        unit.active -= 1
        if unit.active == 0:
            del self.gathered[unit.full.untyped_storage().data_ptr()]
            unit.full = None
            self.place_holders(unit)
            self.note("free", unit, "forward")

    def gather_data(self, unit: FlatUnit) -> torch.Tensor:
        """The unit's N shards side by side, in the compute dtype: one all-gather."""
        with torch.no_grad():
            local = unit.shard.detach().to(self.compute_dtype or unit.shard.dtype)
            return all_gather(local.new_empty(self.world_size * unit.size), local, group=self.group,
                              use_ring=self.use_ring)

    def gather_for_backward(self, units: list[FlatUnit]) -> None:
        for unit in units:
            if unit.cache is None:
                unit.cache = self.gather_data(unit)
                self.note("all-gather", unit, "backward")

    def pack(self, t: torch.Tensor) -> Any:
        """Autograd wants to keep ``t`` for backward: a note instead, if t is a gathered weight."""
        unit = self.gathered.get(t.untyped_storage().data_ptr()) if self.gathered else None
        return t if unit is None else _Saved(unit, t)

    def unpack(self, saved: Any) -> torch.Tensor:
        """Backward needs a kept tensor: a gathered weight comes from the unit, gathered again
        if need be (a frozen unit each time: nothing tells when its backward ends)."""
        if not isinstance(saved, _Saved):
            return saved
        unit = saved.unit
        data = unit.full if unit.full is not None else unit.cache
        if data is None:
            data = self.gather_data(unit)
            if unit.shard.requires_grad:
                unit.cache = data
            self.note("all-gather", unit, "backward")
        return torch.as_strided(data.detach(), saved.size, saved.stride, saved.offset)

    def note(self, event: str, unit: FlatUnit, phase: str) -> None:
        if self.trace is not None:
            self.trace.append({"event": event, "unit": unit.name, "phase": phase,
                               "gathered bytes": self.gathered_bytes()})

    def gathered_bytes(self) -> int:
        """Bytes of gathered weights alive now (0 between steps)."""
        return sum(t.numel() * t.element_size() for u in self.units for t in (u.full, u.cache) if t is not None)


class FullyShardedDataParallel(torch.nn.Module):
    """ZeRO-3, as PyTorch's FSDP: each rank stores 1/N of the weights, and gathers a layer's
    weights only while it computes with them.

    The parameters of each module that ``shard_module(m)`` selects (default: every module
    that holds parameters itself) become one flat shard per rank, padded (a unit,
    :func:`~nnpar_lite.fsdp_units.plan_units`). Just before the module's forward its unit is
    all-gathered, and freed after (:class:`Gathering`); the unit is all-gathered again before the
    module's backward, and the gradient of the gathered weights is reduce-scattered: each rank's
    shard gets the average of its chunk (:class:`AllGatherUnit`). Parameters no selected module
    holds stay whole on every rank; ``finish_gradient_synchronization()`` all-reduces their
    gradients. Call it after backward, before ``optimizer.step()``, with any torch optimizer
    built on ``model.parameters()`` (the shards and the whole ones).

    ``compute_dtype`` (torch.float16 or torch.bfloat16) is mixed precision as FSDP2's
    ``MixedPrecisionPolicy(param_dtype=...)``: each sharded module's gathered weights and its
    inputs are cast to it, so its forward, backward and communication run in it; the modules
    whose parameters stay whole get their inputs cast back to those parameters' dtype. The
    shards, the gradients the optimizer sees and its state keep the parameters' dtype (the
    master copy), and outputs come back in it.

    Between gathers a module holds a placeholder; the parent's own forward may still read a
    weight tied to a sharded module (GPT-2's ``h @ self.wte.weight.T``): the placeholder gathers
    its unit again for the rest of that forward. Every rank must build the same module (same
    seed). ``trace``, when a list, records each gather, free and reduce-scatter."""

    def __init__(self, module: torch.nn.Module, *, compute_dtype: torch.dtype | None = None,
                 shard_module: Callable[[torch.nn.Module], bool] | None = None, group=None, use_ring: bool = False):
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if compute_dtype not in (None, torch.float16, torch.bfloat16):
            raise ValueError(f"compute_dtype must be None, torch.float16 or torch.bfloat16, got {compute_dtype!r}")
        if shard_module is not None and not callable(shard_module):
            raise TypeError(f"shard_module must be a function module -> bool, got {shard_module!r}")
        named = list(module.named_parameters())
        if not named:
            raise ValueError("the module has no parameters to shard")
        check_same_device([(f"parameter {name!r}", p) for name, p in named])
        super().__init__()
        self.rank, self.world_size = rank_and_size(group)
        self.group, self.use_ring, self.compute_dtype = group, use_ring, compute_dtype
        self.parameter_names, self.output_dtype = [name for name, _ in named], named[0][1].dtype
        self.units, self.replicated = plan_units(module, shard_module or owns_parameters, self.rank, self.world_size)
        self.module = module
        self.shards = torch.nn.ParameterList([u.shard for u in self.units])
        self.gathering = Gathering(self.units, compute_dtype=compute_dtype, group=group, use_ring=use_ring)
        self._install()

    @property
    def trace(self) -> list | None:
        return self.gathering.trace

    @trace.setter
    def trace(self, value: list | None) -> None:
        self.gathering.trace = value

    def _install(self) -> None:
        """Take the sharded parameters out of their modules (a placeholder in their place), and
        give each module that uses them, and each unit's owner, hooks that gather them around
        its forward; with ``compute_dtype``, the modules holding whole parameters a hook that
        casts their inputs back to those parameters' dtype."""
        needs: dict[torch.nn.Module, list[FlatUnit]] = {}
        for unit in self.units:
            for m, attr in (user for users in unit.users for user in users):
                del m._parameters[attr]
            self.gathering.place_holders(unit)
            for m in [unit.owner] + [m for users in unit.users for m, _ in users]:
                if unit not in needs.setdefault(m, []):
                    needs[m].append(unit)
        for m, units in needs.items():
            m.register_forward_pre_hook(functools.partial(self.before_forward, units), with_kwargs=True)
            m.register_forward_hook(functools.partial(self.after_forward, units))
        whole = {id(p) for _, p in self.replicated}
        for m in self.module.modules() if self.compute_dtype is not None else ():
            kept = [p for p in m.parameters(recurse=False) if id(p) in whole and p.is_floating_point()]
            if kept and m not in needs:
                m.register_forward_pre_hook(lambda _, args, kwargs, dtype=kept[0].dtype: _cast((args, kwargs), dtype),
                                            with_kwargs=True)

    def forward(self, *args, **kwargs):
        with self.gathering.forward_pass():
            out = self.module(*args, **kwargs)
        return out if self.compute_dtype is None else _cast(out, self.output_dtype)

    def before_forward(self, units: list[FlatUnit], module: torch.nn.Module, args: tuple, kwargs: dict):
        """Gather the units a module needs; with ``compute_dtype``, cast its inputs to it."""
        for unit in units:
            self.gathering.gather(unit)
        return _cast((args, kwargs), self.compute_dtype) if self.compute_dtype is not None else None

    def after_forward(self, units: list[FlatUnit], module: torch.nn.Module, args: tuple, output: Any) -> None:
        """Free the units after a module's forward, and ask for them again before its backward."""
        trainable = [u for u in units if u.shard.requires_grad]
        if torch.is_grad_enabled() and trainable:
            for t in _tensors(output):
                if t.requires_grad:
                    t.register_hook(lambda grad, units=trainable: self.gathering.gather_for_backward(units))
        for unit in units:
            self.gathering.release(unit)

    def gathered_bytes(self) -> int:
        """Bytes of gathered weights alive now (0 between steps)."""
        return self.gathering.gathered_bytes()

    def finish_gradient_synchronization(self) -> None:
        """Average the gradients of the parameters left whole (the shards' were reduce-scattered
        during backward) and drop what backward left gathered."""
        allreduce_mean_([p.grad for _, p in self.replicated if p.grad is not None], group=self.group,
                        use_ring=self.use_ring)
        for unit in self.units:
            unit.cache = None


def _cast(tree: Any, dtype: torch.dtype) -> Any:
    """Floating-point tensors in a tuple, list or dict, cast to ``dtype``."""
    if isinstance(tree, torch.Tensor):
        return tree.to(dtype) if tree.is_floating_point() else tree
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cast(t, dtype) for t in tree)
    if isinstance(tree, dict):
        return {k: _cast(v, dtype) for k, v in tree.items()}
    return tree


def _tensors(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    items = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else []
    return [t for item in items for t in _tensors(item)]


def gather_full_params(model: FullyShardedDataParallel) -> dict[str, torch.Tensor]:
    """The full weights, under the wrapped module's parameter names (a tied weight under its
    first name), in the shards' dtype. A collective: every rank must call it."""
    if not isinstance(model, FullyShardedDataParallel):
        raise TypeError(f"gather_full_params takes a FullyShardedDataParallel, got {type(model).__name__}")
    full = {name: p.detach().clone() for name, p in model.replicated}
    with torch.no_grad():
        for unit in model.units:
            data = all_gather(unit.shard.new_empty(model.world_size * unit.size), unit.shard.detach(),
                              group=model.group)
            for name, piece, shape in zip(unit.names, data[:sum(unit.numels)].split(unit.numels), unit.shapes):
                full[name] = piece.view(shape).clone()
    return {name: full[name] for name in model.parameter_names}
