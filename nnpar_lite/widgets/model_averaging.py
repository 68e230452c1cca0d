"""Chapter 04: local SGD / federated averaging on the digits, IID and non-IID."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..experiments.model_averaging import compare_schemes, label_counts
from . import interactive_figure

def label_histogram_figure(num_workers: int = 4, alphas=(None, 1.0, 0.1)):
    """Which labels each worker holds, for IID and for Dirichlet splits of decreasing α."""
    fig, axes = plt.subplots(1, len(alphas), figsize=(3.3 * len(alphas), 2.8), sharey=True)
    for ax, alpha in zip(np.atleast_1d(axes), alphas):
        counts = label_counts(num_workers, alpha)
        bottom = np.zeros(num_workers)
        for label in range(10):
            ax.bar(range(num_workers), counts[:, label], bottom=bottom, color=plt.cm.tab10(label), label=str(label))
            bottom += counts[:, label]
        ax.set_title("IID" if alpha is None else f"Dirichlet α = {alpha:g}", fontsize=9)
        ax.set_xlabel("worker")
        ax.set_xticks(range(num_workers))
    np.atleast_1d(axes)[0].set_ylabel("samples")
    np.atleast_1d(axes)[-1].legend(title="label", fontsize=6, title_fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    return fig


def compare_schemes_figure(num_workers: int = 4, local_steps: int = 8, alpha: float | None = 0.1,
                           lr: float = 0.5, total_steps: int = 160):
    r = compare_schemes(num_workers, local_steps, alpha, lr, total_steps)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(r["synchronous"], color="k", lw=1.5, label=f"synchronous data parallel: {r['synchronous'][-1]:.3f}")
    ax.plot(r["averaged steps"], r["averaged"], "o-", ms=3, color="C3",
            label=f"averaged every H = {local_steps} steps: {r['averaged'][-1]:.3f}")
    for i, acc in enumerate(r["alone"]):
        ax.axhline(acc, color="C0", ls=":", lw=1, label="each worker alone" if i == 0 else None)
    ax.set_ylim(0, 1)
    ax.set_xlabel("local steps per worker")
    ax.set_ylabel("test accuracy")
    split = "IID" if alpha is None else f"α = {alpha:g}"
    ax.set_title(f"K = {num_workers}, {split}, shards {r['shard sizes']}, η = {lr:g}; "
                 f"{r['communication']['bytes'] / 1e3:.1f} kB per worker per epoch", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig, r


def compare_schemes_widget():
    """Sliders for K, H, α (IID at the left end) and the learning rate."""
    import ipywidgets as widgets

    controls = {
        "num_workers": widgets.IntSlider(value=4, min=2, max=8, description="K workers"),
        "local_steps": widgets.SelectionSlider(options=[1, 2, 4, 8, 16, 32], value=8, description="H"),
        "alpha": widgets.SelectionSlider(options=[("IID", None), ("10", 10.0), ("1", 1.0), ("0.3", 0.3),
                                                  ("0.1", 0.1), ("0.03", 0.03)], value=0.1, description="α"),
        "lr": widgets.FloatSlider(value=0.5, min=0.05, max=1.0, step=0.05, description="η"),
    }
    return interactive_figure(controls, [["num_workers", "local_steps"], ["alpha", "lr"]],
                              lambda **v: compare_schemes_figure(**v)[0])
