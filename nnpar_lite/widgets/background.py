"""Chapter 01: a training step's time against its work, and Amdahl's and Gustafson's laws
against a measured speed-up."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .. import costmodel
from . import interactive_figure


def step_time_figure(rows: list[dict], rate: float):
    """Seconds per training step against its operations (6 · parameters · batch), log-log,
    with the line time = operations / rate through the measured points."""
    flops = np.array([row["flops"] for row in rows])
    fig, ax = plt.subplots(figsize=(5.8, 3.3))
    ax.loglog(flops, [row["seconds"] for row in rows], "o", color="C0", label="measured here")
    span = np.geomspace(flops.min() / 1.5, flops.max() * 1.5, 20)
    ax.loglog(span, span / rate, "k--", lw=1, label=f"operations / {rate / 1e9:.0f} GFLOP/s")
    for row in rows:
        ax.annotate(f"width {row['width']}", (row["flops"], row["seconds"]), textcoords="offset points",
                    xytext=(7, 0), va="center", fontsize=7)
    for axis in (ax.xaxis, ax.yaxis):        # one label per power of ten; minor ticks unlabelled
        axis.set_major_locator(LogLocator(base=10, numticks=12))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("floating-point operations per step (6 · parameters · batch)")
    ax.set_ylabel("seconds per step")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def laws_figure(parallel_fraction: float = 0.9, max_workers: int = 64, measured: dict | None = None):
    """Amdahl's and Gustafson's speed-ups against the number of workers p, with the speed-ups
    measured here (``measured``: workers → speed-up) as red points."""
    p = np.arange(1, max_workers + 1, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(p, p, "k:", lw=1, label="ideal (S = p)")
    ax.plot(p, costmodel.amdahl_speedup(parallel_fraction, p), label="Amdahl, fixed problem")
    ax.plot(p, costmodel.gustafson_speedup(parallel_fraction, p), label="Gustafson, problem grows with p")
    ax.axhline(1 / (1 - parallel_fraction) if parallel_fraction < 1 else np.nan, color="C0", ls="--", lw=0.8,
               label=f"Amdahl's limit 1/(1−f) = {1 / max(1 - parallel_fraction, 1e-9):.3g}")
    if measured:
        ax.plot(list(measured), list(measured.values()), "o", color="C3", ms=7, zorder=5,
                label="measured here (matrix product over threads)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    plain = FuncFormatter(lambda value, _: f"{value:g}")   # 1, 2, 4, … rather than 2⁰, 2¹, 2²
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    ax.set_xlabel("workers p")
    ax.set_ylabel("speed-up S")
    ax.set_title(f"parallel fraction f = {parallel_fraction:g}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def laws_widget(measured: dict | None = None):
    """Sliders for the parallel fraction f and the largest p; the measured points stay put."""
    import ipywidgets as widgets

    controls = {"parallel_fraction": widgets.FloatSlider(value=0.9, min=0.0, max=1.0, step=0.01, description="f parallel"),
                "max_workers": widgets.IntSlider(value=64, min=2, max=1024, description="max p")}
    return interactive_figure(controls, [["parallel_fraction", "max_workers"]],
                              lambda **v: laws_figure(**v, measured=measured))
