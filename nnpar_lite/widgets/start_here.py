"""Chapter 00: how the workers' losses combine into the loss of the whole batch (seed 3.1)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..experiments.scaling import per_sample_losses
from ..experiments.start_here import loss_averages
from . import interactive_figure


def loss_average_figure(num_workers: int = 3, skew: float = 0.6, num_samples: int = 60):
    """Bars: each worker's mean loss, as wide as its shard. Lines: the three averages."""
    result = loss_averages(num_workers, skew, num_samples)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    left = 0
    for i, (size, mean) in enumerate(zip(result["sizes"], result["shard means"])):
        ax.bar(left, mean, width=size, align="edge", color=f"C{i}", alpha=0.55, edgecolor="k")
        ax.text(left + size / 2, mean + 0.03, f"w{i}: n={size}", ha="center", fontsize=8)
        left += size
    ax.plot(np.arange(num_samples) + 0.5, per_sample_losses(num_samples), "k.", ms=3, label="per-sample loss")
    styles = {"true mean": ("k", "-"), "plain mean (article)": ("C3", "--"), "weighted by size": ("C2", ":")}
    for name, (color, style) in styles.items():
        ax.axhline(result[name], color=color, ls=style, lw=2, label=f"{name} = {result[name]:.4f}")
    ax.set_xlabel("sample index (shards in order)")
    ax.set_ylabel("loss")
    ax.set_xlim(0, num_samples)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"K = {num_workers}, shard sizes {result['sizes']}")
    fig.tight_layout()
    return fig, result


def loss_average_widget():
    """Sliders for K and the skew of the shard sizes, redrawing the figure live."""
    import ipywidgets as widgets

    def draw(workers, skew):
        fig, result = loss_average_figure(workers, skew)
        print(f"plain mean of shard means is off by {result['plain mean (article)'] - result['true mean']:+.4f}; "
              f"weighted mean is off by {result['weighted by size'] - result['true mean']:+.1e}")
        return fig

    controls = {"workers": widgets.IntSlider(value=3, min=1, max=6, description="K workers"),
                "skew": widgets.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="skew")}
    return interactive_figure(controls, [["workers", "skew"]], draw)
