"""Chapter 05: the pipeline's timeline and the tensor split's blocks."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.patches import Rectangle

from ..costmodel import bubble_fraction
from ..pipeline import SCHEDULES, activations_held, idle_fraction, simulate_timeline
from ..tensor_parallel import blocks_held
from ..language import say
from . import caption, interactive_figure

NAMES = {"gpipe": "GPipe", "1f1b": "1F1B with a flush"}
NAMES_ZH = {"gpipe": "GPipe", "1f1b": "带刷新的 1F1B"}


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
    ax.set_yticks(range(num_stages), [caption(f"stage {s}", f"阶段 {s}") for s in range(num_stages)])
    ax.set_xlabel(caption(f"time (a forward takes {forward_time:g} unit{'s' if forward_time != 1 else ''}, "
                          f"a backward {backward_time:g})",
                          f"时间（一次前向耗时 {forward_time:g} 个单位，一次反向 {backward_time:g} 个）"))
    measured, formula = idle_fraction(slots), bubble_fraction(num_stages, num_microbatches)
    peaks = activations_held(ops)
    ax.set_title(caption(f"{NAMES[schedule]}: p = {num_stages}, m = {num_microbatches}; idle {measured:.3f} of the "
                         f"timeline, (p−1)/(m+p−1) = {formula:.3f}; activations held per stage {peaks}",
                         f"{NAMES_ZH[schedule]}：p = {num_stages}，m = {num_microbatches}；空闲占时间线的 {measured:.3f}，"
                         f"(p−1)/(m+p−1) = {formula:.3f}；每个阶段持有的激活值 {peaks}"), fontsize=8)
    fig.tight_layout()
    return fig, {"idle fraction": measured, "bubble fraction": formula, "activations held": peaks}


def pipeline_widget():
    import ipywidgets as widgets

    controls = {"num_stages": widgets.IntSlider(value=4, min=1, max=8, description=say("p stages", "p 阶段数")),
                "num_microbatches": widgets.IntSlider(value=8, min=1, max=24, description=say("m micro-b.", "m 微批次")),
                "schedule": widgets.ToggleButtons(options=["gpipe", "1f1b"], description=say("schedule", "调度")),
                "backward_time": widgets.FloatSlider(value=2.0, min=0.5, max=4.0, step=0.5,
                                                     description=say("backward", "反向耗时"), readout_format=".1f")}
    return interactive_figure(controls, [["num_stages", "num_microbatches"], ["schedule", "backward_time"]],
                              lambda **v: pipeline_figure(**v)[0], slow=True)


def tensor_split_figure(out_features: int = 8, in_features: int = 6, num_workers: int = 3):
    """Which blocks of W (out × in) each worker holds, split by columns and by rows."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.3))
    titles = (caption("column parallel: split the outputs, gather", "列并行：切分输出，再收集"),
              caption("row parallel: split the inputs, sum", "行并行：切分输入，再求和"))
    for ax, kind, title in zip(axes, ("column", "row"), titles):
        grid = np.zeros((out_features, in_features))
        for k, (rows, cols) in enumerate(blocks_held(out_features, in_features, num_workers, kind)):
            grid[rows, cols] = k
        ax.imshow(grid, cmap="tab10", vmin=0, vmax=9)
        for k, (rows, cols) in enumerate(blocks_held(out_features, in_features, num_workers, kind)):
            ax.text((cols.start + cols.stop - 1) / 2, (rows.start + rows.stop - 1) / 2,
                    caption(f"worker {k}", f"计算单元 {k}"),
                    ha="center", va="center", fontsize=8, color="w")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(caption("input feature (column of W)", "输入特征（W 的列）"))
        ax.set_ylabel(caption("output feature (row of W)", "输出特征（W 的行）"))
    fig.tight_layout()
    return fig
