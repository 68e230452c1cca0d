"""Chapter 10: why attention's activations grow with the sequence, the ring's K/V rotation step
by step, the causal mask under the contiguous and zigzag splits with the work per rank, and a
calculator (method × ranks × sequence length → activation memory per rank and bytes sent per
block) with the points this chapter measured."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter

from .. import costmodel
from ..language import say
from . import caption, interactive_figure
from .sharding import readable_bytes

METHODS = {"megatron-sp": "Megatron SP", "ring": "ring attention", "ulysses": "Ulysses"}
METHODS_ZH = {"megatron-sp": "Megatron SP", "ring": "环形注意力", "ulysses": "Ulysses"}
MODELS = {"this chapter's block": dict(hidden=48, heads=12, batch=2, bytes_per_value=8),
          "width 4096, 32 heads, bf16": dict(hidden=4096, heads=32, batch=1, bytes_per_value=2)}
MODELS_ZH = {"this chapter's block": "本章的块", "width 4096, 32 heads, bf16": "宽 4096，32 个头，bf16"}


def method_name(method: str) -> str:
    return caption(METHODS[method], METHODS_ZH[method])


def model_name(model: str) -> str:
    return caption(model, MODELS_ZH[model])
MASKED = (0.85, 0.85, 0.85)        # the grey of the future, under the causal mask
LAYOUTS_ZH = {"contiguous": "连续", "zigzag": "之字形"}


def rank_colour(rank: int, faded: bool = False) -> tuple[float, float, float]:
    colour = np.array(plt.get_cmap("tab10")(rank % 10)[:3])
    return tuple(1 - 0.3 * (1 - colour)) if faded else tuple(colour)


# ============================================================ activations grow with s
def activation_growth_figure(rows: list[dict]):
    """Bytes one block keeps for backward against the sequence length (log-log): measured dots
    (``rows``: seq_len, kept, attention), the formulas of costmodel as lines."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    grid = np.geomspace(16, 1024, 30)
    size = MODELS["this chapter's block"]
    lines = {"formula": (caption("attention written out: keeps the s × s softmax", "逐步写出的注意力：保存 s × s 的 softmax"),
                         "C3", lambda s: costmodel.gpt_block_activations(s, fused_attention=False, **size)),
             "fused": (caption("fused attention kernel, one rank", "融合的注意力核，一个 rank"), "C0",
                       lambda s: costmodel.gpt_block_activations(s, **size)),
             "ring": (caption("ring attention, per rank of 4", "环形注意力，4 个 rank 中每个"), "C2",
                      lambda s: costmodel.sequence_parallel_activations(
                 s, size["batch"], size["hidden"], size["heads"], 4, "ring", bytes_per_value=size["bytes_per_value"]))}
    for key, (label, colour, formula) in lines.items():
        ax.loglog(grid, [formula(int(s)) for s in grid], color=colour, label=label)
        points = [r for r in rows if r["attention"] == key]
        ax.plot([r["seq_len"] for r in points], [r["kept"] for r in points], "o", color=colour, mfc="none", mew=1.5)
    ax.plot([], [], "o", color="k", mfc="none", label=caption("measured here (saved-tensor hooks)", "本机实测（保存张量钩子）"))
    ax.minorticks_off()
    ax.set_xlabel(caption("sequence length s", "序列长度 s"))
    ax.set_ylabel(caption("bytes kept for backward", "为反向保存的字节数"))
    ax.set_title(caption("one block of this chapter's GPT (width 48, 12 heads, batch 2, float64)",
                         "本章 GPT 的一个块（宽 48，12 个头，批量 2，float64）"), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ============================================================ the ring, step by step
def _schedule_image(schedule: list[list[dict]], seq_len: int, upto: int, causal: bool = True,
                    fade: bool = True) -> np.ndarray:
    """An s × s picture (queries down, keys across): the scores computed at step ``upto`` in the
    colour of the rank that computes them, those of earlier steps faded (``fade``), the future grey;
    a future score inside a computed rectangle (computed, then masked) in the rank's colour greyed."""
    image = np.ones((seq_len, seq_len, 3))
    if causal:
        image[np.triu(np.ones((seq_len, seq_len), dtype=bool), 1)] = MASKED
    for step, plan in enumerate(schedule[:upto + 1]):
        for rank, block in enumerate(plan):
            q, k = np.array(block["queries"], dtype=int), np.array(block["keys"], dtype=int)
            if len(q) and len(k):
                seen = (k[None, :] <= q[:, None]) if causal else np.ones((len(q), len(k)), dtype=bool)
                rows, cols = np.nonzero(seen)
                image[q[rows], k[cols]] = rank_colour(rank, faded=fade and step < upto)
                rows, cols = np.nonzero(~seen)           # counted as work, then masked
                image[q[rows], k[cols]] = (np.array(rank_colour(rank, faded=True)) + MASKED) / 2 - 0.1
    return image


def ring_rotation_figure(schedule: list[list[dict]], seq_len: int, causal: bool = True):
    """One panel per step of the ring: which scores each rank computes (its colour), with the
    K/V block it holds at that step (rank r holds rank (r − step) mod N's block)."""
    world = len(schedule[0])
    fig, axes = plt.subplots(1, len(schedule), figsize=(2.4 * len(schedule), 2.9))
    for step, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(_schedule_image(schedule, seq_len, step, causal), interpolation="nearest")
        held = ", ".join(f"{r}←{schedule[step][r]['source']}" for r in range(world))
        ax.set_title(caption(f"step {step}\nrank←K/V of: {held}", f"第 {step} 步\nrank←谁的 K/V：{held}"), fontsize=7.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption("keys →", "键 →"), fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel(caption("queries ↓", "查询 ↓"), fontsize=7)
    fig.suptitle(caption("ring attention, contiguous split: each rank's queries meet one K/V block per step "
                         "(faded: earlier steps; grey: the future, masked; greyed colour: computed, then masked)",
                         "环形注意力，连续切分：每一步，每个 rank 的查询遇到一个 K/V 块（浅色：之前的步；灰色：被掩码遮住的未来；"
                         "偏灰的颜色：算了，又被掩码）"),
                 fontsize=8.5)
    fig.tight_layout()
    return fig


def causal_split_figure(schedules: dict[str, list[list[dict]]], seq_len: int, counted: dict[str, list[int]],
                        formula: dict[str, list[float]]):
    """For each layout, the s × s scores coloured by the rank that computes them (all steps);
    right, the scores each rank computes, counted on the ring's plan (bars) and by the formula (marks)."""
    fig, axes = plt.subplots(1, len(schedules) + 1, figsize=(3.1 * (len(schedules) + 1) + 0.6, 3.2))
    for ax, (layout, schedule) in zip(axes, schedules.items()):
        ax.imshow(_schedule_image(schedule, seq_len, len(schedule) - 1, fade=False), interpolation="nearest")
        ax.set_title(caption(f"{layout} split\n(greyed colour: computed, then masked)",
                             f"{LAYOUTS_ZH.get(layout, layout)}切分\n（偏灰的颜色：算了，又被掩码）"), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption("keys →", "键 →"), fontsize=7)
        ax.set_ylabel(caption("queries ↓", "查询 ↓"), fontsize=7)
    bar = axes[-1]
    world = len(next(iter(counted.values())))
    width = 0.8 / len(counted)
    for i, (layout, work) in enumerate(counted.items()):
        xs = np.arange(world) + (i - (len(counted) - 1) / 2) * width
        bar.bar(xs, work, width, color=f"C{i}",
                label=caption(f"{layout}, counted", f"{LAYOUTS_ZH.get(layout, layout)}，计数"))
        bar.plot(xs, formula[layout], "k_", ms=12, mew=2)
    bar.plot([], [], "k_", ms=12, mew=2, label=caption("formula", "公式"))
    bar.set_xticks(range(world), [f"rank {r}" for r in range(world)], fontsize=8)
    bar.set_ylabel(caption("scores computed", "计算的分数个数"))
    bar.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ============================================================ the calculator
def feasible(method: str, world_size: int, heads: int) -> bool:
    """Megatron and Ulysses split the heads: they need N to divide the head count; the ring does not."""
    return method == "ring" or heads % world_size == 0


def _per_rank(method: str, seq_len: int, world_size: int, size: dict) -> tuple[float, float]:
    memory = costmodel.sequence_parallel_activations(seq_len, size["batch"], size["hidden"], size["heads"], world_size,
                                                     method, bytes_per_value=size["bytes_per_value"])
    sent = costmodel.sequence_parallel_bytes(seq_len, size["batch"], size["hidden"], world_size, method,
                                             bytes_per_value=size["bytes_per_value"])["total"]
    return memory, sent


WORLD_SIZES = [1, 2, 3, 4, 8, 16, 32, 64]


def _memory_lines(ax, chosen: str, world_size: int, size: dict) -> None:
    """Activation bytes per rank against s, each method that can run on N ranks."""
    grid = np.unique(np.geomspace(16, 2 ** 20, 40).round().astype(int))
    one = [costmodel.gpt_block_activations(int(s), size["batch"], size["hidden"], size["heads"],
                                           bytes_per_value=size["bytes_per_value"]) for s in grid]
    ax.loglog(grid, one, "k--", lw=1, label=caption("one rank, no split", "一个 rank，不切分"))
    for i, method in enumerate(METHODS):
        if feasible(method, world_size, size["heads"]):
            ax.loglog(grid, [_per_rank(method, int(s), world_size, size)[0] for s in grid], label=method_name(method),
                      color=f"C{i}", lw=2.5 if method == chosen else 1, alpha=1 if method == chosen else 0.6)


def _bytes_lines(ax, chosen: str, seq_len: int, size: dict) -> None:
    """Bytes each rank sends per block against N, each method where it can run."""
    for i, method in enumerate(METHODS):
        ns = [n for n in WORLD_SIZES if n > 1 and feasible(method, n, size["heads"])]
        ax.plot(ns, [_per_rank(method, seq_len, n, size)[1] for n in ns], "-", marker=".", label=method_name(method),
                    color=f"C{i}", lw=2.5 if method == chosen else 1, alpha=1 if method == chosen else 0.6)


def _measured_points(ax_memory, ax_bytes, measured: list[dict], world_size: int, seq_len: int) -> None:
    for i, method in enumerate(METHODS):
        mine = [r for r in measured if r["method"] == method]
        memory = [r for r in mine if r["N"] == world_size]
        ax_memory.plot([r["seq_len"] for r in memory], [r["kept"] for r in memory], "o", mfc="none", mec=f"C{i}", mew=1.5)
        sent = [r for r in mine if r["seq_len"] == seq_len]
        ax_bytes.plot([r["N"] for r in sent], [r["sent forward"] + r["sent backward"] for r in sent], "o", mfc="none",
                      mec=f"C{i}", mew=1.5)
    for ax in (ax_memory, ax_bytes):
        ax.plot([], [], "o", mfc="none", mec="k", label=caption("measured here", "本机实测"))


def sequence_calculator_figure(method: str = "ring", world_size: int = 4, seq_len: int = 4096,
                               model: str = "this chapter's block", measured: list[dict] | None = None):
    """Left: activation bytes per rank of one block against s, each method at N ranks (the
    chosen one bold), one rank unsplit dashed. Right: bytes each rank sends per block (forward +
    backward) against N, at s. Dots: what this chapter measured, for its own block."""
    size = MODELS[model]
    fig, (ax_memory, ax_bytes) = plt.subplots(1, 2, figsize=(10, 3.7))
    _memory_lines(ax_memory, method, world_size, size)
    _bytes_lines(ax_bytes, method, seq_len, size)
    if model == "this chapter's block" and measured:
        _measured_points(ax_memory, ax_bytes, measured, world_size, seq_len)
    ax_memory.axvline(seq_len, color="k", ls=":", lw=1)
    ax_bytes.axvline(world_size, color="k", ls=":", lw=1)
    ax_memory.set(xlabel=caption("sequence length s", "序列长度 s"),
                  title=caption(f"activations per rank, one block: N = {world_size}, {model}",
                                f"每个 rank 的激活值，一个块：N = {world_size}，{MODELS_ZH[model]}"))
    ax_bytes.set(xlabel=caption("N, ranks sharing each sequence", "N：分担每条序列的 rank 数"),
                 title=caption(f"bytes sent per rank, one block (fwd + bwd): s = {seq_len:,}",
                               f"每个 rank 发送的字节数，一个块（前向 + 反向）：s = {seq_len:,}"))
    ax_bytes.set_xscale("log", base=2)
    ax_bytes.set_xticks([2, 4, 8, 16, 32, 64], ["2", "4", "8", "16", "32", "64"])
    ax_bytes.set_ylim(bottom=0)
    for ax in (ax_memory, ax_bytes):
        ax.minorticks_off()
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: readable_bytes(value)))
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    _readout(method, world_size, seq_len, size)
    fig.tight_layout()
    return fig


def _readout(method: str, world_size: int, seq_len: int, size: dict) -> None:
    if not feasible(method, world_size, size["heads"]):
        print(say(f"✘ {METHODS[method]} splits the heads: {size['heads']} heads do not divide among {world_size} ranks",
                  f"✘ {METHODS_ZH[method]} 切分的是注意力头：{size['heads']} 个头不能均分给 {world_size} 个 rank"))
        return
    memory, sent = _per_rank(method, seq_len, world_size, size)
    one = costmodel.gpt_block_activations(seq_len, size["batch"], size["hidden"], size["heads"],
                                          bytes_per_value=size["bytes_per_value"])
    memory, one, sent = readable_bytes(memory), readable_bytes(one), readable_bytes(sent)
    print(say(f"{METHODS[method]}, N = {world_size}, s = {seq_len:,}: {memory} of activations per rank and block "
              f"(one rank unsplit: {one}); sends {sent} per block",
              f"{METHODS_ZH[method]}，N = {world_size}，s = {seq_len:,}：每个 rank 每个块的激活值 {memory}"
              f"（一个 rank 不切分时：{one}）；每个块发送 {sent}"))


def sequence_calculator_widget(measured: list[dict] | None = None):
    """Method × ranks × sequence length (× model) → activation memory per rank and bytes sent per
    block, with this chapter's measured points (rows of ``experiments.long_sequences.memory_and_traffic``)."""
    import ipywidgets as widgets

    ran = sorted({r["seq_len"] for r in measured or []})      # the lengths measured here, then powers of 2
    lengths = ran + [2 ** k for k in range(4, 21) if 2 ** k > max(ran, default=0)]
    controls = {"method": widgets.ToggleButtons(options=[(say(METHODS[m], METHODS_ZH[m]), m) for m in METHODS],
                                                value="ring", description=say("method", "方法")),
                "world_size": widgets.SelectionSlider(options=WORLD_SIZES, value=4,
                                                      description=say("N ranks", "N 个 rank")),
                "seq_len": widgets.SelectionSlider(options=lengths, value=ran[-1] if ran else 4096, description="s"),
                "model": widgets.ToggleButtons(options=[(say(m, MODELS_ZH[m]), m) for m in MODELS],
                                               description=say("model", "模型"))}
    return interactive_figure(controls, [["method"], ["world_size", "seq_len"], ["model"]],
                              lambda **v: sequence_calculator_figure(measured=measured, **v), slow=True)
