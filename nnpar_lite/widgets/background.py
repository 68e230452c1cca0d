"""Chapter 01: a training step's time against its work, and Amdahl's and Gustafson's laws
against a measured speed-up."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .. import costmodel
from ..language import say
from . import caption, interactive_figure


def step_time_figure(rows: list[dict], rate: float):
    """Seconds per training step against its operations (6 · parameters · batch), log-log,
    with the line time = operations / rate through the measured points."""
    flops = np.array([row["flops"] for row in rows])
    fig, ax = plt.subplots(figsize=(5.8, 3.3))
    ax.loglog(flops, [row["seconds"] for row in rows], "o", color="C0", label=caption("measured here", "本机实测"))
    span = np.geomspace(flops.min() / 1.5, flops.max() * 1.5, 20)
    ax.loglog(span, span / rate, "k--", lw=1,
              label=caption("operations", "运算次数") + f" / {rate / 1e9:.0f} GFLOP/s")
    for row in rows:
        ax.annotate(caption("width", "宽度") + f" {row['width']}", (row["flops"], row["seconds"]),
                    textcoords="offset points",
                    xytext=(7, 0), va="center", fontsize=7)
    for axis in (ax.xaxis, ax.yaxis):        # one label per power of ten; minor ticks unlabelled
        axis.set_major_locator(LogLocator(base=10, numticks=12))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(caption("floating-point operations per step (6 · parameters · batch)",
                          "每步的浮点运算次数（6 · 参数量 · 批量）"))
    ax.set_ylabel(caption("seconds per step", "每步秒数"))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def laws_figure(parallel_fraction: float = 0.9, max_workers: int = 64, measured: dict | None = None):
    """Amdahl's and Gustafson's speed-ups against the number of workers p, with the speed-ups
    measured here (``measured``: workers → speed-up) as red points."""
    p = np.arange(1, max_workers + 1, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(p, p, "k:", lw=1, label=caption("ideal (S = p)", "理想（S = p）"))
    ax.plot(p, costmodel.amdahl_speedup(parallel_fraction, p), label=caption("Amdahl, fixed problem",
                                                                               "Amdahl：问题规模固定"))
    ax.plot(p, costmodel.gustafson_speedup(parallel_fraction, p), label=caption("Gustafson, problem grows with p",
                                                                                  "Gustafson：问题规模随 p 增长"))
    ax.axhline(1 / (1 - parallel_fraction) if parallel_fraction < 1 else np.nan, color="C0", ls="--", lw=0.8,
               label=caption("Amdahl's limit", "Amdahl 极限") + f" 1/(1−f) = {1 / max(1 - parallel_fraction, 1e-9):.3g}")
    if measured:
        ax.plot(list(measured), list(measured.values()), "o", color="C3", ms=7, zorder=5,
                label=caption("measured here (matrix product over threads)", "本机实测（多线程矩阵乘法）"))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    plain = FuncFormatter(lambda value, _: f"{value:g}")   # 1, 2, 4, … rather than 2⁰, 2¹, 2²
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    ax.set_xlabel(caption("workers p", "计算单元数 p"))
    ax.set_ylabel(caption("speed-up S", "加速比 S"))
    ax.set_title(caption("parallel fraction", "并行比例") + f" f = {parallel_fraction:g}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def laws_widget(measured: dict | None = None):
    """Sliders for the parallel fraction f and the largest p; the measured points stay put."""
    import ipywidgets as widgets

    controls = {"parallel_fraction": widgets.FloatSlider(value=0.9, min=0.0, max=1.0, step=0.01,
                                                         description=say("f parallel", "并行比例 f")),
                "max_workers": widgets.IntSlider(value=64, min=2, max=1024, description=say("max p", "最大 p"))}
    return interactive_figure(controls, [["parallel_fraction", "max_workers"]],
                              lambda **v: laws_figure(**v, measured=measured))
