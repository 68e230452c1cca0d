"""Spatial parallelism (Dryden et al., IPDPS 2019): the *input image* split into tiles.

A convolution's output pixel depends on a k×k window of input pixels. Split the
output into a grid of tiles, one per worker: each worker needs its own part of
the input plus a border of k − 1 rows and columns (the *halo*) that belongs to
its neighbours, or is zero padding at the image's edge. With the halos
exchanged, each worker convolves its tile alone and the tiles stitch into the
full output, exactly. Only the halo crosses between workers: its size grows
with a tile's perimeter, the work with its area (surface against volume).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _bounds(size: int, parts: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) intervals of nearly equal length (may differ by one)."""
    cuts = torch.tensor_split(torch.arange(size), parts)
    return [(int(c[0]), int(c[-1]) + 1) for c in cuts]


def _check_conv(x: torch.Tensor, weight: torch.Tensor, grid: Sequence[int], padding: int) -> tuple[int, int]:
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W) and weight (C_out, C_in, kh, kw); got shapes "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels, weight expects {weight.shape[1]}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer ≥ 0, got {padding!r}")
    out_h = x.shape[2] + 2 * padding - weight.shape[2] + 1
    out_w = x.shape[3] + 2 * padding - weight.shape[3] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"the kernel {tuple(weight.shape[2:])} is larger than the padded input")
    rows, cols = grid
    for name, parts, size in (("rows", rows, out_h), ("cols", cols, out_w)):
        if isinstance(parts, bool) or not isinstance(parts, int) or not 1 <= parts <= size:
            raise ValueError(f"grid {name} must be between 1 and the output's {size}, got {parts!r}")
    return out_h, out_w


def tiles(x: torch.Tensor, weight: torch.Tensor, *, grid=(2, 2), padding: int = 0) -> list[dict]:
    """For each tile of the output grid: its output rows and columns, and the window of the
    zero-padded input it needs (its own part plus the halo)."""
    out_h, out_w = _check_conv(x, weight, grid, padding)
    kh, kw = weight.shape[2:]
    layout = []
    for r0, r1 in _bounds(out_h, grid[0]):
        for c0, c1 in _bounds(out_w, grid[1]):
            # Output pixel (i, j) reads padded-input rows i … i + kh − 1, columns j … j + kw − 1.
            layout.append({"out_rows": (r0, r1), "out_cols": (c0, c1),
                           "in_rows": (r0, r1 + kh - 1), "in_cols": (c0, c1 + kw - 1)})
    return layout


def spatial_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                   grid: Sequence[int] = (2, 2), padding: int = 0) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1) computed tile by tile.

    Each tile convolves its window of the padded input (own pixels plus halo)
    with no padding of its own; the tiles are stitched together. Autograd flows
    through the slicing, so the gradients of x, weight and bias are exact too.
    """
    layout = tiles(x, weight, grid=grid, padding=padding)
    padded = F.pad(x, (padding, padding, padding, padding))       # zeros beyond the image's edge
    outputs = []
    for t in layout:
        (a, b), (c, d) = t["in_rows"], t["in_cols"]
        outputs.append(F.conv2d(padded[:, :, a:b, c:d], weight, bias))
    rows = [torch.cat(outputs[i * grid[1]:(i + 1) * grid[1]], dim=3) for i in range(grid[0])]
    return torch.cat(rows, dim=2)


def halo_fraction(height: int, width: int, grid: Sequence[int], kernel: int, padding: int | None = None) -> dict:
    """Pixels each tile receives from its neighbours (halo) against the pixels it owns, for a
    k×k convolution (``padding`` defaults to k // 2, 'same' size), averaged over tiles."""
    padding = kernel // 2 if padding is None else padding
    x, w = torch.empty(1, 1, height, width, device="meta"), torch.empty(1, 1, kernel, kernel, device="meta")
    halo = own = 0
    for t in tiles(x, w, grid=grid, padding=padding):
        (a, b), (c, d) = t["in_rows"], t["in_cols"]
        # Rows/cols of the window inside the image (not zero padding), in image coordinates.
        rows = max(0, min(b - padding, height) - max(a - padding, 0))
        cols = max(0, min(d - padding, width) - max(c - padding, 0))
        owned_rows = t["out_rows"][1] - t["out_rows"][0]
        owned_cols = t["out_cols"][1] - t["out_cols"][0]
        own += owned_rows * owned_cols
        halo += max(rows * cols - owned_rows * owned_cols, 0)
    return {"halo pixels": halo, "own pixels": own, "halo / own": halo / own}


# ============================================================ real processes
class HaloExchange(torch.autograd.Function):
    """Forward: append ``halo`` rows from the neighbours above and below (zeros at the image's
    edge). Backward: send the gradient of those rows back to their owners and add what comes
    back for ours. Rows are split along H among the ranks in order."""

    @staticmethod
    def forward(ctx, own: torch.Tensor, halo: int):
        rank, world = dist.get_rank(), dist.get_world_size()
        ctx.halo, ctx.rank, ctx.world = halo, rank, world
        above = torch.zeros_like(own[:, :, :halo])
        below = torch.zeros_like(own[:, :, :halo])
        if halo:
            requests = []
            if rank > 0:
                requests += [dist.isend(own[:, :, :halo].contiguous(), rank - 1), dist.irecv(above, rank - 1)]
            if rank < world - 1:
                requests += [dist.isend(own[:, :, -halo:].contiguous(), rank + 1), dist.irecv(below, rank + 1)]
            for request in requests:
                request.wait()
        return torch.cat([above, own, below], dim=2)

    @staticmethod
    def backward(ctx, grad):
        halo, rank, world = ctx.halo, ctx.rank, ctx.world
        grad_own = grad[:, :, halo:grad.shape[2] - halo].clone()
        if halo:
            from_above = torch.zeros_like(grad_own[:, :, :halo])
            from_below = torch.zeros_like(grad_own[:, :, :halo])
            requests = []
            if rank > 0:   # our top rows were the halo "below" of rank − 1
                requests += [dist.isend(grad[:, :, :halo].contiguous(), rank - 1), dist.irecv(from_above, rank - 1)]
            if rank < world - 1:
                requests += [dist.isend(grad[:, :, -halo:].contiguous(), rank + 1), dist.irecv(from_below, rank + 1)]
            for request in requests:
                request.wait()
            grad_own[:, :, :halo] += from_above
            grad_own[:, :, -halo:] += from_below
        return grad_own, None


def halo_conv_worker(rank: int, world_size: int, config: dict) -> dict:
    """A 'same' k×k convolution with the image's rows split among the ranks: halo exchange by
    send/recv, local convolution, then the weight and bias gradients summed over ranks.
    Every rank compares its output rows and its input-row gradient with the unsplit
    ``F.conv2d``, and the summed weight/bias gradients with the unsplit ones."""
    n, c_in, c_out, height, width, k = config.get("shape", (2, 3, 4, 11, 9, 3))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c_in, height, width, generator=gen, dtype=torch.float64)
    weight = torch.randn(c_out, c_in, k, k, generator=gen, dtype=torch.float64)
    bias = torch.randn(c_out, generator=gen, dtype=torch.float64)
    refs = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
    expected = F.conv2d(*refs, padding=k // 2)
    expected.square().sum().backward()

    r0, r1 = _bounds(height, world_size)[rank]
    if r1 - r0 < k // 2:
        raise ValueError(f"rank {rank} owns {r1 - r0} rows, fewer than the halo of {k // 2}")
    own = x[:, :, r0:r1].clone().requires_grad_(True)
    w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    with_halo = HaloExchange.apply(own, k // 2)
    out = F.conv2d(with_halo, w, b, padding=(0, k // 2))     # rows come from the halo, columns padded
    out.square().sum().backward()
    for grad in (w.grad, b.grad):                             # parameters are shared: sum their gradients
        dist.all_reduce(grad)
    with torch.no_grad():
        return {"rows": (r0, r1),
                "output": float((out - expected[:, :, r0:r1]).abs().max()),
                "input gradient": float((own.grad - refs[0].grad[:, :, r0:r1]).abs().max()),
                "weight gradient": float((w.grad - refs[1].grad).abs().max()),
                "bias gradient": float((b.grad - refs[2].grad).abs().max()),
                "halo bytes sent (forward + backward)": 2 * (int(rank > 0) + int(rank < world_size - 1)) * n * c_in * (k // 2) * width * 8}
