"""Chapter 03: the six steps of data parallelism, pictured, and the K-worker gradient
compared with the big-batch gradient live."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..experiments.data_parallel import gradient_comparison
from ..language import say
from . import caption, interactive_figure

SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


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
    box(0.0, mid - 0.3, 1.3, 0.6, caption("global batch\n(N samples)", "全局批量\n（N 个样本）"), "#dddddd")
    for k in range(num_workers):
        y = num_workers - 1 - k
        i = str(k).translate(SUBSCRIPT)        # mathtext cannot hold Chinese: the Chinese boxes write n₀, L₀
        box(1.8, y + 0.05, 1.2, 0.5, caption(f"① shard {k}\n$n_{k}$ samples", f"① 分片 {k}\nn{i} 个样本"), "#cfe2f3")
        box(3.4, y + 0.05, 1.6, 0.5, caption(f"② forward, θ\n③ loss $L_{k}$", f"② 前向，θ\n③ 损失 L{i}"), "#d9ead3")
        box(5.3, y + 0.05, 1.3, 0.5, caption(f"④ backward\n$g_{k} = ∇L_{k}$", f"④ 反向\ng{i} = ∇L{i}"), "#fff2cc")
        arrow(1.3, mid, 1.8, y + 0.3)
        arrow(3.0, y + 0.3, 3.4, y + 0.3)
        arrow(5.0, y + 0.3, 5.3, y + 0.3)
        arrow(6.6, y + 0.3, 7.0, mid)
    box(7.0, mid - 0.4, 1.5, 0.8, caption("⑤ aggregate\n$g = Σ n_k g_k / Σ n_k$", "⑤ 聚合\ng = Σ nₖ gₖ / Σ nₖ"),
        "#f4cccc")
    box(8.8, mid - 0.4, 1.2, 0.8, caption("⑥ update\n$θ ← θ − η g$", "⑥ 更新\nθ ← θ − η g"), "#d9d2e9")
    arrow(8.5, mid, 8.8, mid)
    ax.text(5.0, num_workers + 0.25, caption("seed 3.1, data parallelism: every worker holds the same θ; only the data "
                                             "is split", "文章 3.1，数据并行：每个计算单元持有相同的 θ，只切分数据"),
            ha="center", fontsize=9)
    fig.tight_layout()
    return fig


def gradient_comparison_figure(num_workers: int = 3, skew: float = 0.6, reduction: str = "mean",
                               weighted: bool = True):
    r = gradient_comparison(num_workers, skew, reduction, weighted)
    fig, ax = plt.subplots(figsize=(5.2, 4))
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.12, top=0.87)   # fixed: tight_layout would double a redraw
    lim = np.abs(r["big batch"]).max() * 1.1
    ax.plot([-lim, lim], [-lim, lim], "k:", lw=1, label=caption("equal to the big batch", "与大批量相等"))
    ax.plot(r["big batch"], r["ours"], ".", ms=3, alpha=0.6, color="C3" if r["relative error"] > 1e-9 else "C2")
    ax.set_xlim(-lim, lim)
    if reduction == "mean":
        ax.set_ylim(-lim, lim)
    ax.set_xlabel(caption("big-batch gradient, one entry per parameter", "大批量的梯度，每个参数一个元素"))
    ax.set_ylabel(caption(f"{num_workers}-worker gradient", f"{num_workers} 个计算单元的梯度"))
    exact = r["relative error"] < 1e-12
    error = caption("below 1e-12: exact", "低于 1e-12：精确") if exact else f"{r['relative error']:.2g}"
    ax.set_title(caption(f"shards {r['sizes']}, {reduction} loss, {'weighted' if weighted else 'plain mean'}\n"
                         f"relative error {error}, scale {r['scale']:.3g}",
                         f"分片 {r['sizes']}，{reduction} 损失，{'加权' if weighted else '简单平均'}\n"
                         f"相对误差 {error}，尺度 {r['scale']:.3g}"), fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return fig, r


def gradient_comparison_widget():
    """K, the skew of the shard sizes, mean or sum reduction, weighted or not."""
    import ipywidgets as widgets

    controls = {
        "num_workers": widgets.IntSlider(value=3, min=1, max=6, description=say("K workers", "K 计算单元")),
        "skew": widgets.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05, description="skew"),
        "reduction": widgets.ToggleButtons(options=["mean", "sum"], description=say("loss", "损失")),
        "weighted": widgets.Checkbox(value=True, description=say("weight by shard size", "按分片大小加权")),
    }
    return interactive_figure(controls, [["num_workers", "skew"], ["reduction", "weighted"]],
                              lambda **v: gradient_comparison_figure(**v)[0], slow=True)
