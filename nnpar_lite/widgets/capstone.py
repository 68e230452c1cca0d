"""Chapter 12: the mesh (which rank holds what, which group each collective uses), the loss
curves of one process and the mesh, and a layout's predicted memory, bubble, bytes and step time."""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

from .. import costmodel, rank_budget
from ..data import char_vocabulary
from ..mesh import Mesh
from ..language import say
from . import caption, interactive_figure, memory_part

GROUP_COLOURS = {"tp": "C0", "pp": "C1", "dp": "C2", "embedding": "C3"}
MEMORY_PARTS = ("parameters", "gradients", "optimizer state", "activations")


def program_sizes() -> SimpleNamespace:
    """The sizes of train_gpt's GPT with its default arguments (what the formulas read of a GPTConfig)."""
    return SimpleNamespace(vocab_size=len(char_vocabulary()), block_size=16, n_layer=4, n_head=4, n_embd=32,
                           tie_weights=True)


def _holds(config, mesh: Mesh, stage: int) -> str:
    layers = list(range(stage * config.n_layer // mesh.pp, (stage + 1) * config.n_layer // mesh.pp))
    parts = ["wte, wpe"] if stage == 0 else []
    parts.append(caption(f"blocks {layers[0]}–{layers[-1]}", f"块 {layers[0]}–{layers[-1]}") if len(layers) > 1
                 else caption(f"block {layers[0]}", f"块 {layers[0]}"))
    if mesh.tp > 1:
        parts[-1] += f" (1/{mesh.tp})"
    if stage == mesh.pp - 1:
        parts.append("ln_f, head" + (caption(" (wte copy)", "（wte 副本）") if mesh.pp > 1 and config.tie_weights else ""))
    return "\n".join(parts)


def mesh_figure(dp: int = 2, tp: int = 2, pp: int = 2, config=None):
    """Every rank as a box at (replica d, stage p, tp rank t) with what it holds, and the four
    kinds of groups: tp (boxed together: f and g all-reduce activations), pp (arrows: send and
    receive activations and their gradients), dp (dashed: all-reduce gradients) and the tied
    embedding's first and last stage (dotted: all-reduce its gradient)."""
    config, mesh = config or program_sizes(), Mesh(dp=dp, tp=tp, pp=pp)
    fig, ax = plt.subplots(figsize=(1.0 + 2.2 * dp * pp + 0.8 * dp, 1.2 + 1.3 * tp))
    where = {r: (mesh.coordinates(r)["dp"] * (pp + 0.55) + mesh.coordinates(r)["pp"], -mesh.coordinates(r)["tp"])
             for r in range(mesh.world_size)}
    for r, (x, y) in where.items():
        c = mesh.coordinates(r)
        ax.add_patch(FancyBboxPatch((x - 0.4, y - 0.38), 0.8, 0.76, boxstyle="round,pad=0.02", fc="white", ec="k",
                                    zorder=2))
        ax.text(x, y + 0.22, f"rank {r}  ({c['dp']},{c['pp']},{c['tp']})", ha="center", fontsize=7, weight="bold")
        ax.text(x, y - 0.06, _holds(config, mesh, c["pp"]), ha="center", va="center", fontsize=6)
    _draw_groups(ax, mesh, where, tied=config.tie_weights)
    ax.set_xlim(-0.7, max(x for x, _ in where.values()) + 0.7)
    ax.set_ylim(-tp + 0.2, 0.95)
    ax.axis("off")
    ax.set_title(f"dp = {dp} × pp = {pp} × tp = {tp}: rank r = (d · {pp} + p) · {tp} + t", fontsize=9)
    ax.legend(handles=[plt.Line2D([], [], color=GROUP_COLOURS[k], ls=s, lw=2, label=label) for k, s, label in (
        ("tp", "-", caption("tp group: all-reduce activations (f, g)", "tp 组：对激活值做全归约（f、g）")),
        ("pp", "-", caption("pp group: send activations / gradients", "pp 组：发送激活值 / 梯度")),
        ("dp", "--", caption("dp group: all-reduce gradients", "dp 组：对梯度做全归约")),
        ("embedding", ":", caption("first + last stage: Σ tied wte gradient", "首个 + 最后一个阶段：绑定的 wte 梯度求和")))],
        fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def _draw_groups(ax, mesh: Mesh, where: dict, *, tied: bool) -> None:
    colours = GROUP_COLOURS
    for group in mesh.groups("tp") if mesh.tp > 1 else []:
        x, ys = where[group[0]][0], [where[r][1] for r in group]
        ax.add_patch(FancyBboxPatch((x - 0.46, min(ys) - 0.44), 0.92, max(ys) - min(ys) + 0.88,
                                    boxstyle="round,pad=0.02", fill=False, ec=colours["tp"], lw=2))
    for group in mesh.groups("pp"):
        for a, b in zip(group, group[1:]):
            (xa, ya), (xb, _) = where[a], where[b]
            ax.annotate("", (xb - 0.42, ya), (xa + 0.42, ya), arrowprops=dict(arrowstyle="<|-|>", color=colours["pp"]))
    for group in mesh.groups("dp") if mesh.dp > 1 else []:
        lift = 0.07 * mesh.coordinates(group[0])["pp"]              # one height per stage, so lines do not merge
        xs, ys = [where[r][0] for r in group], [where[r][1] - 0.33 + lift for r in group]
        # over the boxes, a dot in each member: a line passing over another stage's box does not end there
        ax.plot(xs, ys, ls="--", color=colours["dp"], lw=1.5, marker="o", ms=4, zorder=3)
    for first, last in mesh.groups("embedding") if tied else []:
        (xa, ya), (xb, _) = where[first], where[last]
        ax.annotate("", (xb, ya + 0.4), (xa, ya + 0.4), arrowprops=dict(
            arrowstyle="-", ls=":", color=colours["embedding"], lw=1.5, connectionstyle="arc3,rad=-0.25"))


def loss_figure(one_process: dict, runs: dict[str, dict]):
    """Left: the loss of every step, one process and each layout (the lines lie on each other).
    Right: each layout's largest relative gap to one process up to that step, against 10⁻⁵."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.3))
    steps = np.arange(len(one_process["losses"]))
    left.plot(steps, one_process["losses"], "k-", lw=4, alpha=0.3, label=caption("one process", "单进程"))
    for i, (label, run) in enumerate(runs.items()):
        n = len(run["losses"])
        left.plot(steps[:n], run["losses"], "o-", ms=3, lw=1, color=f"C{i}", label=label)
        gaps = np.abs(np.array(run["losses"]) - one_process["losses"][:n]) / np.array(one_process["losses"][:n])
        right.semilogy(steps[:n], np.maximum(np.maximum.accumulate(gaps), 1e-9), "o-", ms=3, color=f"C{i}")
    right.axhline(1e-5, color="k", ls="--", lw=1)
    right.text(0, 1.3e-5, "rtol 10⁻⁵", fontsize=7)
    left.set(xlabel=caption("step", "步"), ylabel=caption("mean loss of the global batch", "全局批量的平均损失"))
    right.set(xlabel=caption("step", "步"), ylabel=caption("largest relative gap so far", "迄今最大的相对差距"),
              ylim=(1e-9, 1e-3))
    left.legend(fontsize=7)
    fig.tight_layout()
    return fig


def layout_figure(dp: int = 2, tp: int = 2, pp: int = 1, micro_batches: int = 2, zero: bool = False,
                  optimizer: str = "adamw", *,
                  config=None, measured: list[dict] | None = None, alpha: float = 5e-5, beta: float = 1e-9,
                  compute_one: float = 0.02, cores: int | None = None, global_batch: int = 8):
    """The predicted memory of each stage's ranks and their bytes sent per step by dimension,
    the bubble and the step time; dots where a run of the same layout was measured."""
    config, mesh = config or program_sizes(), Mesh(dp=dp, tp=tp, pp=pp)
    problem = _layout_problem(config, mesh, micro_batches, global_batch)
    fig, (mem, sent) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    if problem:
        fig.text(0.5, 0.5, problem, ha="center", va="center", fontsize=10, color="C3", wrap=True)
        mem.axis("off"), sent.axis("off")
        return fig
    kw = dict(global_batch=global_batch, zero=int(zero))
    ranks = [mesh.rank(dp=0, pp=s, tp=0) for s in range(pp)]
    memory = [rank_budget.predicted_memory(config, mesh, r, micro_batches=micro_batches,
                                           optimizer=optimizer, **kw) for r in ranks]
    bytes_sent = [rank_budget.predicted_bytes_sent(config, mesh, r, **kw) for r in ranks]
    _memory_bars(mem, memory, optimizer)
    _sent_bars(sent, bytes_sent)
    layout = dict(dp=dp, tp=tp, pp=pp, micro_batches=micro_batches, zero=int(zero), optimizer=optimizer)
    _measured_dots(mem, sent, _matching(measured, layout), pp)
    step = rank_budget.predicted_step_time(config, mesh, micro_batches=micro_batches, compute_one=compute_one,
                                           alpha=alpha, beta=beta, cores=cores, **kw)
    bubble = costmodel.bubble_fraction(pp, micro_batches)
    fig.suptitle(caption(f"N = {mesh.world_size} ranks · bubble {bubble:.0%} · predicted step {step * 1e3:.0f} ms",
                         f"N = {mesh.world_size} 个 rank · 气泡 {bubble:.0%} · 预测每步 {step * 1e3:.0f} ms")
                 + _measured_time(_matching(measured, layout)), fontsize=9)
    fig.tight_layout()
    return fig


def _layout_problem(config, mesh: Mesh, micro_batches: int, global_batch: int) -> str:
    """Why this layout cannot run train_gpt's GPT and batch ('' when it can)."""
    if config.n_head % mesh.tp:
        return caption(f"{config.n_head} heads do not divide among tp = {mesh.tp} ranks",
                       f"{config.n_head} 个头不能均分给 tp = {mesh.tp} 个 rank")
    if config.n_layer % mesh.pp:
        return caption(f"{config.n_layer} layers do not divide into pp = {mesh.pp} stages",
                       f"{config.n_layer} 层不能均分为 pp = {mesh.pp} 个阶段")
    if global_batch % mesh.dp or global_batch // mesh.dp < micro_batches:
        return caption(f"a batch of {global_batch} does not split into dp = {mesh.dp} × {micro_batches} micro-batches",
                       f"大小为 {global_batch} 的批量不能分成 dp = {mesh.dp} × {micro_batches} 个微批次")
    return ""


def _memory_bars(ax, memory: list[dict], optimizer: str) -> None:
    bottom = np.zeros(len(memory))
    for i, part in enumerate(MEMORY_PARTS):
        values = np.array([m[part] for m in memory]) / 1024
        ax.bar(range(len(memory)), values, bottom=bottom, color=f"C{i}", label=memory_part(part))
        bottom += values
    ax.set_xticks(range(len(memory)), [caption(f"stage {s}", f"阶段 {s}") for s in range(len(memory))])
    ax.set_ylabel(caption(f"KiB per rank ({optimizer})", f"每个 rank 的 KiB（{optimizer}）"))
    ax.legend(fontsize=7)


def _sent_bars(ax, bytes_sent: list[dict]) -> None:
    width = 0.8 / len(bytes_sent)
    for s, sent in enumerate(bytes_sent):
        ax.bar(np.arange(4) + s * width, [sent[k] / 1024 for k in GROUP_COLOURS], width,
               color=[GROUP_COLOURS[k] for k in GROUP_COLOURS], alpha=1 - 0.5 * s / len(bytes_sent), ec="k")
    ax.set_xticks(np.arange(4) + 0.4 - width / 2, list(GROUP_COLOURS))
    ax.set_ylabel(caption("KiB sent per step, one bar per stage", "每步发送的 KiB，每个阶段一根柱"))


def _matching(measured: list[dict] | None, layout: dict) -> dict | None:
    return next((m for m in measured or [] if all(m["layout"].get(k) == v for k, v in layout.items())), None)


def _measured_dots(mem, sent, run: dict | None, pp: int) -> None:
    if run is None or "report" not in run:
        return
    for row in run["report"]:
        if row["dp"] == 0 and row["tp"] == 0:
            total = sum(row["measured"]["memory"][k] for k in MEMORY_PARTS) / 1024
            mem.plot(row["pp"], total, "kD", ms=6, label=caption("measured", "实测") if row["pp"] == 0 else None)
            for j, k in enumerate(GROUP_COLOURS):
                sent.plot(j + row["pp"] * 0.8 / pp, row["measured"]["sent"][k] / 1024, "kD", ms=5)
    mem.legend(fontsize=7)


def _measured_time(run: dict | None) -> str:
    if run is None:
        return ""
    median = statistics.median(run["step_seconds"][1:] or run["step_seconds"]) * 1e3
    return caption(f", measured {median:.0f} ms", f"，实测 {median:.0f} ms")


def layout_widget(config=None, measured: list[dict] | None = None, alpha: float = 5e-5, beta: float = 1e-9,
                  compute_one: float = 0.02, cores: int | None = None):
    """dp × tp × pp × micro-batches × ZeRO-1 → each stage's memory per rank, bytes per step,
    bubble and step time (α and β from chapter 07's fit; ``compute_one``: one process's step);
    the layouts run (``measured``: train_gpt's metrics with their report) as dots."""
    import ipywidgets as widgets

    sizes = dict(options=[1, 2, 4])
    controls = {"dp": widgets.SelectionSlider(value=2, description="dp", **sizes),
                "tp": widgets.SelectionSlider(value=2, description="tp", **sizes),
                "pp": widgets.SelectionSlider(value=1, description="pp", **sizes),
                "micro_batches": widgets.IntSlider(value=2, min=1, max=8, description=say("micro-batches", "微批次")),
                "zero": widgets.Checkbox(value=False, description="ZeRO-1"),
                "optimizer": widgets.ToggleButtons(options=["sgd", "adamw"], value="sgd",
                                                   description=say("optimizer", "优化器"))}
    return interactive_figure(controls, [["dp", "tp", "pp"], ["micro_batches", "zero", "optimizer"]], lambda **v: layout_figure(
        config=config, measured=measured, alpha=alpha, beta=beta, compute_one=compute_one, cores=cores, **v))
