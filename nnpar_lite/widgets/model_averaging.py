"""Chapter 04: local SGD / federated averaging on the digits, IID and non-IID."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..experiments.model_averaging import compare_schemes, label_counts
from ..language import say
from . import caption, interactive_figure


def _split_name(alpha: float | None) -> str:
    return caption("IID", "独立同分布") if alpha is None else f"α = {alpha:g}"


def label_histogram_figure(num_workers: int = 4, alphas=(None, 1.0, 0.1)):
    """Which labels each worker holds, for IID and for Dirichlet splits of decreasing α."""
    fig, axes = plt.subplots(1, len(alphas), figsize=(3.3 * len(alphas), 2.8), sharey=True)
    for ax, alpha in zip(np.atleast_1d(axes), alphas):
        counts = label_counts(num_workers, alpha)
        bottom = np.zeros(num_workers)
        for label in range(10):
            ax.bar(range(num_workers), counts[:, label], bottom=bottom, color=plt.cm.tab10(label), label=str(label))
            bottom += counts[:, label]
        ax.set_title(caption("IID", "独立同分布") if alpha is None else
                     caption(f"Dirichlet, concentration α = {alpha:g}", f"狄利克雷划分，集中度参数 α = {alpha:g}"),
                     fontsize=9)
        ax.set_xlabel(caption("worker", "计算单元"))
        ax.set_xticks(range(num_workers))
    np.atleast_1d(axes)[0].set_ylabel(caption("samples", "样本数"))
    np.atleast_1d(axes)[-1].legend(title=caption("label", "标签"), fontsize=6, title_fontsize=7, ncol=2,
                                   loc="upper right")
    fig.tight_layout()
    return fig


def compare_schemes_figure(num_workers: int = 4, local_steps: int = 8, alpha: float | None = 0.1,
                           lr: float = 0.5, total_steps: int = 96):
    """Test accuracy against local steps: averaged every H steps, synchronous, each worker alone."""
    r = compare_schemes(num_workers, local_steps, alpha, lr, total_steps)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(r["synchronous"], color="k", lw=1.5,
            label=caption("synchronous data parallel", "同步数据并行") + f": {r['synchronous'][-1]:.2f}")
    ax.plot(r["averaged steps"], r["averaged"], "o-", ms=3, color="C3",
            label=caption(f"averaged every H = {local_steps} steps", f"每 H = {local_steps} 步平均一次")
            + f": {r['averaged'][-1]:.2f}")
    for i, acc in enumerate(r["alone"]):
        ax.axhline(acc, color="C0", ls=":", lw=1, label=caption("each worker alone", "每个计算单元单独训练") if i == 0 else None)
    ax.set_ylim(0, 1)
    ax.set_xlabel(caption("local steps per worker", "每个计算单元的本地步数"))
    ax.set_ylabel(caption("test accuracy", "测试准确率"))
    kilobytes = r["communication"]["bytes"] / 1e3
    ax.set_title(caption(f"K = {num_workers}, {_split_name(alpha)}, shards {r['shard sizes']}, η = {lr:g}; "
                         f"{kilobytes:.1f} kB per worker per epoch",
                         f"K = {num_workers}，{_split_name(alpha)}，分片 {r['shard sizes']}，η = {lr:g}；"
                         f"每个计算单元每个 epoch 发送 {kilobytes:.1f} kB"), fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig, r


def communication_accuracy_figure(rows: list[dict]):
    """Accuracy after the same number of local steps against the bytes each worker sends per
    epoch, one line per split; each point labelled with its H (rows from
    ``accuracy_against_communication``)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    alphas = list(rows[0]["accuracy"])
    for alpha, marker in zip(alphas, "os^v"):
        ax.semilogx([r["bytes"] for r in rows], [r["accuracy"][alpha] for r in rows], marker + "-",
                    label=_split_name(alpha))
    lowest = [min(r["accuracy"].values()) for r in rows]
    for r, low in zip(rows, lowest):
        ax.annotate(f"H={r['H']}", (r["bytes"], low), textcoords="offset points", xytext=(0, -13),
                    ha="center", fontsize=7)
    ax.margins(x=0.08)
    ax.set_ylim(min(lowest) - 0.08, 1.0)        # room below the lowest point for its H label
    ax.set_xlabel(caption("bytes sent per worker per epoch", "每个计算单元每个 epoch 发送的字节数"))
    ax.set_ylabel(caption("test accuracy, same local steps", "测试准确率（本地步数相同）"))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def drift_figure(drift: dict, local_steps=(1, 2, 4, 8, 16)):
    """Mean client drift ‖θ_i − θ̄‖ after a round against H, one line per split
    (``drift_against_h``'s result)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for alpha, values in drift.items():
        ax.plot(local_steps, values, "o-", label=_split_name(alpha))
    ax.set_xscale("log", base=2)
    ax.set_xticks(local_steps, [str(h) for h in local_steps])
    ax.set_xlabel(caption("H, local steps between averaging", "H：两次平均之间的本地步数"))
    ax.set_ylabel(caption(r"mean $\|\theta_i - \bar\theta\|$ after a round", "一个回合后 ‖θ_i − θ̄‖ 的平均"))
    ax.legend()
    fig.tight_layout()
    return fig


def _draw_compare_schemes(num_workers: int, local_steps: int, alpha, lr: float):
    # the α slider holds the string "IID" for the IID split: a SelectionSlider cannot hold None,
    # which ipywidgets reads as "nothing selected"
    return compare_schemes_figure(num_workers, local_steps, None if alpha == "IID" else alpha, lr)[0]


def compare_schemes_widget():
    """Sliders for K, H, α (IID at the left end) and the learning rate. Each move retrains the
    averaged run (a few tenths of a second), so the sliders update on release."""
    import ipywidgets as widgets

    controls = {
        "num_workers": widgets.IntSlider(value=4, min=2, max=8, description=say("K workers", "K 计算单元")),
        "local_steps": widgets.SelectionSlider(options=[1, 2, 4, 8, 16, 32], value=8, description="H"),
        "alpha": widgets.SelectionSlider(options=[("IID", "IID"), ("10", 10.0), ("1", 1.0), ("0.3", 0.3),
                                                  ("0.1", 0.1), ("0.03", 0.03)], value=0.1, description="α"),
        "lr": widgets.SelectionSlider(options=[0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0], value=0.5, description="η"),
    }
    return interactive_figure(controls, [["num_workers", "local_steps"], ["alpha", "lr"]], _draw_compare_schemes,
                              slow=True)
