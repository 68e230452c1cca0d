"""Data parallelism (seed 3.1): simulated with K workers in one process, and real.

The article's six steps, for a model with ``params``, ``gradients(X, Y)`` and
``loss(X, Y)`` (the networks of :mod:`nnpar_lite.models`):

1. split the batch into K shards;
2.–4. each worker runs forward, loss and backward on its shard, with the same θ;
5. aggregate the K gradients: ``aggregate_gradients``, weighted by shard size;
6. one update of θ: ``sgd_step``.

With each worker's loss the mean over its shard and the weights the shard
sizes, step 5 gives exactly the gradient of the mean loss over the whole batch,
so K workers take exactly the steps of one worker on the big batch.

The second half runs the same scheme over a real process group
(torch.distributed): :func:`allreduce_gradients` is step 5 across processes,
bucketed as PyTorch's ``DistributedDataParallel`` (DDP) does it, and
:func:`ring_allreduce` is the algorithm inside an all-reduce, written out with
send and receive for reading. Both run step 5 after step 4 (chapter 03);
:class:`DataParallel` overlaps them, each bucket's all-reduce starting while
backward still runs (chapter 09).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .data import even_shard_sizes, split_by_sizes
from .formulas import aggregate_gradients, sgd_step
from .models import mlp  # noqa: F401  (readers of the first chapters found it here)


def split_batch(X: np.ndarray, Y: np.ndarray, shard_sizes: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Step 1: cut the batch (X, Y) into consecutive shards of the given sizes."""
    return list(zip(split_by_sizes(X, shard_sizes), split_by_sizes(Y, shard_sizes)))


def simulated_step(model, shards: list[tuple[np.ndarray, np.ndarray]], lr: float, *,
                   weighted: bool = True) -> dict:
    """Steps 2–6 for K simulated workers; returns the aggregated gradient.

    ``weighted=False`` is the article's plain mean of the K gradients, exact only
    for equal shards.
    """
    grads = [model.gradients(X_k, Y_k) for X_k, Y_k in shards]      # steps 2–4, worker by worker
    weights = [len(X_k) for X_k, _ in shards] if weighted else None
    gradient = aggregate_gradients(grads, weights)                   # step 5
    model.params = sgd_step(model.params, gradient, lr)              # step 6
    return gradient


def train_simulated(model, X: np.ndarray, Y: np.ndarray, *, num_workers: int, epochs: int, lr: float,
                    shard_sizes: Sequence[int] | None = None, weighted: bool = True) -> list[float]:
    """Full-batch training by K simulated workers; the loss before each epoch and after the last."""
    shards = split_batch(X, Y, shard_sizes or even_shard_sizes(len(X), num_workers))
    if len(shards) != num_workers:
        raise ValueError(f"{len(shards)} shard sizes given for num_workers={num_workers}")
    losses = [model.loss(X, Y)]
    for _ in range(epochs):
        simulated_step(model, shards, lr, weighted=weighted)
        losses.append(model.loss(X, Y))
    return losses


# ===================================================================== torch
def shard_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, shard_sizes: Sequence[int], *,
                    reduction: str = "mean") -> list[dict[str, torch.Tensor]]:
    """Steps 1–4 with torch: each worker's gradient of its shard's loss (cross-entropy,
    ``reduction`` "mean" or "sum"), all from the same θ."""
    grads = []
    for x_k, y_k in zip(split_by_sizes(x, shard_sizes), split_by_sizes(y, shard_sizes)):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x_k), y_k, reduction=reduction).backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
    model.zero_grad(set_to_none=True)
    return grads


def big_batch_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reference: the gradient of the mean loss over the whole batch, one worker."""
    return shard_gradients(model, x, y, [len(x)])[0]


def compare_with_big_batch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, shard_sizes: Sequence[int],
                           *, reduction: str = "mean", weighted: bool = True) -> dict:
    """Aggregate K workers' gradients as configured and compare with the big-batch gradient.

    Returns the relative error ‖g − g_big‖ / ‖g_big‖ and the scale ⟨g, g_big⟩ / ‖g_big‖²
    (1 when right; N/K, the per-worker batch, for sum-reduced losses averaged as DDP does),
    and both gradients flattened ("ours", "big batch").
    """
    grads = shard_gradients(model, x, y, shard_sizes, reduction=reduction)
    g = aggregate_gradients(grads, list(shard_sizes) if weighted else None)
    ref = big_batch_gradient(model, x, y)
    flat_g = torch.cat([g[n].reshape(-1) for n in ref]).double()
    flat_ref = torch.cat([ref[n].reshape(-1) for n in ref]).double()
    return {"relative error": float((flat_g - flat_ref).norm() / flat_ref.norm()),
            "scale": float(flat_g @ flat_ref / (flat_ref @ flat_ref)),
            "ours": flat_g.numpy(), "big batch": flat_ref.numpy()}


# ======================================================== real processes
def plan_buckets(params: Sequence[torch.Tensor], bucket_mb: float) -> list[list[int]]:
    """Group parameter indices into buckets of at most ``bucket_mb`` MiB, in *reverse*
    order (the order backward produces gradients, so a bucket is ready early), never
    mixing dtypes or devices. A tensor larger than the cap gets a bucket of its own."""
    if not (isinstance(bucket_mb, numbers.Real) and math.isfinite(bucket_mb) and bucket_mb > 0):
        raise ValueError(f"bucket_mb must be a positive number, got {bucket_mb!r}")
    cap = bucket_mb * 2 ** 20
    buckets: list[list[int]] = []
    size = 0.0
    for i in reversed(range(len(params))):
        nbytes = params[i].numel() * params[i].element_size()
        last = params[buckets[-1][-1]] if buckets else None
        same_kind = last is not None and last.dtype == params[i].dtype and last.device == params[i].device
        if buckets and same_kind and size + nbytes <= cap:
            buckets[-1].append(i)
            size += nbytes
        else:
            buckets.append([i])
            size = nbytes
    return buckets


def _trainable(params: torch.nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The parameters whose gradients are averaged: those with ``requires_grad``, a tied tensor once."""
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"parameter {i} is {type(p).__name__}; expected a torch.Tensor")
    return list({id(p): p for p in params if p.requires_grad}.values())


def agree_on_gradients(params: torch.nn.Module | Iterable[torch.Tensor], *, group=None) -> list[torch.Tensor]:
    """Which parameters have a gradient on *some* rank, agreed by one small all-reduce of a mask
    (one number per trainable parameter), as DDP's ``find_unused_parameters=True`` agrees
    (:func:`allreduce_gradients_naive`; :func:`allreduce_gradients` lets the mask ride in a bucket).

        used_i = Σ_r [rank r has a gradient for parameter i] > 0

    A parameter used on some ranks only gets a zero gradient on the others (it did not touch
    their loss, so their gradient *is* zero), and every rank then averages the same tensors: no
    bucket differs in size between ranks. A parameter no rank used keeps ``.grad`` None, so
    torch's optimizers skip it (no weight decay, no moment update). Returns the used ones."""
    trainable = _trainable(params)
    if not trainable:
        return []
    mask = torch.tensor([float(p.grad is not None) for p in trainable], device=trainable[0].device)
    dist.all_reduce(mask, group=group)
    for p, count in zip(trainable, mask.tolist()):
        if count > 0 and p.grad is None:
            p.grad = torch.zeros_like(p)
    return [p for p, count in zip(trainable, mask.tolist()) if count > 0]


def _check_weight(weight: float | None) -> None:
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, numbers.Real)
                               or not math.isfinite(weight) or weight < 0):
        raise ValueError(f"weight must be a finite number ≥ 0 (the local sample count), got {weight!r}")


def allreduce_mean_(tensors: Sequence[torch.Tensor], *, weight: float | None = None, bucket_mb: float = 25.0,
                    group=None, tally: Sequence[float] | None = None) -> list[float] | None:
    """Average the given tensors in place over the group, bucket by bucket.

        without weight:  t ← 1/K Σ_r t_r
        with weight w_r: t ← Σ_r w_r t_r / Σ_r w_r

    Tensors are flattened into buckets of at most ``bucket_mb`` MiB in reverse order, one
    all-reduce each, all in flight at once; Σ_r w_r rides along at the end of the last
    bucket, so weighting costs no extra round trip, and so does ``tally`` (a few numbers to be
    summed over the ranks, returned). Every rank must pass tensors of the same shapes in the
    same order.
    """
    _check_weight(weight)
    if not tensors:
        return None
    buckets = plan_buckets(tensors, bucket_mb)
    riders = ([float(weight)] if weight is not None else []) + [float(t) for t in tally or []]
    pieces = [[tensors[i].reshape(-1) for i in bucket] for bucket in buckets]
    pieces[-1].append(pieces[-1][0].new_tensor(riders))                  # the riders, in the same copy
    flats = [torch.cat(bucket) for bucket in pieces]                      # fresh copies
    if weight is not None:
        for flat, bucket in zip(flats, buckets):
            flat[:sum(tensors[i].numel() for i in bucket)].mul_(float(weight))
    for work in [dist.all_reduce(flat, group=group, async_op=True) for flat in flats]:
        work.wait()
    summed = flats[-1][flats[-1].numel() - len(riders):].tolist()
    total = float(dist.get_world_size(group)) if weight is None else summed[0]
    if total <= 0:
        raise ValueError("the weights of all ranks add up to 0: no rank has a sample")
    for bucket, flat in zip(buckets, flats):
        _copy_back([tensors[i] for i in bucket], flat, scale=1.0 / total)
    return summed[1:] if weight is not None else summed


@torch.no_grad()
def _copy_back(tensors: Sequence[torch.Tensor], flat: torch.Tensor, scale: float) -> None:
    """Unflatten: each tensor takes its slice of ``flat`` (in order), times ``scale``."""
    flat.mul_(scale)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def allreduce_gradients(params: torch.nn.Module | Iterable[torch.Tensor], *, weight: float | None = None,
                        bucket_mb: float = 25.0, group=None) -> None:
    """Seed 3.1 step 5 across processes: average every ``.grad`` in place over the group.

        without weight:  g ← 1/K Σ_r g_r           (what DDP computes)
        with weight w_r: g ← Σ_r w_r g_r / Σ_r w_r   (w_r = local sample count: the exact
                                                     gradient of the global mean loss)

    Gradients are flattened into buckets of at most ``bucket_mb`` MiB in reverse
    parameter order (backward produces the last layer's first), one all-reduce
    per bucket (:func:`allreduce_mean_`). Parameters with ``requires_grad=False`` are left
    alone. A parameter this rank did not use counts as a zero gradient here (it did not touch
    this rank's loss), so every rank sends buckets of the same sizes; a mask of which
    parameters had a gradient rides at the end of the last bucket, and one that no rank used
    keeps no gradient, so torch's optimizers skip it: DDP's ``find_unused_parameters=True``.
    Every rank must call it with the same parameters, in the same order.
    """
    _check_weight(weight)
    trainable = _trainable(params)
    had = [p.grad is not None for p in trainable]
    for p in trainable:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    used = allreduce_mean_([p.grad for p in trainable], weight=weight, bucket_mb=bucket_mb, group=group, tally=had)
    for p, count in zip(trainable, used or []):
        if count == 0:
            p.grad = None


def allreduce_gradients_naive(params: torch.nn.Module | Iterable[torch.Tensor], *, group=None) -> None:
    """The same average, one blocking all-reduce per parameter: correct, and slow when
    there are many small parameters (every call pays the latency α)."""
    world = dist.get_world_size(group)
    for p in agree_on_gradients(params, group=group):
        dist.all_reduce(p.grad, group=group)
        p.grad.div_(world)


VERBOSE = False  # set True to print every send and receive of ring_allreduce


def ring_allreduce(tensor: torch.Tensor, *, group=None) -> torch.Tensor:
    """Sum ``tensor`` over the group's ranks, in place, by the ring (Patarasuk & Yuan 2009).

    The tensor is cut into p chunks (sizes may differ by one). Reduce-scatter: in p − 1
    steps each rank sends one chunk to its right neighbour and adds the chunk arriving
    from its left, until rank r holds the full sum of chunk r + 1. All-gather: p − 1 more
    steps pass the finished chunks round. Each rank sends 2 (p − 1)/p · n elements in all,
    whatever p: the bandwidth-optimal all-reduce."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if world == 1:
        return tensor
    flat = tensor.view(-1) if tensor.is_contiguous() else None
    if flat is None:
        raise ValueError("ring_allreduce needs a contiguous tensor")
    chunks = list(torch.tensor_split(flat, world))
    right, left = (rank + 1) % world, (rank - 1) % world
    incoming = torch.empty_like(chunks[0])

    def exchange(send_index: int, recv_index: int, phase: str) -> torch.Tensor:
        send, size = chunks[send_index], chunks[recv_index].numel()
        buffer = incoming[:size]
        if VERBOSE:
            print(f"[rank {rank}] {phase}: send chunk {send_index} → rank {right}, "
                  f"receive chunk {recv_index} ← rank {left}", flush=True)
        # isend, then recv: a ring of blocking sends would wait on each other for ever.
        request = dist.isend(send, _global(right, group), group=group) if send.numel() else None
        if size:
            dist.recv(buffer, _global(left, group), group=group)
        if request is not None:
            request.wait()
        return buffer

    for step in range(world - 1):                       # reduce-scatter
        send_index, recv_index = (rank - step) % world, (rank - step - 1) % world
        chunks[recv_index].add_(exchange(send_index, recv_index, "reduce-scatter"))
    for step in range(world - 1):                       # all-gather
        send_index, recv_index = (rank + 1 - step) % world, (rank - step) % world
        chunks[recv_index].copy_(exchange(send_index, recv_index, "all-gather"))
    return tensor


def _global(rank_in_group: int, group) -> int:
    return rank_in_group if group is None else dist.get_global_rank(group, rank_in_group)


# ====================================================== overlapped with backward
def plan_buckets_like_ddp(params: Sequence[torch.Tensor], bucket_mb: float = 25.0,
                          order: Sequence[int] | None = None) -> list[list[int]]:
    """Group parameter indices into buckets as DDP does with ``bucket_cap_mb=bucket_mb``, in
    torch 2.x, after its first iteration.

    In its first iteration DDP sends every gradient in one bucket and notes the order in which
    they became ready; it then rebuilds its buckets in that order, ``order`` here. Left out, it
    is *reverse* parameter order, the order backward completes the layers when they run in the
    order they were registered (a BatchNorm's weight, though, is ready before its bias). Walking
    it, each (dtype, device) keeps one open bucket, so parameters of another dtype in between do
    not close it; a bucket is closed as soon as it holds *at least* ``bucket_mb`` MiB; the
    buckets still open at the end follow the closed ones. (Left at its default,
    ``bucket_cap_mb=None``, DDP also caps its first bucket at 1 MiB.)

    Unlike :func:`plan_buckets` (at most the cap), a large tensor closes its bucket at once, so
    the last layers' bucket leaves as soon as their gradients are complete."""
    if isinstance(bucket_mb, bool) or not (isinstance(bucket_mb, numbers.Real) and math.isfinite(bucket_mb)
                                           and bucket_mb > 0):
        raise ValueError(f"bucket_mb must be a positive number, got {bucket_mb!r}")
    closed: list[list[int]] = []
    open_buckets: dict[tuple, tuple[list[int], list[int]]] = {}     # (dtype, device) → (indices, [bytes])
    for i in reversed(range(len(params))) if order is None else order:
        indices, size = open_buckets.setdefault((params[i].dtype, params[i].device), ([], [0]))
        indices.append(i)
        size[0] += params[i].numel() * params[i].element_size()
        if size[0] >= bucket_mb * 2 ** 20:
            closed.append(indices)
            del open_buckets[(params[i].dtype, params[i].device)]
    return closed + [indices for indices, _ in open_buckets.values()]


class DataParallel(torch.nn.Module):
    """Seed 3.1 steps 4 and 5 at once: each bucket's all-reduce starts while backward is still
    running, as in PyTorch's DDP (Li et al., VLDB 2020).

        g ← Σ_r (g_r / K)      for every trainable parameter, one all-reduce per bucket

    At construction every rank takes rank 0's parameters and buffers (a broadcast), so ranks
    that built different models start equal; with ``broadcast_buffers=True`` (DDP's default)
    every rank takes rank 0's buffers again before each forward, as DDP does (BatchNorm's
    running statistics). The trainable parameters (a tied tensor counts once, frozen ones not at
    all) are laid out in flat buckets in reverse order, the order backward completes them, each
    closed once it holds ``bucket_mb`` MiB, as DDP does (:func:`plan_buckets_like_ddp`). A hook
    on each parameter (``register_post_accumulate_grad_hook``) fires when its gradient is
    complete and writes g_r / K into the parameter's place in its bucket; when a bucket is full,
    its all-reduce is started without waiting (``async_op=True``) and backward goes on with the
    earlier layers. Buckets leave in the same order on every rank, as collectives must. After the
    first synchronised step the buckets are planned again in the order the gradients became
    ready, as DDP rebuilds its own.

    After ``loss.backward()`` call :meth:`finish_gradient_synchronization`: it sends the buckets
    that a parameter without a gradient held back, and waits for all. Each ``.grad`` is then a
    view of its bucket, holding the average, so nothing is copied back (DDP's
    ``gradient_as_bucket_view``). Parameters used on some ranks only get DDP's
    ``find_unused_parameters=True`` result: a zero gradient where unused; one no rank used keeps
    no gradient (a mask of which parameters had one rides at the end of the last bucket). Inside
    :meth:`no_sync` the hooks stand aside: gradients accumulate locally, and the next backward
    outside it averages their sum. A second backward without a new forward is refused.
    """

    def __init__(self, module: torch.nn.Module, *, bucket_mb: float = 25.0, broadcast_buffers: bool = True,
                 group=None):
        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not isinstance(broadcast_buffers, bool):
            raise TypeError(f"broadcast_buffers must be True or False, got {broadcast_buffers!r}")
        trainable = [p for p in module.parameters() if p.requires_grad]   # parameters() lists a tied tensor once
        buckets = plan_buckets_like_ddp(trainable, bucket_mb)                # checks bucket_mb first
        if not trainable:
            raise ValueError("the module has no trainable parameter: there is no gradient to average")
        self.module, self.group, self.world_size = module, group, dist.get_world_size(group)
        self.broadcast_buffers, self.bucket_mb = broadcast_buffers, bucket_mb
        _broadcast_from_first_rank(list(module.parameters()) + list(module.buffers()), group)
        self.params = trainable
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]   # for messages
        self._lay_out(buckets)
        self._ready_order: list[int] | None = []             # noted in the first synchronised backward
        self._syncing, self._sync_buffers_next, self._forward_ran = True, True, False
        self._reset()                                        # nothing in flight, every bucket empty
        for i, p in enumerate(trainable):
            p.register_post_accumulate_grad_hook(lambda param, i=i: self._gradient_ready(i, param))

    def _lay_out(self, buckets: list[list[int]]) -> None:
        """One flat tensor per bucket, each parameter's slot in one; the last bucket is one number
        per parameter longer (the mask of which parameters have a gradient)."""
        self.buckets, params = buckets, self.params
        sizes = [sum(params[i].numel() for i in b) for b in buckets]
        sizes[-1] += len(params)
        self.flats = [torch.zeros(n, dtype=params[b[0]].dtype, device=params[b[0]].device)
                      for n, b in zip(sizes, buckets)]
        self.slots: dict[int, tuple[int, int]] = {}          # parameter → (its bucket, its offset there)
        for b, bucket in enumerate(buckets):
            offsets = np.cumsum([0] + [params[i].numel() for i in bucket])
            self.slots.update({i: (b, int(offset)) for i, offset in zip(bucket, offsets)})

    def _rebuild_buckets(self) -> None:
        """After the first synchronised backward, as DDP: plan the buckets again in the order the
        gradients became ready (rank 0's order, broadcast, so that every rank plans the same
        buckets; parameters that got none come last)."""
        noted = self._ready_order + [i for i in reversed(range(len(self.params))) if i not in self._ready_order]
        order = torch.tensor(noted, device=self.params[0].device)
        _broadcast_from_first_rank([order], self.group)
        self._lay_out(plan_buckets_like_ddp(self.params, self.bucket_mb, order=order.tolist()))
        self._ready_order = None

    def forward(self, *args, **kwargs):
        """The module's forward; before it, rank 0's buffers (when DDP would send them: after a
        forward that was followed by a synchronised backward, and before the first)."""
        if self._arrived:
            raise RuntimeError("call finish_gradient_synchronization() after backward, before the next forward")
        buffers = list(self.module.buffers())
        if self.broadcast_buffers and self._sync_buffers_next and buffers:
            _broadcast_from_first_rank(buffers, self.group)
        output = self.module(*args, **kwargs)
        synchronised = torch.is_grad_enabled() and self._syncing
        self._sync_buffers_next, self._forward_ran = synchronised, self._forward_ran or synchronised
        return output

    def _slot(self, index: int) -> torch.Tensor:
        """Parameter ``index``'s place in its bucket, shaped like the parameter."""
        bucket, offset = self.slots[index]
        param = self.params[index]
        return self.flats[bucket][offset:offset + param.numel()].view_as(param)

    def _mask(self) -> torch.Tensor:
        """The end of the last bucket: 1 for each parameter that has a gradient on this rank
        (after the all-reduce: on how many ranks it had one)."""
        return self.flats[-1][-len(self.params):]

    @torch.no_grad()
    def _gradient_ready(self, index: int, param: torch.Tensor) -> None:
        """The hook: parameter ``index``'s gradient is complete. Put g_r / K into its slot (the
        gradient becomes a view of the slot) and start every bucket that is now full, in order."""
        if not self._syncing:
            return
        if index in self._arrived or not self._forward_ran:
            self._reset()
            raise RuntimeError(f"a second backward reached {self.names[index]!r} without a new forward: its "
                               "gradient was already averaged. Run forward before each backward (to accumulate, "
                               "run the earlier ones inside no_sync())")
        self._into_slot(index, param)
        self._arrived.add(index)
        if self._ready_order is not None:
            self._ready_order.append(index)
        self._missing[self.slots[index][0]] -= 1
        while self._launched < len(self.buckets) and self._missing[self._launched] == 0:
            self._launch(self._launched)
            self._launched += 1

    def _into_slot(self, index: int, param: torch.Tensor) -> None:
        """g_r / K into the parameter's slot, which becomes its ``.grad`` (0 where it has none)."""
        slot = self._slot(index)
        if param.grad is None:
            slot.zero_()
        elif param.grad.data_ptr() == slot.data_ptr():     # already the slot (accumulated in place)
            slot.mul_(1.0 / self.world_size)
        else:
            torch.mul(param.grad, 1.0 / self.world_size, out=slot)
        param.grad = slot

    def _launch(self, bucket: int) -> None:
        """Start bucket ``bucket``'s all-reduce (sum) and return at once; backward goes on."""
        self._works.append(dist.all_reduce(self.flats[bucket], group=self.group, async_op=True))

    @torch.no_grad()
    def finish_gradient_synchronization(self) -> None:
        """Send the buckets still held back by a parameter that got no gradient on this rank (its
        slot holds its accumulated gradient, or 0), wait for every bucket: each ``.grad`` then
        holds 1/K Σ_r g_r. A parameter that no rank used keeps no gradient, as DDP leaves it. Does
        nothing when no forward with gradients ran since the last call (or only inside no_sync)."""
        if self._forward_ran:
            self._send_held_back()
        for work in self._works:
            work.wait()
        for p, count in zip(self.params, self._mask().tolist() if self._works else ()):
            if count == 0:
                p.grad = None
        if self._works and self._ready_order is not None:
            self._rebuild_buckets()
        self._reset()

    def _send_held_back(self) -> None:
        """Launch, in order, the buckets that a parameter without a gradient on this rank held back;
        its slot takes what it accumulated (÷ K), or 0. Before the last bucket leaves, the mask at
        its end notes which parameters have a gradient here."""
        if self._launched == len(self.buckets):
            return
        self._mask().copy_(torch.tensor([float(i in self._arrived or p.grad is not None)
                                         for i, p in enumerate(self.params)]))
        for bucket in range(self._launched, len(self.buckets)):
            for i in self.buckets[bucket]:
                if i not in self._arrived:
                    self._into_slot(i, self.params[i])
            self._launch(bucket)
        self._launched = len(self.buckets)

    def _reset(self) -> None:
        self._works, self._launched, self._arrived, self._forward_ran = [], 0, set(), False
        self._missing = [len(b) for b in self.buckets]
        self._mask().fill_(1.0)                              # every parameter has a gradient, until told otherwise

    @contextlib.contextmanager
    def no_sync(self):
        """Gradient accumulation: backward passes inside this block only add to the local
        ``.grad``; the first backward after it averages the accumulated sums."""
        previous, self._syncing = self._syncing, False
        try:
            yield
        finally:
            self._syncing = previous


def _broadcast_from_first_rank(tensors: Sequence[torch.Tensor], group=None) -> None:
    """Every rank takes the values of the group's first rank, all broadcasts in flight at once."""
    source = 0 if group is None else dist.get_global_rank(group, 0)
    with torch.no_grad():
        works = [dist.broadcast(t, src=source, group=group, async_op=True) for t in tensors]
        for work in works:
            work.wait()
