"""Sharding (seed 5.3, 数据和模型大小的增长): data parallelism that does not replicate everything.

Data parallelism (chapter 03) keeps a whole copy of the model states on every rank: the
weights, the gradients and the optimizer state, 4 + 4 + 8 = 16 bytes per parameter with
Adam in float32. ZeRO (Rajbhandari et al., SC 2020) cuts them into N shards, one per rank:

* stage 1 (:class:`ShardedOptimizer`): the optimizer state. Each rank updates only its
  shard of every parameter, then the updated shards are all-gathered;
* stage 2 (``ShardedOptimizer(..., shard_gradients=True)``): the gradients too. Each
  gradient is reduce-scattered as soon as backward has produced it, and the rank keeps
  only its shard of the average;
* stage 3 (:class:`FullyShardedDataParallel`, PyTorch's FSDP): the weights too. A layer's
  weights are all-gathered just before its forward and again before its backward, and
  freed after each.

A tensor of n elements is cut into N chunks of S = ⌈n / N⌉ elements, the last padded with
zeros: rank r holds elements [r·S, (r + 1)·S). The collectives (reduce-scatter and
all-gather) are torch.distributed's own, or this module's rings written with send and
receive (``use_ring=True``), which the chapter counts byte by byte.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist


# Optimizers whose update of an element depends only on that element's gradient and state:
# for them, updating 1/N of a flattened tensor is the same as updating the whole tensor.
ELEMENTWISE_OPTIMIZERS = tuple(getattr(torch.optim, name) for name in (
    "SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam", "RMSprop", "Rprop"))


# ============================================================ collectives
def chunk_size(numel: int, world_size: int) -> int:
    """S = ⌈n / N⌉: the elements of each rank's chunk, the last one padded."""
    return -(-numel // world_size)


def padded(flat: torch.Tensor, world_size: int) -> torch.Tensor:
    """A 1-D tensor padded with zeros to N·S elements (itself when n divides by N)."""
    extra = chunk_size(flat.numel(), world_size) * world_size - flat.numel()
    return flat if extra == 0 else torch.cat([flat, flat.new_zeros(extra)])


def _global(rank_in_group: int, group) -> int:
    return rank_in_group if group is None else dist.get_global_rank(group, rank_in_group)


def _pass_right(send: torch.Tensor, receive: torch.Tensor, group) -> None:
    """Send to the right neighbour and receive from the left one; isend first, so that a
    ring of ranks does not wait on each other for ever."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    request = dist.isend(send.contiguous(), _global((rank + 1) % world, group), group=group)
    dist.recv(receive, _global((rank - 1) % world, group), group=group)
    request.wait()


def ring_reduce_scatter(output: torch.Tensor, input: torch.Tensor, *, group=None) -> torch.Tensor:
    """output ← Σ_ranks input[r·S : (r+1)·S] on rank r, by the ring (Patarasuk & Yuan 2009).

    ``input`` holds N chunks of S = output.numel() elements. In step s = 0 … N−2, rank r
    sends its running sum of chunk (r − s − 1) mod N to the right and adds the one arriving
    from the left to chunk (r − s − 2) mod N; after N − 1 steps chunk r holds the sum of all
    ranks. Each rank sends (N − 1)·S elements. ``input`` is left as it was."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    _check_chunks(output, input, world, "reduce-scatter")
    chunks = input.detach().reshape(world, -1).clone()
    incoming = torch.empty_like(chunks[0])
    for step in range(world - 1):
        _pass_right(chunks[(rank - step - 1) % world], incoming, group)
        chunks[(rank - step - 2) % world] += incoming
    output.copy_(chunks[rank].view_as(output))
    return output


def ring_all_gather(output: torch.Tensor, input: torch.Tensor, *, group=None) -> torch.Tensor:
    """output[r·S : (r+1)·S] ← rank r's input, on every rank, by the ring.

    Rank r starts with its own chunk in place; in step s = 0 … N−2 it sends chunk
    (r − s) mod N to the right and receives chunk (r − s − 1) mod N from the left. Each
    rank sends (N − 1)·S elements."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    _check_chunks(input, output, world, "all-gather")
    chunks = output.view(world, -1)
    chunks[rank].copy_(input.reshape(-1))
    for step in range(world - 1):
        _pass_right(chunks[(rank - step) % world], chunks[(rank - step - 1) % world], group)
    return output


def _check_chunks(chunk: torch.Tensor, whole: torch.Tensor, world: int, name: str) -> None:
    if whole.numel() != world * chunk.numel() or whole.dtype != chunk.dtype or not whole.is_contiguous():
        raise ValueError(f"{name}: the whole tensor must be contiguous with {world} × {chunk.numel()} elements of "
                         f"{chunk.dtype}, got {whole.numel()} of {whole.dtype}")


def reduce_scatter(output: torch.Tensor, input: torch.Tensor, *, group=None, use_ring: bool = False) -> torch.Tensor:
    """Sum of the ranks' ``input``, chunk r to rank r: the ring above, or torch.distributed's
    own (gloo and NCCL both have it; newer torch names it ``reduce_scatter_single``)."""
    if use_ring:
        return ring_reduce_scatter(output, input, group=group)
    _check_chunks(output, input, dist.get_world_size(group), "reduce-scatter")
    native = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    native(output, input, group=group)
    return output


def all_gather(output: torch.Tensor, input: torch.Tensor, *, group=None, use_ring: bool = False) -> torch.Tensor:
    """Every rank's ``input`` side by side in ``output``, on every rank: the ring above, or
    torch.distributed's own (``all_gather_single`` in newer torch)."""
    if use_ring:
        return ring_all_gather(output, input, group=group)
    _check_chunks(input, output, dist.get_world_size(group), "all-gather")
    native = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    native(output, input.contiguous(), group=group)
    return output


def all_reduce_mean(tensors: list[torch.Tensor], *, group=None, use_ring: bool = False) -> None:
    """t ← 1/N Σ_ranks t for each tensor, in one flat all-reduce (chapter 03's ring, or torch's)."""
    from .data_parallel import ring_allreduce

    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    ring_allreduce(flat, group=group) if use_ring else dist.all_reduce(flat, group=group)
    flat /= dist.get_world_size(group)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def _process_group(group) -> tuple[int, int]:
    """(rank, world size) in ``group``; a plain error when there is no process group."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("sharding needs a process group: run inside nnpar_lite.distributed.launch(...) or "
                           "torchrun, after torch.distributed.init_process_group")
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("this process is not a member of the group it was given")
    return rank, dist.get_world_size(group)


# ============================================================ ZeRO-1 and ZeRO-2
def _check_optimizer_class(optimizer_cls: Any) -> None:
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
        raise TypeError(f"optimizer_cls must be an optimizer class such as torch.optim.AdamW (not an instance), "
                        f"got {optimizer_cls!r}")
    if not issubclass(optimizer_cls, ELEMENTWISE_OPTIMIZERS):
        raise TypeError(f"{optimizer_cls.__name__} is not element-wise (or not known to be): its update of one "
                        "element may depend on the whole tensor (a norm, a factored second moment), so updating a "
                        "shard would differ from updating the tensor. Use one of "
                        + ", ".join(c.__name__ for c in ELEMENTWISE_OPTIMIZERS))


def _check_same_device(named: list[tuple[str, torch.Tensor]]) -> None:
    """Every parameter a scheme flattens must live on one device, in one dense layout."""
    first_name, first = named[0]
    for name, p in named:
        if p.device != first.device:
            raise ValueError(f"{name} (shape {tuple(p.shape)}) is on {p.device}, {first_name} on {first.device}: "
                             "a sharded group must live on one device")
        if p.device.type == "meta" or p.is_sparse or not p.is_contiguous():
            raise ValueError(f"{name} (shape {tuple(p.shape)}, {p.device}) must be a dense, contiguous tensor "
                             "with data")


class ShardedOptimizer(torch.optim.Optimizer):
    """ZeRO-1: any element-wise torch optimizer, with its state sharded over the ranks.

    ``ShardedOptimizer(params, torch.optim.AdamW, lr=1e-3, weight_decay=0.1)`` takes
    parameters or param groups as torch does. Rank r keeps optimizer state only for chunk r
    of *each* trainable parameter, 1/N of every tensor (``.optim`` is the local optimizer over
    these chunks). torch's ``ZeroRedundancyOptimizer`` shards differently: it gives each rank
    whole parameters, about 1/N of the total, so its shares are even only when the tensors are
    small beside Ψ/N. ``step()`` averages the gradients itself, with a reduce-scatter (do not
    all-reduce them before), updates the chunk, and all-gathers the updated chunks:
    2 (N − 1)/N · Ψ elements sent, what data parallelism's all-reduce sends.

    ``shard_gradients=True`` is ZeRO-2: a hook reduce-scatters each gradient as soon as backward
    has produced it, in backward's order (the same on every rank), and frees it; the rank keeps
    only its chunk. Every rank's backward must reach at least one trainable parameter.

    A parameter used on some ranks only counts as a zero gradient on the others, as in DDP; one
    that no rank used gets no gradient, so the optimizer skips it as torch's optimizers do (no
    weight decay, no moment update): one small all-reduce of a mask per step agrees on which
    is which (:meth:`_used_somewhere`). After ``step()``, ZeRO-1's ``p.grad`` holds the average
    in this rank's chunk and the local gradient elsewhere. ``state_dict()`` is this rank's
    shard, learning rates included: each rank saves its own, and ``load_state_dict`` puts the
    saved hyperparameters back into ``param_groups``, where a scheduler reads them."""

    def __init__(self, params: Iterable, optimizer_cls: type, *, shard_gradients: bool = False, group=None,
                 use_ring: bool = False, **defaults: Any):
        _check_optimizer_class(optimizer_cls)
        if not isinstance(shard_gradients, bool):
            raise TypeError(f"shard_gradients must be True or False, got {shard_gradients!r}")
        super().__init__(params, defaults)
        trainable = self._trainable()
        _check_same_device([(f"parameter {i}", p) for i, p in enumerate(trainable)])
        self.rank, self.world_size = _process_group(group)
        self.group, self.use_ring, self.shard_gradients = group, use_ring, shard_gradients
        self.sizes = {p: chunk_size(p.numel(), self.world_size) for p in trainable}
        self.chunks = {p: self._own_chunk(p) for p in trainable}
        self.optim = optimizer_cls([{**self._hyperparameters(g), "params": [self.chunks[p] for p in g["params"]
                                     if p in self.chunks and self.chunks[p].numel()]} for g in self.param_groups])
        self._order = trainable[::-1]              # ZeRO-2's reduce-scatters: backward's order, on every rank
        self._new_backward()
        self._hooks = [p.register_post_accumulate_grad_hook(self._gradient_ready)
                       for p in trainable] if shard_gradients else []

    def _trainable(self) -> list[torch.Tensor]:
        seen, trainable = set(), []
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    trainable.append(p)
        return trainable

    @staticmethod
    def _hyperparameters(group: dict) -> dict:
        return {k: v for k, v in group.items() if k != "params"}

    def _own_chunk(self, p: torch.Tensor) -> torch.Tensor:
        """Elements [r·S, (r+1)·S) of p, clipped to its n elements: a view into p itself, so
        that updating the chunk updates the parameter (no copy of the weights)."""
        start = min(self.rank * self.sizes[p], p.numel())
        return p.detach().view(-1)[start:min(start + self.sizes[p], p.numel())]

    def _average_of_own_chunk(self, gradients: list[torch.Tensor | None], params: list[torch.Tensor]) -> list:
        """One reduce-scatter for many gradients: the input is rank-major (all tensors'
        chunk 0, then all chunks 1, …), so rank r receives Σ_ranks of its chunk of each, ÷ N."""
        n = self.world_size
        rows = [padded((g if g is not None else torch.zeros_like(p)).reshape(-1), n).view(n, -1)
                for g, p in zip(gradients, params)]
        together = torch.cat(rows, dim=1).reshape(-1)
        mine = reduce_scatter(together.new_empty(together.numel() // n), together, group=self.group,
                              use_ring=self.use_ring).div_(n)
        return [c[:self.chunks[p].numel()] for c, p in zip(mine.split([self.sizes[p] for p in params]), params)]

    def _used_somewhere(self, has_gradient: list[bool]) -> list[bool]:
        """One all-reduce of a mask, one number per parameter: which have a gradient on some rank."""
        mask = torch.tensor([float(h) for h in has_gradient], device=next(iter(self.chunks)).device)
        dist.all_reduce(mask, group=self.group)
        return [count > 0 for count in mask.tolist()]

    def _new_backward(self) -> None:
        self._ready: set[int] = set()              # ids of the parameters whose gradient is complete
        self._sent, self._flush_queued = 0, False  # how many of _order are reduce-scattered; flush asked for

    @torch.no_grad()
    def _gradient_ready(self, p: torch.Tensor) -> None:
        """ZeRO-2's hook, run as soon as p.grad is complete: reduce-scatter, in backward's order,
        every gradient that is ready and has none missing before it; what a parameter without a
        gradient holds back waits for the end of backward (:meth:`_end_of_backward`)."""
        if not self._flush_queued:
            torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
            self._flush_queued = True
        self._ready.add(id(p))
        while self._sent < len(self._order) and id(self._order[self._sent]) in self._ready:
            self._keep_own_chunk(self._order[self._sent])
            self._sent += 1

    def _keep_own_chunk(self, p: torch.Tensor, average: torch.Tensor | None = None) -> None:
        """Keep this rank's chunk of the average of p's gradient (added to what earlier backward
        passes left, for accumulation) and free the full gradient."""
        if average is None:
            (average,) = self._average_of_own_chunk([p.grad], [p])
        chunk = self.chunks[p]
        chunk.grad = average.clone() if chunk.grad is None else chunk.grad.add_(average)
        p.grad = None

    @torch.no_grad()
    def _end_of_backward(self) -> None:
        """ZeRO-2, when backward is done: reduce-scatter, in order, the gradients still waiting
        (zeros for a parameter this rank did not use), then agree on which parameters some rank
        used; one that no rank used keeps no gradient."""
        waiting = self._order[self._sent:]
        local = [id(p) in self._ready or p.grad is not None for p in self._order]
        averages = [self._average_of_own_chunk([p.grad], [p])[0] for p in waiting]
        used = dict(zip(map(id, self._order), self._used_somewhere(local)))
        for p, average in zip(waiting, averages):
            if used[id(p)]:
                self._keep_own_chunk(p, average)
        self._new_backward()

    @torch.no_grad()
    def _reduce_scatter_all(self) -> None:
        """ZeRO-1, in step(): agree on which parameters have a gradient somewhere, then one
        reduce-scatter of theirs; each rank writes the average of its chunk into its own p.grad,
        which the chunk's .grad then views. A parameter no rank used keeps no gradient."""
        params = list(self.chunks)
        used = self._used_somewhere([p.grad is not None for p in params])
        for p in (p for p, u in zip(params, used) if not u):
            self.chunks[p].grad = None
        params = [p for p, u in zip(params, used) if u]
        for p, average in zip(params, self._average_of_own_chunk([p.grad for p in params], params) if params else []):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            own = self.chunks[p]
            start = own.storage_offset() - p.storage_offset()
            target = p.grad.view(-1)[start:start + own.numel()]
            target.copy_(average)
            own.grad = target

    @torch.no_grad()
    def _all_gather_parameters(self) -> None:
        """Every rank's updated chunks, in one all-gather; each parameter copies its N chunks."""
        params, n = list(self.chunks), self.world_size
        if not params:
            return
        mine = torch.cat([torch.cat([self.chunks[p], p.new_zeros(self.sizes[p] - self.chunks[p].numel())])
                          for p in params])
        everyone = all_gather(mine.new_empty(n * mine.numel()), mine, group=self.group, use_ring=self.use_ring)
        for p, columns in zip(params, everyone.view(n, -1).split([self.sizes[p] for p in params], dim=1)):
            p.view(-1).copy_(columns.reshape(-1)[:p.numel()])

    def step(self, closure: Callable | None = None):
        """Reduce-scatter the gradients (ZeRO-1; ZeRO-2 did it during backward), update this
        rank's chunks with the local optimizer, all-gather the updated chunks."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._push_hyperparameters()
        if not self.shard_gradients:
            self._reduce_scatter_all()
        self.optim.step()
        self._all_gather_parameters()
        return loss

    def _push_hyperparameters(self) -> None:
        """Our param_groups' learning rate and the rest into the local optimizer's (a learning-rate
        scheduler changes ours)."""
        for mine, local in zip(self.param_groups, self.optim.param_groups):
            local.update(self._hyperparameters(mine))

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        self.optim.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        """This rank's shard of the optimizer state, its hyperparameters as they are now, and
        where it belongs."""
        self._push_hyperparameters()
        return {"rank": self.rank, "world_size": self.world_size, "shard": self.optim.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load this rank's shard; ``param_groups`` then holds the saved hyperparameters (a
        scheduler resumed after it continues from the saved learning rate)."""
        if (state_dict.get("rank"), state_dict.get("world_size")) != (self.rank, self.world_size):
            raise ValueError(f"this state was saved by rank {state_dict.get('rank')} of "
                             f"{state_dict.get('world_size')}; this is rank {self.rank} of {self.world_size}: a "
                             "shard loads only on the rank, and the world size, that saved it")
        self.optim.load_state_dict(state_dict["shard"])
        for mine, local in zip(self.param_groups, self.optim.param_groups):
            mine.update(self._hyperparameters(local))


# ============================================================ ZeRO-3: FSDP
def owns_parameters(module: torch.nn.Module) -> bool:
    """The default choice of modules to shard: those that hold parameters themselves
    (a Linear, a LayerNorm), not through their children."""
    return any(True for _ in module.parameters(recurse=False))


class _Unit:
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


class _Saved:
    """What autograd keeps, instead of a gathered weight, until backward asks for it."""

    def __init__(self, unit: _Unit, t: torch.Tensor):
        self.unit, self.size, self.stride, self.offset = unit, t.size(), t.stride(), t.storage_offset()


class _Sharded:
    """What a module holds in place of a sharded weight while its unit is not gathered.

    Used inside a forward, in a tensor operation or for an attribute (``.T``, ``.shape``), it
    gathers its unit on demand, for the rest of that forward: so the parent's own forward can
    read a weight tied to a sharded module, as GPT-2's ``h @ self.wte.weight.T`` does. Outside a
    forward it says where the weight went instead of being ``None``."""

    def __init__(self, fsdp: "FullyShardedDataParallel", unit: "_Unit", index: int):
        self._fsdp, self._unit, self._index = fsdp, unit, index

    def gathered(self) -> torch.Tensor:
        return self._fsdp._gather_on_demand(self._unit, self._index)

    def __getattr__(self, name: str):
        if name.startswith("_"):                 # copy, pickle and the like: not a tensor's attribute
            raise AttributeError(name)
        return getattr(self.gathered(), name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return func(*_gathered_in(args), **_gathered_in(kwargs or {}))

    def __repr__(self) -> str:
        return f"<{self._unit.names[self._index]}: sharded, 1/{self._fsdp.world_size} on each rank>"


def _gathered_in(tree: Any) -> Any:
    """``tree`` with every :class:`_Sharded` replaced by its gathered weight."""
    if isinstance(tree, _Sharded):
        return tree.gathered()
    if isinstance(tree, (list, tuple)):
        return type(tree)(_gathered_in(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _gathered_in(v) for k, v in tree.items()}
    return tree


class _AllGather(torch.autograd.Function):
    """Forward: all-gather a unit's shards. Backward: reduce-scatter the gradient of the full
    tensor, so that each rank's shard receives the average of its chunk."""

    @staticmethod
    def forward(ctx, shard, fsdp, unit):
        ctx.fsdp, ctx.unit = fsdp, unit
        return fsdp._gather_data(unit)

    @staticmethod
    def backward(ctx, grad_full):
        return ctx.fsdp._reduce_scatter_gradient(ctx.unit, grad_full), None, None


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


def _plan_units(module: torch.nn.Module, select: Callable, rank: int, world: int) -> tuple[list[_Unit], list]:
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
    units = [_Unit(f"{owner or 'root'}{'' if trainable else ' (frozen)'}", params,
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


class FullyShardedDataParallel(torch.nn.Module):
    """ZeRO-3, as PyTorch's FSDP: each rank stores 1/N of the weights, and gathers a layer's
    weights only while it computes with them.

    The parameters of each module that ``shard_module(m)`` selects (default: every module
    that holds parameters itself) become one flat shard per rank, padded (:class:`_Unit`).
    Just before the module's forward its unit is all-gathered, and freed after; autograd
    keeps a note instead of the gathered weight (saved-tensor hooks), and the unit is
    all-gathered again before the module's backward. The gradient of the gathered weights
    is reduce-scattered: each rank's shard gets the average of its chunk. Parameters no
    selected module holds stay whole on every rank; ``finish_gradient_synchronization()``
    all-reduces their gradients. Call it after backward, before ``optimizer.step()``, with
    any torch optimizer built on ``model.parameters()`` (the shards and the whole ones).

    ``compute_dtype`` (torch.float16 or torch.bfloat16) is mixed precision as FSDP2's
    ``MixedPrecisionPolicy(param_dtype=...)``: each sharded module's gathered weights and its
    inputs are cast to it, so its forward, backward and communication run in it; the modules
    whose parameters stay whole (a LayerNorm left unselected, say) keep them in float32 and get
    their inputs cast back to it. The shards, the gradients the optimizer sees and its state
    keep the parameters' dtype, float32 (the master copy), and outputs come back in it.

    A weight is whole only while a forward needs it; between, its module holds a placeholder
    (:class:`_Sharded`). The parent's own forward may still read a weight tied to a sharded
    module (GPT-2's ``h @ self.wte.weight.T``): the placeholder gathers its unit again for the
    rest of that forward. Every rank must build the same module (same seed). ``trace``, when a
    list, records each gather, free and reduce-scatter. Like torch's FSDP without prefetching,
    each all-gather starts only when its module needs it."""

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
        _check_same_device([(f"parameter {name!r}", p) for name, p in named])
        super().__init__()
        self.rank, self.world_size = _process_group(group)
        self.group, self.use_ring, self.compute_dtype = group, use_ring, compute_dtype
        self.parameter_names, self.output_dtype = [name for name, _ in named], named[0][1].dtype
        self.units, self.replicated = _plan_units(module, shard_module or owns_parameters, self.rank, self.world_size)
        self.module = module
        self.shards = torch.nn.ParameterList([u.shard for u in self.units])
        self.trace: list | None = None
        self._gathered: dict[int, _Unit] = {}    # storage address of a gathered buffer -> its unit
        self._on_demand: list[_Unit] = []        # units gathered again by the parent's own forward
        self._in_forward = False
        self._install()

    def _install(self) -> None:
        """Take the sharded parameters out of their modules (a placeholder in their place), and
        give each module that uses them, and each unit's owner, hooks that gather them around
        its forward; with ``compute_dtype``, the modules holding whole parameters a hook that
        casts their inputs back to those parameters' dtype."""
        needs: dict[torch.nn.Module, list[_Unit]] = {}
        for unit in self.units:
            for users in unit.users:
                for m, attr in users:
                    del m._parameters[attr]
            self._place_holders(unit)
            for m in [unit.owner] + [m for users in unit.users for m, _ in users]:
                if unit not in needs.setdefault(m, []):
                    needs[m].append(unit)
        for m, units in needs.items():
            m.register_forward_pre_hook(functools.partial(self._before_forward, units), with_kwargs=True)
            m.register_forward_hook(functools.partial(self._after_forward, units))
        whole = {id(p) for _, p in self.replicated}
        for m in self.module.modules() if self.compute_dtype is not None else ():
            kept = [p for p in m.parameters(recurse=False) if id(p) in whole and p.is_floating_point()]
            if kept and m not in needs:
                m.register_forward_pre_hook(lambda _, args, kwargs, dtype=kept[0].dtype: _cast((args, kwargs), dtype),
                                            with_kwargs=True)

    def _place_holders(self, unit: _Unit) -> None:
        """Between gathers, each module using the unit holds a :class:`_Sharded` for its weight."""
        for index, users in enumerate(unit.users):
            for m, attr in users:
                setattr(m, attr, _Sharded(self, unit, index))

    def forward(self, *args, **kwargs):
        if self._gathered:                  # a forward that raised left weights gathered: drop them
            self._gathered.clear()
            for unit in self.units:
                unit.full, unit.cache, unit.active = None, None, 0
                self._place_holders(unit)
        self._in_forward, self._on_demand = True, []
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                out = self.module(*args, **kwargs)
            for unit in self._on_demand:
                self._release(unit)
        finally:
            self._in_forward = False
        return out if self.compute_dtype is None else _cast(out, self.output_dtype)

    def _before_forward(self, units: list[_Unit], module: torch.nn.Module, args: tuple, kwargs: dict):
        for unit in units:
            self._gather(unit)
        if self.compute_dtype is not None:
            return _cast((args, kwargs), self.compute_dtype)
        return None

    def _gather(self, unit: _Unit) -> None:
        """All-gather a unit before a module's forward (once, however many modules use it)."""
        if unit.full is None:
            if unit.shard.requires_grad and torch.is_grad_enabled():
                unit.full = _AllGather.apply(unit.shard, self, unit)
            else:
                unit.full = self._gather_data(unit)
            self._gathered[unit.full.untyped_storage().data_ptr()] = unit
            pieces = unit.full[:sum(unit.numels)].split(unit.numels)
            views = [piece.view(shape) for piece, shape in zip(pieces, unit.shapes)]
            for view, users in zip(views, unit.users):
                for m, attr in users:
                    setattr(m, attr, view)
            self._note("all-gather", unit, "forward")
        unit.active += 1

    def _gather_on_demand(self, unit: _Unit, index: int) -> torch.Tensor:
        """A placeholder was used: inside a forward, gather its unit for the rest of it (freed
        when the whole forward ends) and return the weight; outside, say where it is."""
        if not self._in_forward:
            raise RuntimeError(f"{unit.names[index]!r} is sharded over {self.world_size} ranks: it is whole only "
                               "while a forward uses it. Read the full weights with gather_full_params(model)")
        if unit not in self._on_demand:
            self._gather(unit)
            self._on_demand.append(unit)
        module, attr = unit.users[index][0]
        return getattr(module, attr)

    def _after_forward(self, units: list[_Unit], module: torch.nn.Module, args: tuple, output: Any) -> None:
        """Free the units after a module's forward, and ask for them again before its backward."""
        trainable = [u for u in units if u.shard.requires_grad]
        if torch.is_grad_enabled() and trainable:
            for t in _tensors(output):
                if t.requires_grad:
                    t.register_hook(lambda grad, units=trainable: self._gather_for_backward(units))
        for unit in units:
            self._release(unit)

    def _release(self, unit: _Unit) -> None:
        """One module is done with the unit; when none is, free the gathered weights."""
        unit.active -= 1
        if unit.active == 0:
            del self._gathered[unit.full.untyped_storage().data_ptr()]
            unit.full = None
            self._place_holders(unit)
            self._note("free", unit, "forward")

    def _gather_data(self, unit: _Unit) -> torch.Tensor:
        """The unit's N shards side by side, in the compute dtype: one all-gather."""
        with torch.no_grad():
            local = unit.shard.detach().to(self.compute_dtype or unit.shard.dtype)
            return all_gather(local.new_empty(self.world_size * unit.size), local, group=self.group,
                              use_ring=self.use_ring)

    def _gather_for_backward(self, units: list[_Unit]) -> None:
        for unit in units:
            if unit.cache is None:
                unit.cache = self._gather_data(unit)
                self._note("all-gather", unit, "backward")

    def _reduce_scatter_gradient(self, unit: _Unit, grad_full: torch.Tensor) -> torch.Tensor:
        """The gradient of the gathered weights, summed over the ranks chunk by chunk; this
        rank's chunk ÷ N, in the shard's dtype, is the gradient of its shard. The unit is
        needed no more in this backward: free it."""
        mine = reduce_scatter(grad_full.new_empty(unit.size), grad_full.contiguous(), group=self.group,
                              use_ring=self.use_ring)
        self._note("reduce-scatter", unit, "backward")
        unit.cache = None
        self._note("free", unit, "backward")
        return mine.to(unit.shard.dtype).div_(self.world_size)

    def _pack(self, t: torch.Tensor) -> Any:
        """Autograd wants to keep ``t`` for backward: a note instead, if t is a gathered weight."""
        unit = self._gathered.get(t.untyped_storage().data_ptr()) if self._gathered else None
        return t if unit is None else _Saved(unit, t)

    def _unpack(self, saved: Any) -> torch.Tensor:
        """Backward needs a kept tensor: a gathered weight comes from the unit, gathered again
        if need be (a frozen unit each time: nothing tells when its backward ends)."""
        if not isinstance(saved, _Saved):
            return saved
        unit = saved.unit
        data = unit.full if unit.full is not None else unit.cache
        if data is None:
            data = self._gather_data(unit)
            if unit.shard.requires_grad:
                unit.cache = data
            self._note("all-gather", unit, "backward")
        return torch.as_strided(data.detach(), saved.size, saved.stride, saved.offset)

    def _note(self, event: str, unit: _Unit, phase: str) -> None:
        if self.trace is not None:
            self.trace.append({"event": event, "unit": unit.name, "phase": phase,
                               "gathered bytes": self.gathered_bytes()})

    def gathered_bytes(self) -> int:
        """Bytes of gathered weights alive now (0 between steps)."""
        return sum(t.numel() * t.element_size() for u in self.units for t in (u.full, u.cache) if t is not None)

    def finish_gradient_synchronization(self) -> None:
        """Average the gradients of the parameters left whole (the shards' were reduce-scattered
        during backward) and drop what backward left gathered."""
        all_reduce_mean([p.grad for _, p in self.replicated if p.grad is not None], group=self.group,
                        use_ring=self.use_ring)
        for unit in self.units:
            unit.cache = None


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
