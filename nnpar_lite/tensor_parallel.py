"""Tensor parallelism: one layer's weight matrix split among K workers.

A Linear layer computes y = x Wᵀ + b with W of shape (out, in).

* Column parallel: split W's *output* rows, W = [W_0; …; W_{K−1}]. Worker k
  computes y_k = x W_kᵀ + b_k, a slice of y's features; the slices are gathered
  (concatenated).
* Row parallel: split W's *input* columns, W = [W_0 … W_{K−1}], and x's features
  the same way. Worker k computes the partial product x_k W_kᵀ; the partial
  results are summed (b is added once).

The Megatron-LM pair (Shoeybi et al. 2019) puts a column-parallel layer first
and a row-parallel one second: the activation between them stays split, so a
two-layer MLP needs one all-reduce in the forward pass (g, summing the partial
outputs) and one in the backward pass (f, summing the gradients of the shared
input). f is the identity forward and an all-reduce backward; g the reverse.
"""

from __future__ import annotations


import torch
import torch.distributed as dist
import torch.nn.functional as F

from .util import even_bounds, whole_number


def split_columns(layer: torch.nn.Linear, num_workers: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(W_k, b_k) for each worker: consecutive blocks of output rows (sizes may differ by one).
    Views of the layer's own parameters, so gradients reach them."""
    _check_split(layer.out_features, num_workers, "output features")
    weights = torch.tensor_split(layer.weight, num_workers, dim=0)
    biases = torch.tensor_split(layer.bias, num_workers) if layer.bias is not None else [None] * num_workers
    return list(zip(weights, biases))


def split_rows(layer: torch.nn.Linear, num_workers: int) -> list[torch.Tensor]:
    """W_k for each worker: consecutive blocks of input columns."""
    _check_split(layer.in_features, num_workers, "input features")
    return list(torch.tensor_split(layer.weight, num_workers, dim=1))


def _check_split(size: int, num_workers: int, what: str) -> None:
    if whole_number("num_workers", num_workers) > size:
        raise ValueError(f"cannot split {size} {what} among {num_workers!r} workers")


def column_parallel_linear(x: torch.Tensor, layer: torch.nn.Linear, num_workers: int) -> torch.Tensor:
    """y = x Wᵀ + b computed as K column blocks, gathered along the features."""
    return torch.cat([F.linear(x, w, b) for w, b in split_columns(layer, num_workers)], dim=-1)


def row_parallel_linear(x: torch.Tensor, layer: torch.nn.Linear, num_workers: int) -> torch.Tensor:
    """y = x Wᵀ + b computed as K partial products x_k W_kᵀ, summed; b added once."""
    x_parts = torch.tensor_split(x, num_workers, dim=-1)
    partial = [F.linear(x_k, w_k) for x_k, w_k in zip(x_parts, split_rows(layer, num_workers))]
    out = torch.stack(partial).sum(0)
    return out + layer.bias if layer.bias is not None else out


def megatron_mlp(x: torch.Tensor, first: torch.nn.Linear, second: torch.nn.Linear, num_workers: int,
                 activation=F.gelu) -> torch.Tensor:
    """second(activation(first(x))) with first column-parallel and second row-parallel.

    Worker k holds W1's rows k and W2's columns k; it computes activation(x W1_kᵀ + b1_k)
    W2_kᵀ alone (the activation acts elementwise, so it needs no communication). The
    K partial outputs are summed: that sum is the forward all-reduce g.
    """
    halves = zip(split_columns(first, num_workers), split_rows(second, num_workers))
    partial = [F.linear(activation(F.linear(x, w1, b1)), w2) for (w1, b1), w2 in halves]
    out = torch.stack(partial).sum(0)
    return out + second.bias if second.bias is not None else out


# ============================================================ real processes
class CopyToWorkers(torch.autograd.Function):
    """Megatron's f: identity in the forward pass, all-reduce of the gradient over ``group`` in
    the backward pass (each worker used the same input; its gradient is the sum of theirs).
    ``CopyToWorkers.apply(x, group)``; the group defaults to all ranks."""

    @staticmethod
    def forward(ctx, x, group=None):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class SumFromWorkers(torch.autograd.Function):
    """Megatron's g: all-reduce (sum) over ``group`` in the forward pass, identity in the
    backward pass. ``SumFromWorkers.apply(partial, group)``."""

    @staticmethod
    def forward(ctx, partial, group=None):
        total = partial.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def blocks_held(out_features: int, in_features: int, num_workers: int, kind: str) -> list[tuple[slice, slice]]:
    """Which (rows, columns) of W (out × in) worker k holds, for a picture."""
    if kind == "column":
        return [(slice(a, b), slice(0, in_features)) for a, b in even_bounds(out_features, num_workers)]
    if kind == "row":
        return [(slice(0, out_features), slice(a, b)) for a, b in even_bounds(in_features, num_workers)]
    raise ValueError(f"kind must be 'column' or 'row', got {kind!r}")
