"""Sharding (seed 5.3, 数据和模型大小的增长): data parallelism that does not replicate everything.

Data parallelism (chapter 03) keeps a whole copy of the model states on every rank: the
weights, the gradients and the optimizer state, 4 + 4 + 8 = 16 bytes per parameter with
Adam in float32. ZeRO (Rajbhandari et al., SC 2020) cuts them into N shards, one per rank:

* stage 1 (:class:`ShardedOptimizer`): the optimizer state. Each rank updates only its
  chunk of every parameter (:class:`ParameterChunks`), then the updated chunks are all-gathered;
* stage 2 (``ShardedOptimizer(..., shard_gradients=True)``, :class:`ShardedGradients`): the
  gradients too. Each gradient is reduce-scattered as soon as backward has produced it, and
  the rank keeps only its chunk of the average;
* stage 3 (:class:`nnpar_lite.fsdp.FullyShardedDataParallel`, PyTorch's FSDP): the weights
  too, in :mod:`nnpar_lite.fsdp` (its names stay importable from here).

A tensor of n elements is cut into N chunks of S = ⌈n / N⌉ elements, the last padded with
zeros: rank r holds elements [r·S, (r + 1)·S). The collectives (reduce-scatter and all-gather)
are torch.distributed's own, or the rings of :mod:`nnpar_lite.collectives` written with send
and receive (``use_ring=True``), which the chapter counts byte by byte.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from .collectives import all_gather, chunk_size, on_some_rank, padded, rank_and_size, reduce_scatter

# Names chapters and readers use here, defined once in collectives.
from .collectives import allreduce_mean_, ring_all_gather, ring_reduce_scatter  # noqa: F401

all_reduce_mean = allreduce_mean_     # the earlier name of the average over a group

# Optimizers whose update of an element depends only on that element's gradient and state:
# for them, updating 1/N of a flattened tensor is the same as updating the whole tensor.
ELEMENTWISE_OPTIMIZERS = tuple(getattr(torch.optim, name) for name in (
    "SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam", "RMSprop", "Rprop"))


def _check_optimizer_class(optimizer_cls: Any) -> None:
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
        raise TypeError(f"optimizer_cls must be an optimizer class such as torch.optim.AdamW (not an instance), "
                        f"got {optimizer_cls!r}")
    if not issubclass(optimizer_cls, ELEMENTWISE_OPTIMIZERS):
        raise TypeError(f"{optimizer_cls.__name__} is not element-wise (or not known to be): its update of one "
                        "element may depend on the whole tensor (a norm, a factored second moment), so updating a "
                        "shard would differ from updating the tensor. Use one of "
                        + ", ".join(c.__name__ for c in ELEMENTWISE_OPTIMIZERS))


def check_same_device(named: list[tuple[str, torch.Tensor]]) -> None:
    """Every parameter a scheme flattens must live on one device, in one dense layout."""
    first_name, first = named[0]
    for name, p in named:
        if p.device != first.device:
            raise ValueError(f"{name} (shape {tuple(p.shape)}) is on {p.device}, {first_name} on {first.device}: "
                             "a sharded group must live on one device")
        if p.device.type == "meta" or p.is_sparse or not p.is_contiguous():
            raise ValueError(f"{name} (shape {tuple(p.shape)}, {p.device}) must be a dense, contiguous tensor "
                             "with data")


class ParameterChunks:
    """Rank r's chunk of each parameter, and the two collectives over the chunks (ZeRO-1 and 2).

    Parameter p of n elements is cut into N chunks of S = ⌈n / N⌉; rank r's chunk,
    ``views[p]``, is elements [r·S, (r+1)·S) of p flattened, clipped to n: a view into p
    itself, so that updating the chunk updates the parameter (no copy of the weights)."""

    def __init__(self, params: list[torch.Tensor], *, group=None, use_ring: bool = False):
        self.rank, self.world_size = rank_and_size(group)
        self.group, self.use_ring = group, use_ring
        self.sizes = {p: chunk_size(p.numel(), self.world_size) for p in params}
        self.views = {p: self._own_chunk(p) for p in params}

    def _own_chunk(self, p: torch.Tensor) -> torch.Tensor:
        start = min(self.rank * self.sizes[p], p.numel())
        return p.detach().view(-1)[start:min(start + self.sizes[p], p.numel())]

    def average_of_own_chunk(self, gradients: list[torch.Tensor | None], params: list[torch.Tensor]) -> list:
        """One reduce-scatter for many gradients: the input is rank-major (all tensors'
        chunk 0, then all chunks 1, …), so rank r receives Σ_ranks of its chunk of each, ÷ N."""
        n = self.world_size
        rows = [padded((g if g is not None else torch.zeros_like(p)).reshape(-1), n).view(n, -1)
                for g, p in zip(gradients, params)]
        together = torch.cat(rows, dim=1).reshape(-1)
        mine = reduce_scatter(together.new_empty(together.numel() // n), together, group=self.group,
                              use_ring=self.use_ring).div_(n)
        return [c[:self.views[p].numel()] for c, p in zip(mine.split([self.sizes[p] for p in params]), params)]

    @torch.no_grad()
    def all_gather_parameters(self) -> None:
        """Every rank's updated chunks, in one all-gather; each parameter copies its N chunks."""
        params, n = list(self.views), self.world_size
        if not params:
            return
        mine = torch.cat([torch.cat([self.views[p], p.new_zeros(self.sizes[p] - self.views[p].numel())])
                          for p in params])
        everyone = all_gather(mine.new_empty(n * mine.numel()), mine, group=self.group, use_ring=self.use_ring)
        for p, columns in zip(params, everyone.view(n, -1).split([self.sizes[p] for p in params], dim=1)):
            p.view(-1).copy_(columns.reshape(-1)[:p.numel()])


class ShardedGradients:
    """ZeRO-2: a hook reduce-scatters each gradient as soon as backward has produced it and
    frees it; the rank keeps only its chunk of the average, as the chunk's ``.grad``.

    Collectives pair up by order, so the reduce-scatters go in backward's order, the same on
    every rank: a gradient waits for those before it, and one that some rank never gets (a
    parameter it did not use) holds the rest back until backward ends (:meth:`end_of_backward`)."""

    def __init__(self, chunks: ParameterChunks, *, group=None):
        self.chunks, self.group = chunks, group
        self.order = list(chunks.views)[::-1]      # backward's order, on every rank
        self._new_backward()
        self.hooks = [p.register_post_accumulate_grad_hook(self.gradient_ready) for p in chunks.views]

    def _new_backward(self) -> None:
        self.ready: set[int] = set()               # ids of the parameters whose gradient is complete
        self.sent, self.flush_queued = 0, False    # how many of order are reduce-scattered; flush asked for

    @torch.no_grad()
    def gradient_ready(self, p: torch.Tensor) -> None:
        """The hook, run as soon as p.grad is complete: reduce-scatter, in backward's order,
        every gradient that is ready and has none missing before it; what a parameter without a
        gradient holds back waits for the end of backward (:meth:`end_of_backward`)."""
        if not self.flush_queued:
            torch.autograd.Variable._execution_engine.queue_callback(self.end_of_backward)
            self.flush_queued = True
        self.ready.add(id(p))
        while self.sent < len(self.order) and id(self.order[self.sent]) in self.ready:
            self.keep_own_chunk(self.order[self.sent])
            self.sent += 1

    def keep_own_chunk(self, p: torch.Tensor, average: torch.Tensor | None = None) -> None:
        """Keep this rank's chunk of the average of p's gradient (added to what earlier backward
        passes left, for accumulation) and free the full gradient."""
        if average is None:
            (average,) = self.chunks.average_of_own_chunk([p.grad], [p])
        chunk = self.chunks.views[p]
        chunk.grad = average.clone() if chunk.grad is None else chunk.grad.add_(average)
        p.grad = None

    @torch.no_grad()
    def end_of_backward(self) -> None:
        """When backward is done: reduce-scatter, in order, the gradients still waiting (zeros for
        a parameter this rank did not use), then agree on which parameters some rank used; one
        that no rank used keeps no gradient."""
        waiting = self.order[self.sent:]
        local = [id(p) in self.ready or p.grad is not None for p in self.order]
        averages = [self.chunks.average_of_own_chunk([p.grad], [p])[0] for p in waiting]
        used = dict(zip(map(id, self.order), on_some_rank(local, device=self.order[0].device, group=self.group)))
        for p, average in zip(waiting, averages):
            if used[id(p)]:
                self.keep_own_chunk(p, average)
        self._new_backward()


class ShardedOptimizer(torch.optim.Optimizer):
    """ZeRO-1: any element-wise torch optimizer, with its state sharded over the ranks.

    ``ShardedOptimizer(params, torch.optim.AdamW, lr=1e-3, weight_decay=0.1)`` takes
    parameters or param groups as torch does. Rank r keeps optimizer state only for chunk r
    of *each* trainable parameter, 1/N of every tensor (:class:`ParameterChunks`; ``.optim`` is
    the local optimizer over these chunks). torch's ``ZeroRedundancyOptimizer`` shards
    differently: it gives each rank whole parameters, about 1/N of the total, so its shares are
    even only when the tensors are small beside Ψ/N. ``step()`` averages the gradients itself,
    with a reduce-scatter (do not all-reduce them before), updates the chunk, and all-gathers
    the updated chunks: 2 (N − 1)/N · Ψ elements sent, what data parallelism's all-reduce sends.

    ``shard_gradients=True`` is ZeRO-2 (:class:`ShardedGradients`): each gradient is
    reduce-scattered during backward and freed. Every rank's backward must reach at least one
    trainable parameter.

    A parameter used on some ranks only counts as a zero gradient on the others, as in DDP; one
    that no rank used gets no gradient, so the optimizer skips it as torch's optimizers do (no
    weight decay, no moment update): one small all-reduce of a mask per step agrees on which
    is which. After ``step()``, ZeRO-1's ``p.grad`` holds the average in this rank's chunk and
    the local gradient elsewhere. ``state_dict()`` is this rank's shard, learning rates
    included: each rank saves its own, and ``load_state_dict`` puts the saved hyperparameters
    back into ``param_groups``, where a scheduler reads them."""

    def __init__(self, params: Iterable, optimizer_cls: type, *, shard_gradients: bool = False, group=None,
                 use_ring: bool = False, **defaults: Any):
        _check_optimizer_class(optimizer_cls)
        if not isinstance(shard_gradients, bool):
            raise TypeError(f"shard_gradients must be True or False, got {shard_gradients!r}")
        super().__init__(params, defaults)
        trainable = self._trainable()
        check_same_device([(f"parameter {i}", p) for i, p in enumerate(trainable)])
        self.chunks = ParameterChunks(trainable, group=group, use_ring=use_ring)
        self.rank, self.world_size = self.chunks.rank, self.chunks.world_size
        self.group, self.use_ring, self.shard_gradients = group, use_ring, shard_gradients
        views = self.chunks.views
        self.optim = optimizer_cls([{**self._hyperparameters(g), "params": [views[p] for p in g["params"]
                                     if p in views and views[p].numel()]} for g in self.param_groups])
        self.sharded_gradients = ShardedGradients(self.chunks, group=group) if shard_gradients else None

    def _trainable(self) -> list[torch.Tensor]:
        trainable = [p for group in self.param_groups for p in group["params"] if p.requires_grad]
        return list({id(p): p for p in trainable}.values())        # a tensor in two groups, once

    @staticmethod
    def _hyperparameters(group: dict) -> dict:
        return {k: v for k, v in group.items() if k != "params"}

    @torch.no_grad()
    def _reduce_scatter_all(self) -> None:
        """ZeRO-1, in step(): agree on which parameters have a gradient somewhere, then one
        reduce-scatter of theirs; each rank writes the average of its chunk into its own p.grad,
        which the chunk's .grad then views. A parameter no rank used keeps no gradient."""
        views = self.chunks.views
        params = list(views)
        used = on_some_rank([p.grad is not None for p in params], device=params[0].device, group=self.group) \
            if params else []
        for p in (p for p, u in zip(params, used) if not u):
            views[p].grad = None
        params = [p for p, u in zip(params, used) if u]
        for p, average in zip(params, self.chunks.average_of_own_chunk([p.grad for p in params], params)
                              if params else []):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            start = views[p].storage_offset() - p.storage_offset()
            target = p.grad.view(-1)[start:start + views[p].numel()]
            target.copy_(average)
            views[p].grad = target

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
        self.chunks.all_gather_parameters()
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


# ZeRO-3 lives in fsdp.py, which builds on this module; its names stay importable from here.
FSDP_NAMES = ("FullyShardedDataParallel", "gather_full_params", "owns_parameters")


def __getattr__(name: str):
    """``sharding.FullyShardedDataParallel`` and the rest of :data:`FSDP_NAMES`, from :mod:`nnpar_lite.fsdp`."""
    if name in FSDP_NAMES:
        from . import fsdp
        return getattr(fsdp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
