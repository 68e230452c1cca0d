"""Data parallelism overlapped with backward (chapter 09), as PyTorch's DDP (Li et al., VLDB 2020).

Chapter 03's :func:`~nnpar_lite.data_parallel.allreduce_gradients` waits for backward to finish,
then averages. :class:`DataParallel` starts each bucket's all-reduce as soon as the bucket's last
gradient is complete, while backward goes on with the earlier layers:

* :func:`plan_buckets_like_ddp`: which parameters share a bucket, DDP's rule;
* :class:`GradientBuckets`: the flat buckets, each gradient's slot in one, and their all-reduces,
  started in order as the buckets fill;
* :class:`DataParallel`: the wrapper, whose hook (:meth:`DataParallel.gradient_ready`) fills the
  buckets during backward.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from .collectives import broadcast_from_first_rank, positive_number


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

    Unlike :func:`~nnpar_lite.collectives.plan_buckets` (at most the cap), a large tensor closes
    its bucket at once, so the last layers' bucket leaves as soon as their gradients are complete."""
    cap = positive_number("bucket_mb", bucket_mb) * 2 ** 20
    closed: list[list[int]] = []
    open_buckets: dict[tuple, tuple[list[int], list[int]]] = {}     # (dtype, device) → (indices, [bytes])
    for i in reversed(range(len(params))) if order is None else order:
        indices, size = open_buckets.setdefault((params[i].dtype, params[i].device), ([], [0]))
        indices.append(i)
        size[0] += params[i].numel() * params[i].element_size()
        if size[0] >= cap:
            closed.append(indices)
            del open_buckets[(params[i].dtype, params[i].device)]
    return closed + [indices for indices, _ in open_buckets.values()]


class GradientBuckets:
    """The flat buckets that :class:`DataParallel` averages, and their all-reduces.

    One flat tensor per bucket, each parameter's slot in one; the last bucket is one number per
    parameter longer: the mask of which parameters have a gradient on this rank (after the
    all-reduce: on how many ranks). :meth:`put` writes g_r / K into a parameter's slot, which
    becomes its ``.grad``; :meth:`launch_full` starts, in bucket order (the same on every rank, as
    collectives must), the all-reduce (sum) of every bucket whose parameters have all arrived,
    without waiting for it (``async_op=True``)."""

    def __init__(self, params: list[torch.Tensor], buckets: list[list[int]], *, group=None, launch=None):
        self.params, self.buckets, self.group = params, buckets, group
        self.launch = launch or self.start                   # DataParallel passes its own, which a subclass may time
        self.world_size = dist.get_world_size(group)
        sizes = [sum(params[i].numel() for i in b) for b in buckets]
        sizes[-1] += len(params)
        self.flats = [torch.zeros(n, dtype=params[b[0]].dtype, device=params[b[0]].device)
                      for n, b in zip(sizes, buckets)]
        self.slots: dict[int, tuple[int, int]] = {}          # parameter → (its bucket, its offset there)
        for b, bucket in enumerate(buckets):
            offsets = np.cumsum([0] + [params[i].numel() for i in bucket])
            self.slots.update({i: (b, int(offset)) for i, offset in zip(bucket, offsets)})
        self.reset()

    def reset(self) -> None:
        """Nothing in flight, nothing arrived; every parameter has a gradient, until told otherwise."""
        self.works, self.launched, self.arrived = [], 0, set()
        self.missing = [len(b) for b in self.buckets]        # per bucket: parameters not yet arrived
        self.mask().fill_(1.0)

    def slot(self, index: int) -> torch.Tensor:
        """Parameter ``index``'s place in its bucket, shaped like the parameter."""
        bucket, offset = self.slots[index]
        param = self.params[index]
        return self.flats[bucket][offset:offset + param.numel()].view_as(param)

    def mask(self) -> torch.Tensor:
        """The end of the last bucket: one number per parameter."""
        return self.flats[-1][-len(self.params):]

    @torch.no_grad()
    def put(self, index: int, param: torch.Tensor) -> None:
        """g_r / K into the parameter's slot, which becomes its ``.grad`` (0 where it has none)."""
        slot = self.slot(index)
        if param.grad is None:
            slot.zero_()
        elif param.grad.data_ptr() == slot.data_ptr():     # already the slot (accumulated in place)
            slot.mul_(1.0 / self.world_size)
        else:
            torch.mul(param.grad, 1.0 / self.world_size, out=slot)
        param.grad = slot

    def arrive(self, index: int) -> None:
        """Parameter ``index``'s slot is filled: one fewer missing in its bucket."""
        self.arrived.add(index)
        self.missing[self.slots[index][0]] -= 1

    def launch_full(self) -> None:
        """Start, in order, every bucket that has no parameter missing and all before it started."""
        while self.launched < len(self.buckets) and self.missing[self.launched] == 0:
            self.launch(self.launched)
            self.launched += 1

    def start(self, bucket: int) -> None:
        """Start bucket ``bucket``'s all-reduce (sum) and return at once; backward goes on."""
        self.works.append(dist.all_reduce(self.flats[bucket], group=self.group, async_op=True))

    @torch.no_grad()
    def send_held_back(self) -> None:
        """Launch the buckets that a parameter without a gradient on this rank held back; its slot
        takes what it accumulated (÷ K), or 0. Before the last bucket leaves, the mask at its end
        notes which parameters have a gradient here."""
        if self.launched == len(self.buckets):
            return
        self.mask().copy_(torch.tensor([float(i in self.arrived or p.grad is not None)
                                        for i, p in enumerate(self.params)]))
        for i in (i for b in self.buckets[self.launched:] for i in b if i not in self.arrived):
            self.put(i, self.params[i])
            self.arrive(i)
        self.launch_full()

    def wait(self) -> list[float]:
        """Wait for every bucket in flight; on how many ranks each parameter had a gradient (an
        empty list when nothing was sent)."""
        for work in self.works:
            work.wait()
        return self.mask().tolist() if self.works else []


# DDP's life cycle is one object a reader follows from top to bottom (forward, the gradient hook,
# the wait, no_sync, buffers); the buckets themselves are GradientBuckets.
# Over 120 lines: see above.
class DataParallel(torch.nn.Module):
    """Seed 3.1 steps 4 and 5 at once: each bucket's all-reduce starts while backward is still
    running, as in PyTorch's DDP (Li et al., VLDB 2020).

        g ← Σ_r (g_r / K)      for every trainable parameter, one all-reduce per bucket

    At construction every rank takes rank 0's parameters and buffers; with
    ``broadcast_buffers=True`` (DDP's default) it takes rank 0's buffers again before each
    forward (BatchNorm's running statistics). The trainable parameters (a tied tensor once, frozen
    ones not at all) are laid out in flat buckets (:class:`GradientBuckets`) in reverse order, as
    DDP plans them (:func:`plan_buckets_like_ddp`), and planned again, after the first step, in
    the order the gradients became ready. A hook on each parameter (:meth:`gradient_ready`) fires
    when its gradient is complete, writes g_r / K into its place in its bucket, and starts every
    bucket that is now full; backward goes on with the earlier layers.

    After ``loss.backward()`` call :meth:`finish_gradient_synchronization`: each ``.grad`` is then
    a view of its bucket, holding the average (DDP's ``gradient_as_bucket_view``). A parameter
    used on some ranks only gets a zero gradient where unused; one no rank used keeps none (DDP's
    ``find_unused_parameters=True``). Inside :meth:`no_sync` gradients accumulate locally, and the
    next backward outside it averages their sum. A second backward without a new forward is refused."""

    def __init__(self, module: torch.nn.Module, *, bucket_mb: float = 25.0, broadcast_buffers: bool = True,
                 group=None):
        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not isinstance(broadcast_buffers, bool):
            raise TypeError(f"broadcast_buffers must be True or False, got {broadcast_buffers!r}")
        trainable = [p for p in module.parameters() if p.requires_grad]   # parameters() lists a tied tensor once
        planned = plan_buckets_like_ddp(trainable, bucket_mb)               # checks bucket_mb first
        if not trainable:
            raise ValueError("the module has no trainable parameter: there is no gradient to average")
        self.module, self.group, self.world_size = module, group, dist.get_world_size(group)
        self.broadcast_buffers, self.bucket_mb = broadcast_buffers, bucket_mb
        broadcast_from_first_rank(list(module.parameters()) + list(module.buffers()), group=group)
        self.params = trainable
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]   # for messages
        self.gradient_buckets = GradientBuckets(trainable, planned, group=group, launch=self._launch)
        self._ready_order: list[int] | None = []             # noted in the first synchronised backward
        self._syncing, self._sync_buffers_next, self._forward_ran = True, True, False
        for i, p in enumerate(trainable):
            p.register_post_accumulate_grad_hook(lambda param, i=i: self.gradient_ready(i, param))

    @property
    def buckets(self) -> list[list[int]]:
        """The parameters' indices, bucket by bucket, in the order the buckets leave."""
        return self.gradient_buckets.buckets

    @property
    def _works(self) -> list:
        return self.gradient_buckets.works

    def _launch(self, bucket: int) -> None:
        """Start bucket ``bucket``'s all-reduce (a subclass may note when each leaves: chapter 09's timeline)."""
        self.gradient_buckets.start(bucket)

    def forward(self, *args, **kwargs):
        """The module's forward; before it, rank 0's buffers (when DDP would send them: after a
        forward that was followed by a synchronised backward, and before the first)."""
        if self.gradient_buckets.arrived:
            raise RuntimeError("call finish_gradient_synchronization() after backward, before the next forward")
        buffers = list(self.module.buffers())
        if self.broadcast_buffers and self._sync_buffers_next and buffers:
            broadcast_from_first_rank(buffers, group=self.group)
        output = self.module(*args, **kwargs)
        synchronised = torch.is_grad_enabled() and self._syncing
        self._sync_buffers_next, self._forward_ran = synchronised, self._forward_ran or synchronised
        return output

    @torch.no_grad()
    def gradient_ready(self, index: int, param: torch.Tensor) -> None:
        """The hook: parameter ``index``'s gradient is complete. Put g_r / K into its slot (the
        gradient becomes a view of the slot) and start every bucket that is now full, in order."""
        if not self._syncing:
            return
        if index in self.gradient_buckets.arrived or not self._forward_ran:
            self.gradient_buckets.reset()
            self._forward_ran = False
            raise RuntimeError(f"a second backward reached {self.names[index]!r} without a new forward: its "
                               "gradient was already averaged. Run forward before each backward (to accumulate, "
                               "run the earlier ones inside no_sync())")
        self.gradient_buckets.put(index, param)
        self.gradient_buckets.arrive(index)
        if self._ready_order is not None:
            self._ready_order.append(index)
        self.gradient_buckets.launch_full()

    @torch.no_grad()
    def finish_gradient_synchronization(self) -> None:
        """Send the buckets still held back by a parameter that got no gradient on this rank (its
        slot holds its accumulated gradient, or 0), wait for every bucket: each ``.grad`` then
        holds 1/K Σ_r g_r. A parameter that no rank used keeps no gradient, as DDP leaves it. Does
        nothing when no forward with gradients ran since the last call (or only inside no_sync)."""
        if self._forward_ran:
            self.gradient_buckets.send_held_back()
        counts = self.gradient_buckets.wait()
        for p, count in zip(self.params, counts):
            if count == 0:
                p.grad = None
        if counts and self._ready_order is not None:
            self._rebuild_buckets()
        self.gradient_buckets.reset()
        self._forward_ran = False

    def _rebuild_buckets(self) -> None:
        """After the first synchronised backward, as DDP: plan the buckets again in the order the
        gradients became ready (rank 0's order, broadcast, so that every rank plans the same
        buckets; parameters that got none come last)."""
        noted = self._ready_order + [i for i in reversed(range(len(self.params))) if i not in self._ready_order]
        order = torch.tensor(noted, device=self.params[0].device)
        broadcast_from_first_rank([order], group=self.group)
        planned = plan_buckets_like_ddp(self.params, self.bucket_mb, order=order.tolist())
        self.gradient_buckets = GradientBuckets(self.params, planned, group=self.group, launch=self._launch)
        self._ready_order = None

    @contextlib.contextmanager
    def no_sync(self):
        """Gradient accumulation: backward passes inside this block only add to the local
        ``.grad``; the first backward after it averages the accumulated sums."""
        previous, self._syncing = self._syncing, False
        try:
            yield
        finally:
            self._syncing = previous
