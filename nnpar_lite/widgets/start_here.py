"""Chapter 00: how the workers' losses combine into the loss of the whole batch (seed 3.1)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.transforms import blended_transform_factory

from ..data import per_sample_losses
from ..experiments.start_here import loss_averages
from ..language import say
from . import caption, interactive_figure


def loss_average_figure(num_workers: int = 3, skew: float = 0.6, num_samples: int = 60):
    """Bars: each worker's mean loss, as wide as its shard, labelled above the plot. Lines:
    the true mean (a wide grey band), the article's plain mean (red dashes) and the mean
    weighted by shard size (green, with diamonds), which lies on the true mean."""
    result = loss_averages(num_workers, skew, num_samples)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    above = blended_transform_factory(ax.transData, ax.transAxes)   # x in samples, y above the axes
    left = 0
    for i, (size, mean) in enumerate(zip(result["sizes"], result["shard means"])):
        ax.bar(left, mean, width=size, align="edge", color=f"C{i}", alpha=0.45, edgecolor="k")
        ax.text(left + size / 2, 1.02, f"w{i}\nn={size}", transform=above, ha="center", va="bottom", fontsize=7)
        left += size
    ax.plot(np.arange(num_samples) + 0.5, per_sample_losses(num_samples), "k.", ms=3,
            label=caption("per-sample loss", "每个样本的损失"))
    x = np.linspace(0, num_samples, 200)
    ax.plot(x, np.full_like(x, result["true mean"]), color="0.3", lw=7, alpha=0.35, solid_capstyle="butt",
            label=caption("true mean", "真实平均") + f" = {result['true mean']:.4f}")
    ax.plot(x, np.full_like(x, result["plain mean (article)"]), color="C3", ls="--", lw=2,
            label=caption("plain mean (article)", "简单平均（文章）") + f" = {result['plain mean (article)']:.4f}")
    ax.plot(x, np.full_like(x, result["weighted by size"]), color="C2", ls=":", lw=2,
            marker="D", ms=4, mec="k", mew=0.5, markevery=20,
            label=caption("weighted by size", "按分片大小加权") + f" = {result['weighted by size']:.4f}")
    ax.set_xlabel(caption("sample index (shards in order)", "样本序号（各分片依次排列）"))
    ax.set_ylabel(caption("loss", "损失"))
    ax.set_xlim(0, num_samples)
    ax.set_ylim(0, 2.1)
    ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
    fig.suptitle(caption(f"K = {num_workers} worker{'s' * (num_workers > 1)}, shard sizes {result['sizes']}",
                         f"K = {num_workers} 个计算单元，分片大小 {result['sizes']}"), fontsize=9)
    fig.tight_layout()
    return fig, result


def loss_average_widget():
    """Sliders for K and the skew of the shard sizes, redrawing the figure live."""
    import ipywidgets as widgets

    def draw(workers, skew):
        fig, result = loss_average_figure(workers, skew)
        plain = result["plain mean (article)"] - result["true mean"]
        weighted = abs(result["weighted by size"] - result["true mean"])
        print(say(f"plain mean of shard means is off by {plain:+.4f}; weighted mean is off by {weighted:.0e}",
                  f"各分片平均值的简单平均偏差 {plain:+.4f}；加权平均偏差 {weighted:.0e}"))
        return fig

    controls = {"workers": widgets.IntSlider(value=3, min=1, max=6, description=say("K workers", "K 计算单元")),
                "skew": widgets.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="skew")}
    return interactive_figure(controls, [["workers", "skew"]], draw)
