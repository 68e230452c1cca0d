"""Chapter 09: the overlap timeline, error feedback's 1/T, compression's bytes against accuracy,
ours against torch's PowerSGD hook, staleness, and the compression widget."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..experiments.communication_efficiency import COMPRESSORS, compression_run
from ..language import say
from . import caption, interactive_figure


def compressor_name(name: str) -> str:
    """A compressor of COMPRESSORS ("PowerSGD rank 2", "top-k 1 %") in the figure's language;
    PowerSGD's rank is a matrix's rank ("PowerSGD 秩为 2")."""
    return caption(name, name.replace(" rank ", " 秩为 "))


def _with_feedback(feedback: bool) -> str:
    return caption("with error feedback", "有误差反馈") if feedback else caption("without error feedback", "无误差反馈")


def overlap_timeline_figure(timeline: dict):
    """Backward compute against the all-reduces, for one step done each way: after backward
    (chapter 03) and overlapped (DataParallel). Times in ms from the start of backward."""
    fig, axes = plt.subplots(2, 1, figsize=(9, 3.8), sharex=True)
    titles = (("after backward", caption("all-reduce after backward (chapter 03)", "反向之后再全归约（第 03 章）")),
              ("overlapped", caption("DataParallel: each bucket leaves when it is full", "DataParallel：每个桶一满就发出")))
    for ax, (name, title) in zip(axes, titles):
        run = timeline[name]
        ready = [0.0] + [t for _, t in run["ready"]]
        for k, (start, stop) in enumerate(zip(ready[:-1], ready[1:])):
            ax.barh(1, (stop - start) * 1e3, left=start * 1e3, color="C0" if k % 2 else "#6baed6", edgecolor="w")
        leaves = {b: t for kind, b, t in run["communication"] if kind == "leaves"}
        arrives = {b: t for kind, b, t in run["communication"] if kind == "arrives"}
        for b in sorted(leaves):
            ax.barh(0, (arrives.get(b, run["end"]) - leaves[b]) * 1e3, left=leaves[b] * 1e3, height=0.6,
                    color=f"C{3 + b % 3}", edgecolor="k", lw=0.5,
                    label=caption(f"bucket {b}", f"桶 {b}") if name == "overlapped" else caption("all buckets", "所有桶"))
        ax.legend(fontsize=7, loc="lower right", ncol=3, frameon=False)
        ax.axvline(run["end"] * 1e3, color="k", ls=":", lw=1)
        ax.text(run["end"] * 1e3, 1.45, caption(" step ends: ", " 一步结束：") + f"{run['end'] * 1e3:.1f} ms", fontsize=8,
                va="center")
        ax.set_yticks([0, 1], [caption("all-reduce", "全归约"), caption("backward", "反向")])
        ax.set_ylim(-1.1, 1.7)
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1].set_xlabel(caption("ms since backward began (one rank; each shade of blue: one parameter's gradient)",
                                "自反向开始起的毫秒数（一个 rank；每种深浅的蓝色：一个参数的梯度）"))
    fig.tight_layout()
    return fig


def error_feedback_figure(curves: dict):
    """‖running mean of the outputs − true average‖ against the number of steps T, log-log."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for (name, feedback), errors in curves.items():
        T = np.arange(1, len(errors) + 1)
        ax.loglog(T, errors, color="C0" if name.startswith("PowerSGD") else "C1", ls="-" if feedback else "--",
                  label=compressor_name(name) + caption(", ", "，") + _with_feedback(feedback))
    T = np.arange(1, len(next(iter(curves.values()))) + 1)
    ax.loglog(T, 1.0 / T, "k:", lw=1, label="1/T")
    ax.set_xlabel(caption("steps T", "步数 T"))
    ax.set_ylabel(caption("relative error of the running mean", "累计平均的相对误差"))
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def compression_tradeoff_figure(runs: dict):
    """Final test accuracy against bytes sent per step, one point per compressor, filled with
    error feedback, hollow without; the exact average as a reference line."""
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    exact = runs[("exact", True)]
    ax.axhline(exact["accuracy"][-1][1], color="k", lw=1, ls=":", label=caption("exact average", "精确平均"))
    ax.plot(exact["bytes per step"], exact["accuracy"][-1][1], "ks", ms=7)
    for i, name in enumerate(COMPRESSORS):
        for feedback in (True, False):
            run = runs[(name, feedback)]
            ax.plot(run["bytes per step"], run["accuracy"][-1][1], "o" if name.startswith("Power") else "D",
                    color=f"C{i}", mfc=f"C{i}" if feedback else "white", ms=7,
                    label=compressor_name(name) if feedback else None)
    ax.set_xscale("log")
    ax.set_xlabel(caption("bytes each worker sends per step (log scale)", "每个计算单元每步发送的字节数（对数坐标）"))
    ax.set_ylabel(caption("test accuracy at the end", "最终测试准确率"))
    ax.set_title(caption("filled: with error feedback; hollow: without", "实心：有误差反馈；空心：无误差反馈"), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def hook_comparison_figure(report: dict, matrix_rank: int):
    """Our PowerSGD and torch's powerSGD_hook on the same model, data and rank: loss per step,
    and the bytes each handed to all_reduce per step."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, style, chinese in (("ours", "-", "本包"), ("torch hook", "--", "torch 的钩子")):
        left.plot(report[name]["loss"], style, label=caption(name, chinese))
        right.plot(np.array(report[name]["bytes"]) / 1e3, style, label=caption(name, chinese))
    left.set_xlabel(caption("step", "步"))
    left.set_ylabel(caption("training loss (mean over ranks)", "训练损失（各 rank 的平均）"))
    left.set_title(caption(f"PowerSGD rank {matrix_rank}, same model and batches",
                           f"PowerSGD，秩为 {matrix_rank}，相同的模型和批量"), fontsize=9)
    right.set_xlabel(caption("step", "步"))
    right.set_ylabel(caption("kB to all_reduce per rank", "每个 rank 交给 all_reduce 的 kB"))
    right.set_title(caption("exact for the first steps, then compressed", "最初几步精确，之后压缩"), fontsize=9)
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
    left.set_xlabel(caption("staleness τ (updates between read and write)", "陈旧度 τ（读与写之间的更新次数）"))
    left.set_ylabel(caption("test accuracy", "测试准确率"))
    left.legend(fontsize=8)
    taus = np.arange(0, max(quadratic["taus"]) + 1)
    right.plot(taus, quadratic["bound"], "k-", label="2 sin(π / (2(2τ + 1)))")
    for (tau, lr), converged in quadratic["runs"].items():
        right.plot(tau, lr, "o" if converged else "x", color="C2" if converged else "C3", ms=5)
    right.set_yscale("log")
    right.set_xlabel(caption("staleness τ", "陈旧度 τ"))
    right.set_ylabel("η λ")
    right.set_title(caption("converges (dots) below the line, diverges (crosses) above",
                            "线下收敛（圆点），线上发散（叉）"), fontsize=9)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def parameter_server_figure(records: list[dict]):
    """The staleness each update of the real parameter server run had, by worker."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    workers = sorted({r["worker"] for r in records})
    for w in workers:
        mine = [(i, r["staleness"]) for i, r in enumerate(records) if r["worker"] == w]
        left.plot(*zip(*mine), "o", ms=3, color=f"C{w}", label=caption(f"worker {w}", f"计算单元 {w}"))
        values = [s for _, s in mine]
        right.bar(w, np.mean(values), color=f"C{w}")
        right.text(w, np.mean(values), caption(f"{len(values)} updates", f"{len(values)} 次更新"), ha="center",
                   va="bottom", fontsize=7)
    left.set_xlabel(caption("update", "更新"))
    left.set_ylabel(caption("staleness τ", "陈旧度 τ"))
    left.legend(fontsize=7)
    right.set_xticks(workers)
    right.set_xlabel(caption("worker", "计算单元"))
    right.set_ylabel(caption("mean staleness", "平均陈旧度"))
    fig.tight_layout()
    return fig


def compression_figure(compressor: str = "PowerSGD rank 1", error_feedback: bool = True):
    """One compressor's run beside the exact average: test accuracy over the steps, and bytes per step."""
    exact, run = compression_run("exact", True), compression_run(compressor, error_feedback)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    left.plot(*zip(*exact["accuracy"]), "k:", label=caption("exact average", "精确平均"))
    left.plot(*zip(*run["accuracy"]), "-" if error_feedback else "--", color="C0",
              label=compressor_name(compressor) + caption(", ", "，") + _with_feedback(error_feedback))
    left.set_ylim(0, 1)
    left.set_xlabel(caption("step", "步"))
    left.set_ylabel(caption("test accuracy", "测试准确率"))
    left.legend(fontsize=7, loc="lower right")
    two_lines = caption(compressor.replace(" rank", "\nrank"), compressor.replace(" rank ", "\n秩为 "))
    right.bar([caption("exact", "精确"), two_lines],
              [exact["bytes per step"], run["bytes per step"]], color=["0.6", "C0"])
    right.set_yscale("log")
    right.set_ylabel(caption("bytes per worker and step", "每个计算单元每步的字节数"))
    fewer = exact["bytes per step"] / run["bytes per step"]
    right.set_title(caption(f"{fewer:.0f}× fewer bytes", f"字节数减少到 1/{fewer:.0f}"), fontsize=9)
    fig.tight_layout()
    return fig


def compression_widget():
    """The compressor (PowerSGD's rank or top-k's fraction) and error feedback → bytes and accuracy."""
    import ipywidgets as widgets

    # A slider over the compressors (PowerSGD's ranks, then top-k's fractions): a class steps
    # through them with the arrow keys.
    short = {name: name.replace("PowerSGD ", "").replace("top-k ", "top ") for name in COMPRESSORS}  # fits the readout
    controls = {"compressor": widgets.SelectionSlider(options=[(say(short[n], short[n].replace("rank ", "秩为 ")), n)
                                                               for n in COMPRESSORS],
                                                      value="PowerSGD rank 1", description="PowerSGD / top-k",
                                                      style={"description_width": "initial"}),
                "error_feedback": widgets.Checkbox(value=True, description=say("error feedback", "误差反馈"))}
    return interactive_figure(controls, [["compressor", "error_feedback"]], compression_figure, slow=True)
