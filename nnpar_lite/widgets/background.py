"""Chapter 01: Amdahl's and Gustafson's laws against a measured speed-up."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .. import costmodel
from . import interactive_figure


def laws_figure(parallel_fraction: float = 0.9, max_workers: int = 64, measured: dict | None = None):
    """Amdahl's and Gustafson's speed-ups against the number of workers, with measured points."""
    p = np.arange(1, max_workers + 1)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(p, p, "k:", lw=1, label="ideal (S = p)")
    ax.plot(p, [costmodel.amdahl_speedup(parallel_fraction, w) for w in p], label="Amdahl, fixed problem")
    ax.plot(p, [costmodel.gustafson_speedup(parallel_fraction, w) for w in p], label="Gustafson, problem grows with p")
    ax.axhline(1 / (1 - parallel_fraction) if parallel_fraction < 1 else np.nan, color="C0", ls="--", lw=0.8,
               label=f"Amdahl's limit 1/(1−f) = {1 / max(1 - parallel_fraction, 1e-9):.3g}")
    if measured:
        ax.plot(list(measured), list(measured.values()), "o", color="C3", ms=7, label="measured here (matmul)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("workers p")
    ax.set_ylabel("speed-up S")
    ax.set_title(f"parallel fraction f = {parallel_fraction}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def laws_widget(measured: dict | None = None):
    import ipywidgets as widgets

    controls = {"parallel_fraction": widgets.FloatSlider(value=0.9, min=0.0, max=1.0, step=0.01, description="f parallel"),
                "max_workers": widgets.IntSlider(value=64, min=2, max=1024, description="max p")}
    return interactive_figure(controls, [["parallel_fraction", "max_workers"]],
                              lambda **v: laws_figure(**v, measured=measured))
