"""Chapter 08: one FSDP step on a timeline, the memory each rank holds measured against the
calculator (the table of :func:`nnpar_lite.experiments.sharding.memory_table`), and the
calculator as a widget (stage × devices × model size)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from .. import costmodel
from ..experiments.sharding import PARTS
from ..models import mlp_parameters
from ..language import say
from . import caption, interactive_figure, memory_part

STAGES = {0: "data parallel", 1: "ZeRO-1", 2: "ZeRO-2", 3: "ZeRO-3 (FSDP)"}
STAGES_ZH = {0: "数据并行", 1: "ZeRO-1", 2: "ZeRO-2", 3: "ZeRO-3（FSDP）"}
EVENTS = {"all-gather": ("gather", "收集"), "reduce-scatter": ("r-s", "r-s"), "forward": ("forward", "前向"),
          "backward": ("backward", "反向"), "free": ("free", "释放")}        # what a box of the timeline says


def _stage(stage: int) -> str:
    return caption(STAGES[stage], STAGES_ZH[stage])
COLORS = {"all-gather": "C0", "forward": "#9ecae1", "free": "0.75", "backward": "#fdae6b", "reduce-scatter": "C3"}


def readable_bytes(n: float) -> str:
    """1536 → "1.5 KiB": bytes in the largest binary unit that keeps the number ≥ 1."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


def _timeline_boxes(trace: list[dict]) -> list[tuple[float, float, str, str]]:
    """(start, width, unit, what) for each box of the timeline: each traced event takes one
    slot, and the computation between a gather and the next event of the same unit (its
    forward, its backward) takes two."""
    boxes, x = [], 0.0
    for event in trace:
        what = event["event"]
        boxes.append((x, 1.0, event["unit"], what))
        x += 1.0
        if what == "all-gather":
            boxes.append((x, 2.0, event["unit"], event["phase"]))
            x += 2.0
    return boxes


def fsdp_timeline_figure(trace: list[dict]):
    """One FSDP step as rank 0 ran it: a row per layer (gather, compute, free; in backward,
    gather, compute, reduce-scatter, free), and below, the bytes of gathered weights alive."""
    boxes = _timeline_boxes(trace)
    units = list(dict.fromkeys(e["unit"] for e in trace))
    fig, (ax, low) = plt.subplots(2, 1, figsize=(9, 1.0 + 0.55 * len(units) + 1.6), sharex=True,
                                  gridspec_kw={"height_ratios": [0.55 * len(units) + 0.4, 1.4]})
    for start, width, unit, what in boxes:
        row = units.index(unit)
        ax.add_patch(Rectangle((start, row - 0.35), width, 0.7, fc=COLORS[what], ec="k", lw=0.5))
        ax.text(start + width / 2, row, caption(*EVENTS[what]), ha="center", va="center", fontsize=6.5)
    end = boxes[-1][0] + boxes[-1][1]
    ax.set_xlim(0, end)
    ax.set_ylim(len(units) - 0.5, -0.5)
    ax.set_yticks(range(len(units)), [f"model[{u}]" if u.isdigit() else u for u in units])
    ax.set_title(caption("one FSDP step: each layer's weights exist whole only between its gather and its free",
                         "FSDP 的一步：每层的权重只在收集与释放之间完整存在"), fontsize=9, pad=20)
    legend = {caption("gather: all-gather of the layer's shards", "收集：对该层的分片做全收集"): "all-gather",
              caption("forward", "前向"): "forward", caption("backward", "反向"): "backward",
              caption("r-s: reduce-scatter of its gradient", "r-s：对其梯度做归约散射"): "reduce-scatter",
              caption("free", "释放"): "free"}
    ax.legend(handles=[Rectangle((0, 0), 1, 1, fc=COLORS[what], ec="k", lw=0.5, label=label)
                       for label, what in legend.items()], loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5,
              fontsize=7, frameon=False, handlelength=1.2)
    xs = [start + width for start, width, _, what in boxes if what in ("all-gather", "free", "reduce-scatter")]
    held = [e["gathered bytes"] for e in trace]
    low.step([0] + xs, [0] + held, where="post", color="C0")
    low.fill_between([0] + xs, [0] + held, step="post", alpha=0.3)
    low.set_ylabel(caption("gathered bytes", "已收集的字节"), fontsize=8)
    low.set_xlabel(caption("forward, then backward (event order, not measured time)", "先前向，再反向（事件顺序，不是实测时间）"))
    low.set_xticks([])
    fig.tight_layout()
    return fig


def memory_figure(table: list[dict]):
    """Bytes per rank after one step, measured (bars: parameters, gradients, optimizer state)
    against the calculator (black marks), for each stage and N: the fp32 rows of ``table``
    (``experiments.sharding.memory_table``)."""
    fp32 = [r for r in table if r["precision"] == "fp32"]
    worlds = sorted({r["N"] for r in fp32})
    fig, axes = plt.subplots(1, len(worlds), figsize=(3.1 * len(worlds), 3.2), sharey=True)
    for ax, n in zip(np.atleast_1d(axes), worlds):
        mine = sorted((r for r in fp32 if r["N"] == n), key=lambda r: r["stage"])
        bottom = np.zeros(len(mine))
        for part, color in zip(PARTS, ("C0", "C1", "C2")):
            values = np.array([r[part] / 1024 for r in mine])
            ax.bar(range(len(mine)), values, bottom=bottom, color=color, label=memory_part(part))
            bottom += values
        ax.plot(range(len(mine)), [r["predicted"] / 1024 for r in mine], "k_", ms=22, mew=2,
                label=caption("calculator", "计算器"))
        ax.set_xticks(range(len(mine)), [caption(f"stage {r['stage']}", f"阶段 {r['stage']}") for r in mine], fontsize=8)
        ax.set_title(caption(f"N = {n} ranks", f"N = {n} 个 rank"), fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel(caption("KiB held by rank 0 after a step", "一步之后 rank 0 持有的 KiB"))
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _per_rank(num_params: float, stage: int, devices: int, precision: str) -> dict:
    return costmodel.training_memory(num_params, precision=precision, optimizer="adam", zero_stage=stage,
                                     data_parallel=devices)


def memory_per_rank_figure(stage: int = 3, devices: int = 8, num_params: float = 7e9, precision: str = "mixed",
                           measured: list[dict] | None = None):
    """Left: the calculator's bytes per rank against the number of ranks, one line per stage
    (Adam; activations left out); dots where this chapter measured the same Ψ and precision.
    Right: what one rank holds for the chosen stage and N, by kind."""
    grid = np.unique(np.geomspace(1, 1024, 41).round().astype(int))
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(9.5, 3.6), gridspec_kw={"width_ratios": [2.2, 1]})
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.92, wspace=0.12)
    for s in STAGES:
        totals = [_per_rank(num_params, s, int(n), precision)["total"] for n in grid]
        ax.loglog(grid, totals, lw=2.5 if s == stage else 1, color=f"C{s}", label=_stage(s),
                  alpha=1 if s == stage else 0.6)
    points = [r for r in (measured or []) if r["held"]["total"] and _same_model(r, num_params, precision)]
    for r in points:
        ax.plot(r["N"], r["held"]["total"], "o", ms=7, mfc="none", mec=f"C{r['stage']}", mew=1.5)
    if points:
        ax.plot([], [], "o", mfc="none", mec="k", label=caption("measured here", "本机实测"))
    chosen = _per_rank(num_params, stage, devices, precision)
    ax.axvline(devices, color="k", ls=":", lw=1)
    if num_params >= 1e9:
        ax.axhline(80 * 2 ** 30, color="0.4", ls="--", lw=1)
        ax.text(1024, 80 * 2 ** 30, caption("80 GiB, one large GPU", "80 GiB，一块大显存 GPU"), fontsize=7, va="bottom",
                ha="right")
    ax.minorticks_off()                  # a log axis's minor ticks cost most of a redraw
    ax.set_xlabel(caption("N, ranks sharing the model states", "N：共同分担模型状态的 rank 数"))
    ax.set_ylabel(caption("bytes per rank (model states)", "每个 rank 的字节数（模型状态）"))
    ax.set_title(caption(f"Ψ = {num_params:,.0f} parameters, Adam, {precision}",
                         f"Ψ = {num_params:,.0f} 个参数，Adam，{precision}"), fontsize=9)
    ax.legend(fontsize=7)
    bottom = 0.0
    for part, color in zip(PARTS, ("C0", "C1", "C2")):
        bar.bar(0, chosen[part], bottom=bottom, color=color,
                label=memory_part(part) + caption(": ", "：") + readable_bytes(chosen[part]))
        bottom += chosen[part]
    bar.set_xticks([0], [_stage(stage) + caption(", ", "，") + f"N = {devices}"], fontsize=8)
    bar.set_title(caption("per rank: ", "每个 rank：") + readable_bytes(chosen["total"]), fontsize=9)
    bar.set_ylim(0, 1.55 * chosen["total"])       # room above the bar: the legend stays inside the axes
    bar.legend(fontsize=7, loc="upper center")
    bar.set_yticks([])
    return fig


def _same_model(row: dict, num_params: float, precision: str) -> bool:
    mixed = row["compute dtype"] is not None
    return mlp_parameters(row["sizes"]) == num_params and mixed == (precision == "mixed")


def memory_per_rank_widget(measured: list[dict] | None = None):
    """Stage × devices × model size → the bytes of model states each rank holds; for the sizes
    this chapter ran (``measured``: rows of ``experiments.sharding.memory_and_traffic``), the
    measured bytes as dots."""
    import ipywidgets as widgets

    sizes = sorted({mlp_parameters(r["sizes"]) for r in measured or []})
    options = [(say(f"{psi:,} (measured)", f"{psi:,}（实测）"), psi) for psi in sizes] + [
        (label, value) for label, value in (("125 M", 125e6), ("1.3 B", 1.3e9),
                                            (say("7.5 B (ZeRO paper)", "7.5 B（ZeRO 论文）"), 7.5e9),
                                            ("70 B", 70e9), ("175 B", 175e9))]
    controls = {"stage": widgets.ToggleButtons(options=[(f"{s}", s) for s in STAGES], value=3,
                                               description=say("stage", "阶段")),
                "devices": widgets.SelectionSlider(options=[1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024], value=64,
                                                   description=say("N ranks", "N 个 rank")),
                "num_params": widgets.SelectionSlider(options=options, value=7.5e9, description="Ψ"),
                "precision": widgets.ToggleButtons(options=["fp32", "mixed"], value="mixed",
                                                   description=say("precision", "精度"))}
    controls["num_params"].layout = widgets.Layout(width="560px")
    # The Ψ slider on a row of its own: its readout ("7.5 B (ZeRO paper)") is wider than the slot
    # ipywidgets gives it and would run over a control placed after it.
    return interactive_figure(controls, [["stage", "precision"], ["devices"], ["num_params"]],
                              lambda **v: memory_per_rank_figure(measured=measured, **v), slow=True)
