"""Collectives along one dimension of a tensor, and the ones autograd can differentiate.

* outside autograd: :func:`all_gather_dim`, :func:`reduce_scatter_dim`;
* differentiable: :func:`gather_along` (an all-gather forward, a reduce-scatter backward),
  :func:`reduce_scatter_along` (the reverse), :func:`exchange` (an all-to-all with uneven counts,
  its backward the reverse all-to-all) and :func:`all_to_all_along` (DeepSpeed-Ulysses' switch
  from a sequence split to a head split).

Each is tested against one-process autograd (``tests/test_collectives.py``): a differentiable
collective is easy to get wrong (torch's own ``all_gather`` returned permuted gradients on gloo,
DESIGN.md section 3), so test every one you use. :mod:`nnpar_lite.collectives` re-exports them.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from .collectives import ALL_GATHER, REDUCE_SCATTER, all_to_all


def all_gather_dim(x: torch.Tensor, dim: int, *, group=None) -> torch.Tensor:
    """Every rank's ``x`` concatenated along ``dim`` (equal sizes), outside autograd."""
    world = dist.get_world_size(group)
    moved = x.movedim(dim, 0).contiguous()
    out = moved.new_empty((world * moved.shape[0], *moved.shape[1:]))
    getattr(dist, ALL_GATHER)(out, moved, group=group)
    return out.movedim(0, dim)


def reduce_scatter_dim(x: torch.Tensor, dim: int, *, group=None) -> torch.Tensor:
    """Σ_ranks x, rank r keeping slice r along ``dim``, outside autograd."""
    world = dist.get_world_size(group)
    if x.shape[dim] % world:
        raise ValueError(f"reduce-scatter along dim {dim}: size {x.shape[dim]} does not divide by the {world} ranks")
    moved = x.movedim(dim, 0).contiguous()
    out = moved.new_empty((moved.shape[0] // world, *moved.shape[1:]))
    getattr(dist, REDUCE_SCATTER)(out, moved, group=group)
    return out.movedim(0, dim)


class _GatherAlong(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        return all_gather_dim(x, dim, group=group)

    @staticmethod
    def backward(ctx, grad):
        return reduce_scatter_dim(grad, ctx.dim, group=ctx.group), None, None


class _ReduceScatterAlong(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        return reduce_scatter_dim(x, dim, group=group)

    @staticmethod
    def backward(ctx, grad):
        return all_gather_dim(grad, ctx.dim, group=ctx.group), None, None


def gather_along(x: torch.Tensor, dim: int, *, group=None) -> torch.Tensor:
    """Forward: every rank's ``x`` concatenated along ``dim`` (an all-gather; equal sizes).
    Backward: each rank's gradient for the whole is partial, so the gradients are summed over
    the ranks and rank r keeps its own slice: a reduce-scatter. (Megatron's sequence parallelism
    before a column-parallel layer; an attention that gathers K and V.)"""
    return _GatherAlong.apply(x, dim, group)


def reduce_scatter_along(x: torch.Tensor, dim: int, *, group=None) -> torch.Tensor:
    """Forward: Σ_ranks x, and rank r keeps slice r along ``dim`` (a reduce-scatter).
    Backward: the slices' gradients gathered along ``dim`` (an all-gather). (Megatron's
    sequence parallelism after a row-parallel layer.)"""
    return _ReduceScatterAlong.apply(x, dim, group)


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, send_counts, recv_counts, group):
        ctx.counts, ctx.group = (send_counts, recv_counts), group
        return all_to_all(x, send_counts, recv_counts, group=group)

    @staticmethod
    def backward(ctx, grad):
        send_counts, recv_counts = ctx.counts
        return all_to_all(grad, recv_counts, send_counts, group=ctx.group), None, None, None


def exchange(x: torch.Tensor, send_counts: Sequence[int], recv_counts: Sequence[int], *,
             group=None) -> torch.Tensor:
    """:func:`all_to_all` that autograd differentiates: the gradient of what rank r received
    from rank k goes back to rank k by the reverse all-to-all (counts swapped)."""
    return _Exchange.apply(x, [int(c) for c in send_counts], [int(c) for c in recv_counts], group)


def all_to_all_along(x: torch.Tensor, scatter_dim: int, gather_dim: int, *, group=None) -> torch.Tensor:
    """Cut ``x`` into N equal slices along ``scatter_dim``, send slice k to rank k, and join the
    slices received, rank 0's first, along ``gather_dim`` (DeepSpeed-Ulysses: from a sequence
    split to a head split, and back). Differentiable: its backward is the reverse all-to-all."""
    world = dist.get_world_size(group)
    if x.shape[scatter_dim] % world:
        raise ValueError(f"all-to-all along dim {scatter_dim}: size {x.shape[scatter_dim]} does not divide by the "
                         f"{world} ranks")
    pieces = x.movedim(scatter_dim, 0)
    rows = pieces.shape[0] // world
    received = exchange(pieces.reshape(pieces.shape[0], -1), [rows] * world, [rows] * world, group=group)
    received = received.reshape(world, rows, *pieces.shape[1:]).movedim(1, scatter_dim + 1)
    return torch.cat(received.unbind(0), dim=gather_dim)
