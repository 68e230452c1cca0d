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

Over real processes, :func:`shard_gpt_block` splits a transformer block of the tiny GPT
(:mod:`nnpar_lite.gpt`) this way, attention by heads; with ``sequence_parallel=True``
(Korthikanti et al. 2022) f and g become an all-gather and a reduce-scatter along the sequence.
"""

from __future__ import annotations


import torch
import torch.distributed as dist
import torch.nn.functional as F

from .collectives import all_gather_dim, copy_back, flatten, reduce_scatter_along, reduce_scatter_dim
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
    whole_number(f"num_workers (cannot split {size} {what} among more)", num_workers, maximum=size)


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


# ============================================================ a transformer block, split
class ColumnParallelLinear(torch.nn.Module):
    """This rank's rows of a Linear: y_k = f(x) W_kᵀ + b_k, W_k = W[rows], a slice of y's features.

    f is Megatron's copy (identity forward, all-reduce of the input's gradient backward); with
    ``sequence_parallel`` it is an all-gather of the sequence chunks (dim 1) forward and a
    reduce-scatter backward (Korthikanti et al. 2022), and the layer keeps only this rank's
    chunk of its input for the backward pass, gathering it again there
    (:class:`GatheredLinear`). ``rows`` says which rows of the full weight this shard holds, so a
    test can compare it with the unsplit layer."""

    def __init__(self, full: torch.nn.Linear, rows: torch.Tensor, *, group=None, sequence_parallel: bool = False):
        super().__init__()
        self.rows, self.group, self.sequence_parallel = rows, group, sequence_parallel
        self.weight = torch.nn.Parameter(full.weight.detach()[rows].clone())
        self.bias = None if full.bias is None else torch.nn.Parameter(full.bias.detach()[rows].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sequence_parallel:
            return GatheredLinear.apply(x, self.weight, self.bias, self.group)
        return F.linear(CopyToWorkers.apply(x, self.group), self.weight, self.bias)


class GatheredLinear(torch.autograd.Function):
    """y = all-gather(x_r) Wᵀ + b along the sequence, keeping only the chunk x_r for backward:

        forward:  x = [x_0; …; x_{N−1}] (all-gather), y = x Wᵀ + b          keeps x_r, s/N positions
        backward: x gathered again; dW = dyᵀ x, db = Σ dy, dx_r = reduce-scatter(dy W)

    What Korthikanti et al. (2022, section 4.2.2) do: an autograd that kept the gathered x would
    hold N times this rank's share of the layer's input; one more all-gather in the backward
    pass (which Megatron overlaps with computing dx) keeps the activations split by N."""

    @staticmethod
    def forward(ctx, x, weight, bias, group):
        ctx.save_for_backward(x, weight)
        ctx.group, ctx.has_bias = group, bias is not None
        return F.linear(all_gather_dim(x, 1, group=group), weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        whole = all_gather_dim(x, 1, group=ctx.group)                 # gathered again
        grad_weight = grad.reshape(-1, grad.shape[-1]).t() @ whole.reshape(-1, whole.shape[-1])
        grad_bias = grad.sum(dim=tuple(range(grad.dim() - 1))) if ctx.has_bias else None
        grad_x = reduce_scatter_dim(grad @ weight, 1, group=ctx.group)
        return grad_x, grad_weight, grad_bias, None


class RowParallelLinear(torch.nn.Module):
    """This rank's columns of a Linear: y = g(x_k W_kᵀ) + b, W_k = W[:, columns], the partial
    products summed over the ranks (g: an all-reduce forward, identity backward; with
    ``sequence_parallel`` a reduce-scatter along the sequence forward, an all-gather backward),
    the bias added once, after the sum."""

    def __init__(self, full: torch.nn.Linear, columns: slice, *, group=None, sequence_parallel: bool = False):
        super().__init__()
        self.columns, self.group, self.sequence_parallel = columns, group, sequence_parallel
        self.weight = torch.nn.Parameter(full.weight.detach()[:, columns].clone())
        self.bias = None if full.bias is None else torch.nn.Parameter(full.bias.detach().clone())
        if self.bias is not None and sequence_parallel:
            self.bias.sequence_parallel = True    # it sees this rank's chunk of the sequence only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        partial = F.linear(x, self.weight)
        y = reduce_scatter_along(partial, 1, group=self.group) if self.sequence_parallel else \
            SumFromWorkers.apply(partial, self.group)
        return y if self.bias is None else y + self.bias


def head_rows(n_head: int, head_dim: int, rank: int, world_size: int) -> torch.Tensor:
    """The rows of a fused q/k/v weight (3 · n_head · head_dim rows: q's heads, k's, v's) that
    hold rank r's heads [r·n_head/t, (r+1)·n_head/t) in each of q, k and v."""
    width, local = n_head * head_dim, n_head // world_size * head_dim
    return torch.cat([torch.arange(part * width + rank * local, part * width + (rank + 1) * local)
                      for part in range(3)])


def shard_gpt_block(block: torch.nn.Module, *, group=None, sequence_parallel: bool = False) -> torch.nn.Module:
    """Make a :class:`nnpar_lite.gpt.Block` this rank's Megatron tensor-parallel shard, in place
    (Shoeybi et al. 2019): attention's heads split (``attn.c_attn`` column-parallel by heads,
    ``attn.c_proj`` row-parallel), the MLP's ``c_fc`` column-parallel and ``c_proj`` row-parallel.
    Forward: one f and one g per sub-layer, so 2 all-reduces; backward 2 more.

    ``sequence_parallel=True`` (Korthikanti et al. 2022): the block takes and returns this
    rank's chunk of the sequence (dim 1); LayerNorms and residuals run on the chunk; f and g
    become an all-gather and a reduce-scatter along the sequence. The LayerNorms' and
    row-parallel biases' gradients are then partial: :func:`sum_sequence_parallel_gradients`.
    Every rank must hold the same full block (same seed) before the call."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    attn, mlp = block.attn, block.mlp
    if attn.n_head % world:
        raise ValueError(f"{attn.n_head} attention heads do not divide among the {world} ranks of the "
                         "tensor-parallel group")
    head_dim = attn.c_proj.in_features // attn.n_head
    kw = dict(group=group, sequence_parallel=sequence_parallel)
    attn.c_attn = ColumnParallelLinear(attn.c_attn, head_rows(attn.n_head, head_dim, rank, world), **kw)
    attn.c_proj = RowParallelLinear(attn.c_proj, _block_of(attn.c_proj.in_features, rank, world), **kw)
    attn.n_head //= world
    mlp.c_fc = ColumnParallelLinear(mlp.c_fc, torch.arange(mlp.c_fc.out_features)[
        _block_of(mlp.c_fc.out_features, rank, world)], **kw)
    mlp.c_proj = RowParallelLinear(mlp.c_proj, _block_of(mlp.c_proj.in_features, rank, world), **kw)
    if sequence_parallel:
        for norm in (block.ln_1, block.ln_2):
            for p in norm.parameters():
                p.sequence_parallel = True
    return block


def _block_of(size: int, rank: int, world: int) -> slice:
    return slice(rank * size // world, (rank + 1) * size // world)


def sum_sequence_parallel_gradients(model: torch.nn.Module, *, group=None) -> None:
    """Σ over the tensor-parallel group of the gradients of the parameters marked
    ``sequence_parallel`` (LayerNorms, row-parallel biases): under sequence parallelism each
    rank saw its chunk of the sequence only. One all-reduce of them all."""
    grads = [p.grad for p in model.parameters() if getattr(p, "sequence_parallel", False) and p.grad is not None]
    if grads:
        flat = flatten(grads)
        dist.all_reduce(flat, group=group)
        copy_back(grads, flat)
