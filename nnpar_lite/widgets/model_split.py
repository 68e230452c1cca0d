"""Chapter 05: the pipeline's timeline and the tensor split's blocks."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.patches import Rectangle

from ..costmodel import bubble_fraction
from ..pipeline import SCHEDULES, activations_held, idle_fraction, simulate_timeline
from ..tensor_parallel import blocks_held
from . import interactive_figure

NAMES = {"gpipe": "GPipe", "1f1b": "1F1B with a flush"}


def pipeline_figure(num_stages: int = 4, num_microbatches: int = 8, schedule: str = "gpipe",
                    forward_time: float = 1.0, backward_time: float = 2.0):
    """A Gantt chart: one row per stage, forward (blue) and backward (orange) of each
    micro-batch, darker for later micro-batches, labelled F i / B i while they fit; the white
    gaps are the bubble."""
    ops = SCHEDULES[schedule](num_stages, num_microbatches)
    slots = simulate_timeline(ops, forward_time, backward_time)
    makespan = max(s.end for s in slots)
    fig, ax = plt.subplots(figsize=(9, 0.45 * num_stages + 1.4))
    shade = [0.35 + 0.5 * s.microbatch / max(num_microbatches - 1, 1) for s in slots]
    colours = [plt.cm.Blues(c) if s.op == "F" else plt.cm.Oranges(c) for s, c in zip(slots, shade)]
    ax.add_collection(PatchCollection([Rectangle((s.start, s.stage - 0.4), s.end - s.start, 0.8) for s in slots],
                                      facecolors=colours, edgecolors="k", linewidths=0.5))
    if len(slots) <= 96:                         # labels while they fit (and while drawing them stays quick)
        for s in slots:
            ax.text((s.start + s.end) / 2, s.stage, f"{s.op}{s.microbatch}", ha="center", va="center", fontsize=6)
    ax.set_xlim(0, makespan)
    ax.set_ylim(num_stages - 0.5, -0.5)
    ax.set_yticks(range(num_stages), [f"stage {s}" for s in range(num_stages)])
    ax.set_xlabel(f"time (a forward takes {forward_time:g} unit{'s' if forward_time != 1 else ''}, "
                  f"a backward {backward_time:g})")
    measured, formula = idle_fraction(slots), bubble_fraction(num_stages, num_microbatches)
    peaks = activations_held(ops)
    ax.set_title(f"{NAMES[schedule]}: p = {num_stages}, m = {num_microbatches}; idle {measured:.3f} of the timeline, "
                 f"(p−1)/(m+p−1) = {formula:.3f}; activations held per stage {peaks}", fontsize=8)
    fig.tight_layout()
    return fig, {"idle fraction": measured, "bubble fraction": formula, "activations held": peaks}


def pipeline_widget():
    import ipywidgets as widgets

    controls = {"num_stages": widgets.IntSlider(value=4, min=1, max=8, description="p stages"),
                "num_microbatches": widgets.IntSlider(value=8, min=1, max=24, description="m micro-b."),
                "schedule": widgets.ToggleButtons(options=["gpipe", "1f1b"], description="schedule"),
                "backward_time": widgets.FloatSlider(value=2.0, min=0.5, max=4.0, step=0.5,
                                                     description="backward", readout_format=".1f")}
    return interactive_figure(controls, [["num_stages", "num_microbatches"], ["schedule", "backward_time"]],
                              lambda **v: pipeline_figure(**v)[0], slow=True)


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
