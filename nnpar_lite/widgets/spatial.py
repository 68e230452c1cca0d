"""Chapter 06: tiles and their halos on a real photograph, and how the halo's share grows."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch, Rectangle

from ..experiments.spatial import halo_demo
from ..spatial import halo_fraction
from ..language import say
from . import caption, interactive_figure

TILE_COLOUR, HALO_COLOUR = (0.12, 0.47, 0.71), (1.0, 0.55, 0.0)     # blue: owned pixels; orange: the halo


def _overlay(shape, tile: dict, padding: int) -> np.ndarray:
    """An RGBA layer over the image: the tile's own pixels in blue, its halo (the rest of the
    window it reads, clipped to the image) in orange, everything else transparent."""
    height, width = shape
    layer = np.zeros((height, width, 4))
    (a, b), (c, d) = tile["in_rows"], tile["in_cols"]                 # window, in padded coordinates
    rows = slice(max(a - padding, 0), min(b - padding, height))
    cols = slice(max(c - padding, 0), min(d - padding, width))
    layer[rows, cols] = (*HALO_COLOUR, 0.75)
    (r0, r1), (c0, c1) = tile["out_rows"], tile["out_cols"]
    layer[r0:r1, c0:c1] = (*TILE_COLOUR, 0.45)
    return layer


def halo_figure(grid=(3, 3), kernel: int = 9, highlight: int | None = None):
    """Left: the photograph cut into a grid of tiles, numbered row by row from the top left
    (0, 1, …); the tile ``highlight`` (the middle one by default) in blue and its halo, the
    (k − 1)/2 rows and columns of each neighbour it must receive, in orange. Right: the
    convolution computed tile by tile, which equals one ``conv2d`` of the whole image."""
    demo = halo_demo(tuple(grid), kernel)
    image, layout, padding = demo["image"][0, 0].numpy(), demo["layout"], demo["padding"]
    highlight = len(layout) // 2 if highlight is None else min(highlight, len(layout) - 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    axes[0].imshow(image, cmap="gray", interpolation="nearest")   # nearest: pixels as they are, and fast
    axes[0].imshow(_overlay(image.shape, layout[highlight], padding), interpolation="nearest")
    for i, t in enumerate(layout):
        (r0, r1), (c0, c1) = t["out_rows"], t["out_cols"]
        axes[0].add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ec="yellow", lw=0.6))
        axes[0].text((c0 + c1) / 2, (r0 + r1) / 2, caption(f"tile {i}", f"图块 {i}"), color="w", fontsize=7,
                     ha="center", va="center",
                     bbox=dict(fc="k", alpha=0.5, lw=0, pad=1.5))
    h = (kernel - 1) // 2
    owned = caption(f"tile {highlight}: the pixels it owns", f"图块 {highlight}：它拥有的像素")
    halo = caption(f"its halo: {h} row{'s' * (h != 1)} / column{'s' * (h != 1)} per side, from its neighbours",
                   f"它的光晕：每侧 {h} 行 / 列，来自邻居")
    fig.legend(handles=[Patch(fc=TILE_COLOUR, alpha=0.6, label=owned), Patch(fc=HALO_COLOUR, alpha=0.8, label=halo)],
               loc="lower center", bbox_to_anchor=(0.26, 0.0), fontsize=7, ncol=2, frameon=False)
    share = demo["share"]
    axes[0].set_title(caption(f"{grid[0]}×{grid[1]} tiles, {kernel}×{kernel} kernel: halos are "
                              f"{share['halo / own']:.1%} of the owned pixels",
                              f"{grid[0]}×{grid[1]} 个图块，{kernel}×{kernel} 卷积核：光晕是自有像素的 "
                              f"{share['halo / own']:.1%}"), fontsize=8)
    axes[1].imshow(demo["tiled"][0, 0].detach().numpy(), cmap="gray", vmin=-0.1, vmax=0.1, interpolation="nearest")
    verdict = caption("equal to one conv2d ✔", "等于一次 conv2d ✓") if demo["difference"] < 1e-12 else \
        caption("NOT equal to one conv2d", "不等于一次 conv2d")
    axes[1].set_title(caption(f"edges, convolved tile by tile: {verdict}", f"边缘，逐图块卷积：{verdict}"), fontsize=8)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])        # no ticks to lay out: a quicker redraw
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.09, wspace=0.05)
    return fig, {"difference": demo["difference"], "highlight": highlight, **share}


def halo_widget():
    import ipywidgets as widgets

    controls = {"rows": widgets.IntSlider(value=3, min=1, max=6, description=say("grid rows", "网格行数")),
                "cols": widgets.IntSlider(value=3, min=1, max=6, description=say("grid cols", "网格列数")),
                "kernel": widgets.IntSlider(value=9, min=1, max=15, step=2, description=say("kernel k", "卷积核 k")),
                "tile": widgets.IntSlider(value=4, min=0, max=8, description=say("tile", "图块"))}

    def fit_tile_slider(*_):          # tiles are numbered 0 … rows × cols − 1
        controls["tile"].max = controls["rows"].value * controls["cols"].value - 1

    for name in ("rows", "cols"):
        controls[name].observe(fit_tile_slider, "value")
    return interactive_figure(controls, [["rows", "cols"], ["kernel", "tile"]],
                              lambda rows, cols, kernel, tile: halo_figure((rows, cols), kernel, tile)[0], slow=True)


def halo_growth_figure(size: int = 96, kernel: int = 3, grids=(1, 2, 3, 4, 6, 8, 12, 16)):
    """Halo pixels against owned pixels as the grid grows: the surface-to-volume ratio."""
    shares = [halo_fraction(size, size, (g, g), kernel)["halo / own"] for g in grids]
    fig, ax = plt.subplots(figsize=(5.5, 3))
    ax.plot([g * g for g in grids], shares, "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(caption(f"tiles (a g×g grid on a {size}×{size} image)", f"图块数（{size}×{size} 图像上的 g×g 网格）"))
    ax.set_ylabel(caption("halo / owned pixels", "光晕像素 / 自有像素"))
    ax.set_title(caption(f"{kernel}×{kernel} kernel: more workers, more communication per pixel",
                         f"{kernel}×{kernel} 卷积核：计算单元越多，每个像素的通信越多"), fontsize=9)
    fig.tight_layout()
    return fig, dict(zip(grids, shares))
