"""Spatial parallelism (Dryden et al., IPDPS 2019): each sample's image split into tiles.

This splits the *data* inside each sample, not the model: every worker holds all the
weights (their gradients are summed across workers, as in data parallelism). A
convolution's output pixel depends on a k×k window of input pixels. Split the output
into a grid of tiles, one per worker: for an odd k and 'same' padding each worker needs
its own part of the input plus (k − 1)/2 rows and columns on each side (the *halo*,
k − 1 per dimension in all) that belong to its neighbours, or are zero padding at the
image's edge. With the halos
exchanged, each worker convolves its tile alone and the tiles stitch into the
full output, exactly. Only the halo crosses between workers: its size grows
with a tile's perimeter, the work with its area (surface against volume).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .collectives import global_rank
from .util import even_bounds, whole_number


def _check_conv(x: torch.Tensor, weight: torch.Tensor, grid: Sequence[int], padding: int) -> tuple[int, int]:
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W) and weight (C_out, C_in, kh, kw); got shapes "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels, weight expects {weight.shape[1]}")
    whole_number("padding", padding, minimum=0)
    out_h = x.shape[2] + 2 * padding - weight.shape[2] + 1
    out_w = x.shape[3] + 2 * padding - weight.shape[3] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"the kernel {tuple(weight.shape[2:])} is larger than the padded input")
    rows, cols = grid
    whole_number("grid rows (at most the output's height)", rows, maximum=out_h)
    whole_number("grid cols (at most the output's width)", cols, maximum=out_w)
    return out_h, out_w


def halo_width(kernel: int) -> int:
    """The halo on each side of a tile for an odd k×k 'same' convolution: (k − 1)/2 rows above
    and below, (k − 1)/2 columns left and right; k − 1 per dimension in all."""
    k = whole_number("kernel", kernel)
    if k % 2 == 0:
        raise ValueError(f"kernel must be odd for a 'same' convolution (equal halos on both sides), got {k}")
    return (k - 1) // 2


def halo_rows(height: int, num_tiles: int, tile: int, kernel: int) -> range:
    """The input rows that row tile ``tile`` (0 at the top) of ``num_tiles`` needs for an odd k×k
    'same' convolution of an image ``height`` rows tall: its own rows [r0, r1), cut as
    :func:`~nnpar_lite.util.even_bounds` cuts them, widened by h = (k − 1)/2 on each side and
    clipped to the image, range(max(r0 − h, 0), min(r1 + h, height)). Beyond the image's edge
    lies zero padding, which nobody sends."""
    height = whole_number("height", height)
    whole_number(f"num_tiles (cannot cut {height} rows into more tiles)", num_tiles, maximum=height)
    whole_number("tile", tile, minimum=0, maximum=num_tiles - 1)
    h = halo_width(kernel)
    r0, r1 = even_bounds(height, num_tiles)[tile]
    return range(max(r0 - h, 0), min(r1 + h, height))


def tiles(x: torch.Tensor, weight: torch.Tensor, *, grid=(2, 2), padding: int = 0) -> list[dict]:
    """For each tile of the output grid: its output rows and columns, and the window of the
    zero-padded input it needs (its own part plus the halo)."""
    out_h, out_w = _check_conv(x, weight, grid, padding)
    kh, kw = weight.shape[2:]
    layout = []
    for r0, r1 in even_bounds(out_h, grid[0]):
        for c0, c1 in even_bounds(out_w, grid[1]):
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
    """Forward: add ``halo`` rows from the neighbours above and below (zeros at the image's
    edge). Backward: send the gradient of those rows back to their owners and add what comes
    back for ours. The image's rows are split along H among the group's ranks, in order."""

    @staticmethod
    def forward(ctx, own: torch.Tensor, halo: int, group=None):
        ctx.halo, ctx.group = halo, group
        above, below = _exchange_edges(own[:, :, :halo], own[:, :, own.shape[2] - halo:], group)
        return torch.cat([above, own, below], dim=2)

    @staticmethod
    def backward(ctx, grad):
        halo = ctx.halo
        grad_own = grad[:, :, halo:grad.shape[2] - halo].clone()
        # Our top halo rows were rank − 1's bottom rows: their gradient goes back up, and so on.
        from_above, from_below = _exchange_edges(grad[:, :, :halo], grad[:, :, grad.shape[2] - halo:], ctx.group)
        grad_own[:, :, :halo] += from_above
        grad_own[:, :, grad_own.shape[2] - halo:] += from_below
        return grad_own, None, None


def _exchange_edges(top: torch.Tensor, bottom: torch.Tensor, group) -> tuple[torch.Tensor, torch.Tensor]:
    """Send ``top`` to the rank above and ``bottom`` to the rank below; receive theirs (zeros
    where there is no neighbour). Non-blocking sends, so that no pair waits on the other."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    from_above, from_below = torch.zeros_like(top), torch.zeros_like(bottom)
    requests = []
    for neighbour, send, receive in ((rank - 1, top, from_above), (rank + 1, bottom, from_below)):
        if send.shape[2] and 0 <= neighbour < world:
            requests += [dist.isend(send.contiguous(), global_rank(neighbour, group), group=group),
                         dist.irecv(receive, global_rank(neighbour, group), group=group)]
    for request in requests:
        request.wait()
    return from_above, from_below
