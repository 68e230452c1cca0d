"""Chapter 06's run: a convolution with the image's rows split among real processes, halos
exchanged, compared with the unsplit ``F.conv2d`` on every rank."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data import edge_kernel, sample_image
from ..spatial import HaloExchange, halo_fraction, spatial_conv2d, tiles
from ..util import even_bounds


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

    r0, r1 = even_bounds(height, world_size)[rank]
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


def halo_demo(grid=(2, 3), kernel: int = 5) -> dict:
    """A photograph convolved with a k×k edge kernel tile by tile and in one piece: the image,
    the tiles' layout, the tiled result, their largest difference and the halo's share."""
    image, weight, padding = sample_image(), edge_kernel(kernel), kernel // 2
    tiled = spatial_conv2d(image, weight, grid=grid, padding=padding)
    full = F.conv2d(image, weight, padding=padding)
    return {"image": image, "layout": tiles(image, weight, grid=grid, padding=padding), "tiled": tiled,
            "padding": padding, "difference": float((tiled - full).abs().max()),
            "share": halo_fraction(image.shape[2], image.shape[3], grid, kernel)}
