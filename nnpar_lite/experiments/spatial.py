"""Chapter 06's runs: a convolution computed tile by tile against the unsplit ``F.conv2d``, in one
process and with the image's rows split among real processes (halos exchanged), and the
photograph the chapter's figures show."""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data import edge_kernel, sample_image
from ..spatial import HaloExchange, halo_fraction, halo_width, spatial_conv2d, tiles
from ..util import even_bounds, max_abs_difference

CASES = [(11, 9, 3, 1, (2, 2)), (10, 7, 5, 0, (3, 2)), (13, 6, 4, 1, (3, 1)), (8, 8, 3, 2, (4, 3))]


def verify_tiles_against_conv2d(cases=CASES, tolerance: float = 1e-10) -> list[tuple[str, bool]]:
    """Chapter 06's verification in one call (the unit tests run more cases): for each (height,
    width, kernel, padding, grid), :func:`~nnpar_lite.spatial.spatial_conv2d` against one
    ``F.conv2d`` in float64, the output and the gradients of the input, weight and bias.
    Returns (what was compared, whether it agrees within ``tolerance``)."""
    rows, gen = [], torch.Generator().manual_seed(0)
    for height, width, kernel, padding, grid in cases:
        x = torch.randn(2, 3, height, width, dtype=torch.float64, generator=gen, requires_grad=True)
        w = torch.randn(4, 3, kernel, kernel, dtype=torch.float64, generator=gen, requires_grad=True)
        b = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
        tiled, full = spatial_conv2d(x, w, b, grid=grid, padding=padding), F.conv2d(x, w, b, padding=padding)
        gap = max(max_abs_difference(tiled, full),
                  max_abs_difference(torch.autograd.grad(tiled.square().sum(), (x, w, b)),
                                     torch.autograd.grad(full.square().sum(), (x, w, b))))
        rows.append((f"{height}×{width} image, {kernel}×{kernel} kernel, padding {padding}, "
                     f"{grid[0]}×{grid[1]} tiles", gap < tolerance))
    return rows


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
    expected = F.conv2d(*refs, padding=(k - 1) // 2)
    expected.square().sum().backward()

    r0, r1 = even_bounds(height, world_size)[rank]
    halo = halo_width(k)                                      # (k − 1)/2 rows from each neighbour
    if r1 - r0 < halo:
        raise ValueError(f"rank {rank} owns {r1 - r0} rows, fewer than the halo of {halo}")
    own = x[:, :, r0:r1].clone().requires_grad_(True)
    w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    with_halo = HaloExchange.apply(own, halo)
    out = F.conv2d(with_halo, w, b, padding=(0, halo))        # rows come from the halo, columns padded
    out.square().sum().backward()
    for grad in (w.grad, b.grad):                             # the weights are replicated: sum their gradients
        dist.all_reduce(grad)
    neighbours = int(rank > 0) + int(rank < world_size - 1)
    with torch.no_grad():
        return {"rows": (r0, r1),
                "output": max_abs_difference(out, expected[:, :, r0:r1]),
                "input gradient": max_abs_difference(own.grad, refs[0].grad[:, :, r0:r1]),
                "weight gradient": max_abs_difference(w.grad, refs[1].grad),
                "bias gradient": max_abs_difference(b.grad, refs[2].grad),
                "halo bytes sent (forward + backward)": 2 * neighbours * n * c_in * halo * width * x.element_size()}


@functools.lru_cache(maxsize=64)
def halo_demo(grid=(2, 3), kernel: int = 5) -> dict:
    """A photograph convolved with a k×k edge kernel tile by tile and in one piece: the image,
    the tiles' layout, the tiled result, their largest difference and the halo's share."""
    image, weight, padding = sample_image(), edge_kernel(kernel), kernel // 2
    tiled = spatial_conv2d(image, weight, grid=grid, padding=padding)
    full = F.conv2d(image, weight, padding=padding)
    return {"image": image, "layout": tiles(image, weight, grid=grid, padding=padding), "tiled": tiled,
            "padding": padding, "difference": max_abs_difference(tiled, full),
            "share": halo_fraction(image.shape[2], image.shape[3], grid, kernel)}
