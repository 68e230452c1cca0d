"""Chapter 05: the pipeline's timeline, the tensor split's blocks, the halo on a real image."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from ..costmodel import bubble_fraction
from ..experiments.spatial import halo_demo
from ..pipeline import SCHEDULES, activations_held, idle_fraction, simulate_timeline
from ..spatial import halo_fraction
from ..tensor_parallel import blocks_held
from . import interactive_figure


def pipeline_figure(num_stages: int = 4, num_microbatches: int = 8, schedule: str = "gpipe",
                    forward_time: float = 1.0, backward_time: float = 2.0):
    """A Gantt chart: one row per stage, forward (blue) and backward (orange) of each
    micro-batch; the white gaps are the bubble."""
    ops = SCHEDULES[schedule](num_stages, num_microbatches)
    slots = simulate_timeline(ops, forward_time, backward_time)
    makespan = max(s.end for s in slots)
    fig, ax = plt.subplots(figsize=(9, 0.45 * num_stages + 1.4))
    for s in slots:
        color = plt.cm.Blues(0.35 + 0.5 * s.microbatch / max(num_microbatches - 1, 1)) if s.op == "F" \
            else plt.cm.Oranges(0.35 + 0.5 * s.microbatch / max(num_microbatches - 1, 1))
        ax.add_patch(Rectangle((s.start, s.stage - 0.4), s.end - s.start, 0.8, fc=color, ec="k", lw=0.5))
        if num_microbatches <= 16:
            ax.text((s.start + s.end) / 2, s.stage, f"{s.op}{s.microbatch}", ha="center", va="center", fontsize=6)
    ax.set_xlim(0, makespan)
    ax.set_ylim(num_stages - 0.5, -0.5)
    ax.set_yticks(range(num_stages), [f"stage {s}" for s in range(num_stages)])
    ax.set_xlabel(f"time (a forward takes {forward_time:g} unit{'s' if forward_time != 1 else ''}, "
                  f"a backward {backward_time:g})")
    measured, formula = idle_fraction(slots), bubble_fraction(num_stages, num_microbatches)
    peaks = activations_held(ops)
    ax.set_title(f"{schedule}: p = {num_stages}, m = {num_microbatches}; idle {measured:.3f} of the timeline, "
                 f"(p−1)/(m+p−1) = {formula:.3f}; activations held per stage {peaks}", fontsize=8)
    fig.tight_layout()
    return fig, {"idle fraction": measured, "bubble fraction": formula, "activations held": peaks}


def pipeline_widget():
    import ipywidgets as widgets

    controls = {"num_stages": widgets.IntSlider(value=4, min=1, max=8, description="p stages"),
                "num_microbatches": widgets.IntSlider(value=8, min=1, max=24, description="m micro-b."),
                "schedule": widgets.ToggleButtons(options=["gpipe", "1f1b"], description="schedule")}
    return interactive_figure(controls, [["num_stages", "num_microbatches"], ["schedule"]],
                              lambda **v: pipeline_figure(**v)[0])


def tensor_split_figure(out_features: int = 8, in_features: int = 6, num_workers: int = 3):
    """Which blocks of W (out × in) each worker holds, split by columns and by rows."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.3))
    for ax, kind, title in zip(axes, ("column", "row"), ("column parallel: split the outputs, gather",
                                                         "row parallel: split the inputs, sum")):
        grid = np.zeros((out_features, in_features))
        for k, (rows, cols) in enumerate(blocks_held(out_features, in_features, num_workers, kind)):
            grid[rows, cols] = k
        ax.imshow(grid, cmap="tab10", vmin=0, vmax=9)
        for k, (rows, cols) in enumerate(blocks_held(out_features, in_features, num_workers, kind)):
            ax.text((cols.start + cols.stop - 1) / 2, (rows.start + rows.stop - 1) / 2, f"worker {k}",
                    ha="center", va="center", fontsize=8, color="w")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("input feature (column of W)")
        ax.set_ylabel("output feature (row of W)")
    fig.tight_layout()
    return fig


def halo_figure(grid=(2, 3), kernel: int = 5, highlight: int | None = None):
    """The image cut into tiles; one tile's halo shaded; the tile-by-tile convolution beside
    the unsplit one."""
    demo = halo_demo(grid, kernel)
    image, layout, tiled, difference, padding = (demo[k] for k in ("image", "layout", "tiled", "difference", "padding"))
    highlight = len(layout) // 2 if highlight is None else highlight
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].imshow(image[0, 0].numpy(), cmap="gray")
    for i, t in enumerate(layout):
        (r0, r1), (c0, c1) = t["out_rows"], t["out_cols"]
        axes[0].add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ec="yellow", lw=1))
        if i == highlight:
            (a, b), (c, d) = t["in_rows"], t["in_cols"]   # in padded coordinates
            axes[0].add_patch(Rectangle((c - padding - 0.5, a - padding - 0.5), d - c, b - a, fc="red", alpha=0.25,
                                        ec="red", lw=1.5))
    share = demo["share"]
    axes[0].set_title(f"{grid[0]}×{grid[1]} tiles, {kernel}×{kernel} kernel: tile {highlight} + its halo (red); "
                      f"halo = {share['halo / own']:.1%} of the pixels", fontsize=8)
    axes[1].imshow(tiled[0, 0].detach().numpy(), cmap="gray", vmin=-0.1, vmax=0.1)
    axes[1].set_title(f"edges, convolved tile by tile: largest difference from one conv2d {difference:.1e}",
                      fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig, {"difference": difference, **share}


def halo_widget():
    import ipywidgets as widgets

    controls = {"rows": widgets.IntSlider(value=2, min=1, max=6, description="grid rows"),
                "cols": widgets.IntSlider(value=3, min=1, max=6, description="grid cols"),
                "kernel": widgets.IntSlider(value=5, min=1, max=15, step=2, description="kernel")}
    return interactive_figure(controls, [["rows", "cols", "kernel"]],
                              lambda rows, cols, kernel: halo_figure((rows, cols), kernel)[0])


def halo_growth_figure(size: int = 96, kernel: int = 3, grids=(1, 2, 3, 4, 6, 8, 12, 16)):
    """Halo pixels against owned pixels as the grid grows: the surface-to-volume ratio."""
    shares = [halo_fraction(size, size, (g, g), kernel)["halo / own"] for g in grids]
    fig, ax = plt.subplots(figsize=(5.5, 3))
    ax.plot([g * g for g in grids], shares, "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"tiles (a g×g grid on a {size}×{size} image)")
    ax.set_ylabel("halo / owned pixels")
    ax.set_title(f"{kernel}×{kernel} kernel: more workers, more communication per pixel", fontsize=9)
    fig.tight_layout()
    return fig, dict(zip(grids, shares))
