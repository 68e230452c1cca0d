"""Chapter 09: the overlap timeline, error feedback's 1/T, compression's bytes against accuracy,
ours against torch's PowerSGD hook, staleness, and the compression widget."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..experiments.communication_efficiency import COMPRESSORS, compression_run
from . import interactive_figure


def overlap_timeline_figure(timeline: dict):
    """Backward compute against the all-reduces, for one step done each way: after backward
    (chapter 03) and overlapped (DataParallel). Times in ms from the start of backward."""
    fig, axes = plt.subplots(2, 1, figsize=(9, 3.8), sharex=True)
    for ax, (name, title) in zip(axes, (("after backward", "all-reduce after backward (chapter 03)"),
                                        ("overlapped", "DataParallel: each bucket leaves when it is full"))):
        run = timeline[name]
        ready = [0.0] + [t for _, t in run["ready"]]
        for k, (start, stop) in enumerate(zip(ready[:-1], ready[1:])):
            ax.barh(1, (stop - start) * 1e3, left=start * 1e3, color="C0" if k % 2 else "#6baed6", edgecolor="w")
        leaves = {b: t for kind, b, t in run["communication"] if kind == "leaves"}
        arrives = {b: t for kind, b, t in run["communication"] if kind == "arrives"}
        for b in sorted(leaves):
            ax.barh(0, (arrives.get(b, run["end"]) - leaves[b]) * 1e3, left=leaves[b] * 1e3, height=0.6,
                    color=f"C{3 + b % 3}", edgecolor="k", lw=0.5,
                    label=f"bucket {b}" if name == "overlapped" else "all buckets")
        ax.legend(fontsize=7, loc="lower right", ncol=3, frameon=False)
        ax.axvline(run["end"] * 1e3, color="k", ls=":", lw=1)
        ax.text(run["end"] * 1e3, 1.45, f" step ends: {run['end'] * 1e3:.1f} ms", fontsize=8, va="center")
        ax.set_yticks([0, 1], ["all-reduce", "backward"])
        ax.set_ylim(-1.1, 1.7)
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1].set_xlabel("ms since backward began (one rank; each shade of blue: one parameter's gradient)")
    fig.tight_layout()
    return fig


def error_feedback_figure(curves: dict):
    """‖running mean of the outputs − true average‖ against the number of steps T, log-log."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for (name, feedback), errors in curves.items():
        T = np.arange(1, len(errors) + 1)
        ax.loglog(T, errors, color="C0" if name.startswith("PowerSGD") else "C1", ls="-" if feedback else "--",
                  label=f"{name}, {'with' if feedback else 'without'} error feedback")
    T = np.arange(1, len(next(iter(curves.values()))) + 1)
    ax.loglog(T, 1.0 / T, "k:", lw=1, label="1/T")
    ax.set_xlabel("steps T")
    ax.set_ylabel("relative error of the running mean")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def compression_tradeoff_figure(runs: dict):
    """Final test accuracy against bytes sent per step, one point per compressor, filled with
    error feedback, hollow without; the exact average as a reference line."""
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    exact = runs[("exact", True)]
    ax.axhline(exact["accuracy"][-1][1], color="k", lw=1, ls=":", label="exact average")
    ax.plot(exact["bytes per step"], exact["accuracy"][-1][1], "ks", ms=7)
    for i, name in enumerate(COMPRESSORS):
        for feedback in (True, False):
            run = runs[(name, feedback)]
            ax.plot(run["bytes per step"], run["accuracy"][-1][1], "o" if name.startswith("Power") else "D",
                    color=f"C{i}", mfc=f"C{i}" if feedback else "white", ms=7,
                    label=name if feedback else None)
    ax.set_xscale("log")
    ax.set_xlabel("bytes each worker sends per step (log scale)")
    ax.set_ylabel("test accuracy at the end")
    ax.set_title("filled: with error feedback; hollow: without", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def hook_comparison_figure(report: dict, matrix_rank: int):
    """Our PowerSGD and torch's powerSGD_hook on the same model, data and rank: loss per step,
    and the bytes each handed to all_reduce per step."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, style in (("ours", "-"), ("torch hook", "--")):
        left.plot(report[name]["loss"], style, label=name)
        right.plot(np.array(report[name]["bytes"]) / 1e3, style, label=name)
    left.set_xlabel("step")
    left.set_ylabel("training loss (mean over ranks)")
    left.set_title(f"PowerSGD rank {matrix_rank}, same model and batches", fontsize=9)
    right.set_xlabel("step")
    right.set_ylabel("kB to all_reduce per rank")
    right.set_title("exact for the first steps, then compressed", fontsize=9)
    left.legend(fontsize=8)
    fig.tight_layout()
    return fig


def staleness_figure(sweep: dict, quadratic: dict):
    """Left: test accuracy against staleness τ for several learning rates (stale SGD on the
    digits). Right: the largest stable η λ on L = λθ²/2 against τ, with runs that converged
    (dots) and diverged (crosses)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for lr, accuracy in sweep["accuracy"].items():
        left.plot(sweep["taus"], accuracy, "o-", label=f"η = {lr:g}")
    left.set_xscale("symlog", linthresh=1)
    left.set_xticks(sweep["taus"], [str(t) for t in sweep["taus"]])
    left.set_xlabel("staleness τ (updates between read and write)")
    left.set_ylabel("test accuracy")
    left.legend(fontsize=8)
    taus = np.arange(0, max(quadratic["taus"]) + 1)
    right.plot(taus, quadratic["bound"], "k-", label="2 sin(π / (2(2τ + 1)))")
    for (tau, lr), converged in quadratic["runs"].items():
        right.plot(tau, lr, "o" if converged else "x", color="C2" if converged else "C3", ms=5)
    right.set_yscale("log")
    right.set_xlabel("staleness τ")
    right.set_ylabel("η λ")
    right.set_title("converges (dots) below the line, diverges (crosses) above", fontsize=9)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def parameter_server_figure(records: list[dict]):
    """The staleness each update of the real parameter server run had, by worker."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    workers = sorted({r["worker"] for r in records})
    for w in workers:
        mine = [(i, r["staleness"]) for i, r in enumerate(records) if r["worker"] == w]
        left.plot(*zip(*mine), "o", ms=3, color=f"C{w}", label=f"worker {w}")
        values = [s for _, s in mine]
        right.bar(w, np.mean(values), color=f"C{w}")
        right.text(w, np.mean(values), f"{len(values)} updates", ha="center", va="bottom", fontsize=7)
    left.set_xlabel("update")
    left.set_ylabel("staleness τ")
    left.legend(fontsize=7)
    right.set_xticks(workers)
    right.set_xlabel("worker")
    right.set_ylabel("mean staleness")
    fig.tight_layout()
    return fig


def compression_figure(compressor: str = "PowerSGD rank 1", error_feedback: bool = True):
    """One compressor's run beside the exact average: test accuracy over the steps, and bytes per step."""
    exact, run = compression_run("exact", True), compression_run(compressor, error_feedback)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    left.plot(*zip(*exact["accuracy"]), "k:", label="exact average")
    left.plot(*zip(*run["accuracy"]), "-" if error_feedback else "--", color="C0",
              label=f"{compressor}, {'with' if error_feedback else 'without'} error feedback")
    left.set_ylim(0, 1)
    left.set_xlabel("step")
    left.set_ylabel("test accuracy")
    left.legend(fontsize=7, loc="lower right")
    right.bar(["exact", compressor.replace(" rank", "\nrank")], [exact["bytes per step"], run["bytes per step"]],
              color=["0.6", "C0"])
    right.set_yscale("log")
    right.set_ylabel("bytes per worker and step")
    right.set_title(f"{exact['bytes per step'] / run['bytes per step']:.0f}× fewer bytes", fontsize=9)
    fig.tight_layout()
    return fig


def compression_widget():
    """The compressor (PowerSGD's rank or top-k's fraction) and error feedback → bytes and accuracy."""
    import ipywidgets as widgets

    # A slider over the compressors (PowerSGD's ranks, then top-k's fractions): a class steps
    # through them with the arrow keys.
    short = {name: name.replace("PowerSGD ", "").replace("top-k ", "top ") for name in COMPRESSORS}  # fits the readout
    controls = {"compressor": widgets.SelectionSlider(options=[(short[n], n) for n in COMPRESSORS],
                                                      value="PowerSGD rank 1", description="PowerSGD / top-k",
                                                      style={"description_width": "initial"}),
                "error_feedback": widgets.Checkbox(value=True, description="error feedback")}
    return interactive_figure(controls, [["compressor", "error_feedback"]], compression_figure, slow=True)
