"""Chapter 02: the repaired networks of seed 4.1 and 4.2 trained by K workers."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator

from ..experiments.article_code import training_curves
from ..language import say
from . import caption, interactive_figure

MOST_STEPS = 400   # the steps slider's end: every run is trained this far once, then cut to the slider's value
RUN_NAMES = {      # training_curves' names of its runs (after "4.1 " or "4.2 "), in Chinese
    r"one worker, whole batch": "一个计算单元，整个批量",
    r"(\d+) workers?, gradients weighted by shard": r"\1 个计算单元，梯度按分片加权",
    r"(\d+) workers?, plain mean of gradients": r"\1 个计算单元，梯度取简单平均",
    r"(\d+) sub-models?, averaged every step": r"\1 个子模型，每步平均",
    r"(\d+) sub-models?, averaged every (\d+) steps": r"\1 个子模型，每 \2 步平均"}


def _run_name(english: str) -> str:
    """A run's name in the figure's language."""
    found = next((m.expand(chinese) for pattern, chinese in RUN_NAMES.items() if (m := re.fullmatch(pattern, english))),
                 english)
    return caption(english, found)


def training_figure(num_workers: int = 2, lr: float = 0.03, epochs: int = 200, local_steps: int = 10):
    """The loss curves of :func:`training_curves` for K workers and η, over the first ``epochs``
    steps (cut from a cached run of ``MOST_STEPS``, so that moving the steps slider retrains nothing)."""
    runs = training_curves(num_workers, lr, max(epochs, MOST_STEPS), local_steps)
    result = {**runs, "curves": {name: ([s for s in steps if s <= epochs], losses[:sum(s <= epochs for s in steps)])
                                 for name, (steps, losses) in runs["curves"].items()}}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))   # own y axes: a diverging 4.1 must not flatten 4.2
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.15, top=0.8, wspace=0.15)   # fixed: tight_layout doubles a redraw
    titles = {"4.1": caption("seed 4.1 repaired: linear model", "修复后的文章 4.1：线性模型"),
              "4.2": caption("seed 4.2 repaired: tanh network", "修复后的文章 4.2：tanh 网络")}
    for ax, prefix in zip(axes, titles):
        names = [n for n in result["curves"] if n.startswith(prefix)]
        for name, style in zip(names, ["-", "--", ":"]):
            steps, losses = result["curves"][name]
            ax.semilogy(steps, losses, style, lw=2, label=_run_name(name[4:]))
        ax.yaxis.set_minor_locator(NullLocator())   # decades only: hundreds of minor ticks cost a redraw 0.2 s
        ax.set_title(titles[prefix])
        ax.set_xlabel(caption("SGD steps per worker", "每个计算单元的 SGD 步数"))
        ax.legend(fontsize=7)
    axes[0].set_ylabel(caption("loss on the whole batch", "整个批量上的损失"))
    fig.suptitle(caption(f"K = {num_workers} (shards {result['shard sizes']}), η = {lr:g}",
                         f"K = {num_workers}（分片 {result['shard sizes']}），η = {lr:g}"), fontsize=10)
    return fig, result


def training_widget():
    """Sliders for K, the learning rate and the number of steps."""
    import ipywidgets as widgets

    controls = {
        "num_workers": widgets.IntSlider(value=3, min=1, max=4, description=say("K workers", "K 计算单元")),
        "lr": widgets.FloatSlider(value=0.03, min=0.002, max=0.05, step=0.002, description="η", readout_format=".3f"),
        "epochs": widgets.IntSlider(value=200, min=20, max=MOST_STEPS, step=20, description=say("steps", "步数")),
    }
    # A new K or η trains six runs (about half a second): redraw on release, saying "computing…".
    return interactive_figure(controls, [["num_workers", "lr", "epochs"]], lambda **v: training_figure(**v)[0],
                              slow=True)
