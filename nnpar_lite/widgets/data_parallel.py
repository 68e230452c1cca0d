"""Chapter 03: the six steps of data parallelism, pictured, and the K-worker gradient
compared with the big-batch gradient live."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..experiments.data_parallel import gradient_comparison
from . import interactive_figure


def six_steps_diagram(num_workers: int = 3):
    """Seed 3.1's six steps as a picture: one batch, K workers, one aggregate, one update."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.set_xlim(-0.1, 10.2)
    ax.set_ylim(-0.3, num_workers + 0.5)
    ax.axis("off")

    def box(x, y, w, h, text, color):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc=color, ec="k", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8)

    def arrow(x0, y0, x1, y1):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10, lw=1))

    mid = (num_workers - 1) / 2 + 0.3
    box(0.0, mid - 0.3, 1.3, 0.6, "global batch\n(N samples)", "#dddddd")
    for k in range(num_workers):
        y = num_workers - 1 - k
        box(1.8, y + 0.05, 1.2, 0.5, f"① shard {k}\n$n_{k}$ samples", "#cfe2f3")
        box(3.4, y + 0.05, 1.6, 0.5, f"② forward, θ\n③ loss $L_{k}$", "#d9ead3")
        box(5.3, y + 0.05, 1.3, 0.5, f"④ backward\n$g_{k} = ∇L_{k}$", "#fff2cc")
        arrow(1.3, mid, 1.8, y + 0.3)
        arrow(3.0, y + 0.3, 3.4, y + 0.3)
        arrow(5.0, y + 0.3, 5.3, y + 0.3)
        arrow(6.6, y + 0.3, 7.0, mid)
    box(7.0, mid - 0.4, 1.5, 0.8, "⑤ aggregate\n$g = Σ n_k g_k / Σ n_k$", "#f4cccc")
    box(8.8, mid - 0.4, 1.2, 0.8, "⑥ update\n$θ ← θ − η g$", "#d9d2e9")
    arrow(8.5, mid, 8.8, mid)
    ax.text(5.0, num_workers + 0.25, "seed 3.1, data parallelism: every worker holds the same θ; only the data is split",
            ha="center", fontsize=9)
    fig.tight_layout()
    return fig


def gradient_comparison_figure(num_workers: int = 3, skew: float = 0.6, reduction: str = "mean",
                               weighted: bool = True):
    r = gradient_comparison(num_workers, skew, reduction, weighted)
    fig, ax = plt.subplots(figsize=(5.2, 4))
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.12, top=0.87)   # fixed: tight_layout would double a redraw
    lim = np.abs(r["big batch"]).max() * 1.1
    ax.plot([-lim, lim], [-lim, lim], "k:", lw=1, label="equal to the big batch")
    ax.plot(r["big batch"], r["ours"], ".", ms=3, alpha=0.6, color="C3" if r["relative error"] > 1e-9 else "C2")
    ax.set_xlim(-lim, lim)
    if reduction == "mean":
        ax.set_ylim(-lim, lim)
    ax.set_xlabel("big-batch gradient, one entry per parameter")
    ax.set_ylabel(f"{num_workers}-worker gradient")
    error = "below 1e-12: exact" if r["relative error"] < 1e-12 else f"{r['relative error']:.2g}"
    ax.set_title(f"shards {r['sizes']}, {reduction} loss, {'weighted' if weighted else 'plain mean'}\n"
                 f"relative error {error}, scale {r['scale']:.3g}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return fig, r


def gradient_comparison_widget():
    """K, the skew of the shard sizes, mean or sum reduction, weighted or not."""
    import ipywidgets as widgets

    controls = {
        "num_workers": widgets.IntSlider(value=3, min=1, max=6, description="K workers"),
        "skew": widgets.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="skew"),
        "reduction": widgets.ToggleButtons(options=["mean", "sum"], description="loss"),
        "weighted": widgets.Checkbox(value=True, description="weight by shard size"),
    }
    return interactive_figure(controls, [["num_workers", "skew"], ["reduction", "weighted"]],
                              lambda **v: gradient_comparison_figure(**v)[0], slow=True)
