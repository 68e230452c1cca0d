"""Chapter 11: the dispatch and the combine pictured from a real routing, the experts' load over
a training run with and without the load-balancing loss, and a widget: experts × top-k ×
capacity factor × ranks × router skew → load, dropped tokens and bytes sent."""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from ..experiments.experts import WIDGET_GRID, routing_table
from ..language import say
from . import caption, interactive_figure

GAP = 1.5           # rows of space between two ranks' bands, and between groups in a buffer


def expert_color(e: int, num_experts: int):
    return plt.get_cmap("tab10" if num_experts <= 10 else "tab20")(e % 20)


def _stack(ax, x: float, y: float, colors: list, width: float = 0.8, hatch: list | None = None) -> None:
    """A column of unit rows from y downwards, one colour each."""
    for i, color in enumerate(colors):
        ax.add_patch(Rectangle((x, y - i - 1), width, 1, fc=color, ec="k", lw=0.4,
                               hatch=(hatch[i] if hatch else None)))


def _send_groups(example: dict) -> list[list[list[int]]]:
    """groups[s][r]: the experts of the rows rank s sends rank r, in the order sent (by expert)."""
    per_rank = example["E"] // example["N"]
    groups = []
    for s, tokens in enumerate(example["ranks"]):
        rows = sorted(e for choices, kept in tokens for e, k in zip(choices, kept) if k)
        groups.append([[e for e in rows if e // per_rank == r] for r in range(example["N"])])
    return groups


def dispatch_figure(example: dict):
    """The two all-to-alls of expert parallelism for a small routing (``example``: N, E and,
    per rank, each token's chosen experts and whether each choice was kept): each rank's
    tokens, its send buffer sorted by expert and cut by destination rank, and the rows each
    rank receives, by source. The combine sends the same rows back along the same lines."""
    n, num_experts, groups = example["N"], example["E"], _send_groups(example)
    heights = [max(len(example["ranks"][r]), sum(len(g) for g in groups[r]) + GAP * (n - 1),
                   sum(len(groups[s][r]) for s in range(n)) + GAP * (n - 1)) for r in range(n)]
    fig, ax = plt.subplots(figsize=(9, 0.32 * (sum(heights) + GAP * n) + 1.2))
    top = 0.0
    for r in range(n):
        y_send = y_receive = top
        tokens = example["ranks"][r]
        for t, (choices, kept) in enumerate(tokens):
            for j, (e, k) in enumerate(zip(choices, kept)):
                width = 0.8 / len(choices)
                ax.add_patch(Rectangle((j * width, top - t - 1), width, 1, fc=expert_color(e, num_experts) if k
                                       else "white", ec="k", lw=0.4, hatch=None if k else "xx"))
            ax.text(-0.15, top - t - 0.5, f"t{t}", ha="right", va="center", fontsize=7)
        ax.text(-0.9, top - heights[r] / 2, f"rank {r}", ha="right", va="center", fontsize=9, weight="bold")
        for dest in range(n):                                 # the send buffer, one group per destination
            rows = groups[r][dest]
            _stack(ax, 3.0, y_send, [expert_color(e, num_experts) for e in rows])
            if rows:
                ax.text(3.9, y_send - len(rows) / 2, f"→ {dest}", va="center", fontsize=7)
            y_send -= len(rows) + GAP
        for source in range(n):                               # what arrives, one group per source
            rows = groups[source][r]
            _stack(ax, 7.0, y_receive, [expert_color(e, num_experts) for e in rows])
            if rows:
                ax.text(7.9, y_receive - len(rows) / 2, caption(f"from {source}", f"来自 {source}"), va="center",
                        fontsize=7)
            y_receive -= len(rows) + GAP
        top -= heights[r] + GAP
    _dispatch_lines(ax, groups, heights)
    _dispatch_labels(ax, example, top)
    return fig


def _dispatch_lines(ax, groups: list, heights: list) -> None:
    """A line from each group of a send buffer to where it lands, as thick as its rows."""
    n, tops = len(groups), np.concatenate([[0.0], -np.cumsum(np.array(heights) + GAP)])[:-1]
    for s in range(n):
        for r in range(n):
            rows = len(groups[s][r])
            if not rows:
                continue
            y0 = tops[s] - sum(len(groups[s][d]) + GAP for d in range(r)) - rows / 2
            y1 = tops[r] - sum(len(groups[q][r]) + GAP for q in range(s)) - rows / 2
            ax.plot([3.85 + 0.6, 7.0], [y0, y1], color="0.45", lw=0.6 + 0.6 * rows, alpha=0.55, zorder=0)


def _dispatch_labels(ax, example: dict, bottom: float) -> None:
    per_rank = example["E"] // example["N"]
    for x, text in ((0.4, caption("tokens and their k choices\n(crossed: dropped)", "词元及其 k 个选择\n（打叉：被丢弃）")),
                    (3.4, caption("send buffer,\nsorted by expert", "发送缓冲区，\n按专家排序")),
                    (7.4, caption("received,\nby source rank", "收到的行，\n按来源 rank"))):
        ax.text(x, 1.4, text, ha="center", va="bottom", fontsize=8)
    ax.text(5.6, 0.6, caption("dispatch: all-to-all →\n← combine: the same rows back", "分发：全对全 →\n← 合并：同样的行发回"),
            ha="center", fontsize=8, color="0.3")
    handles = [Rectangle((0, 0), 1, 1, fc=expert_color(e, example["E"]), ec="k", lw=0.4) for e in range(example["E"])]
    ax.legend(handles, [caption(f"expert {e} (rank {e // per_rank})", f"专家 {e}（rank {e // per_rank}）")
                        for e in range(example["E"])], fontsize=7,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xlim(-1.6, 9.2)
    ax.set_ylim(bottom, 3.2)
    ax.axis("off")


def load_figure(runs: list[dict], last: int = 20):
    """Left, one panel per run: what each expert of each layer was chosen for (bars, the mean
    over the last ``last`` steps), the part capacity dropped hatched, the capacity C as a line.
    Right: the share of assignments dropped at every step of each run."""
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(4.0 * (len(runs) + 1), 3.3))
    for ax in axes[1:-1]:
        ax.sharey(axes[0])
    for ax, run in zip(axes, runs):
        wanted, load = np.array(run["wanted"][-last:]).mean(0), np.array(run["load"][-last:]).mean(0)
        layers, num_experts = wanted.shape
        width = 0.8 / layers
        for layer in range(layers):
            x = np.arange(num_experts) + (layer - (layers - 1) / 2) * width
            ax.bar(x, load[layer], width, color=f"C{layer}",
                   label=caption(f"layer {layer}: computed", f"第 {layer} 层：计算"))
            ax.bar(x, wanted[layer] - load[layer], width, bottom=load[layer], color="white", ec=f"C{layer}",
                   hatch="///", label=caption(f"layer {layer}: dropped", f"第 {layer} 层：丢弃"))
        ax.axhline(run["capacity"], color="k", ls="--", lw=1,
                   label=caption("capacity", "容量") + f" C = {run['capacity']}")
        ax.set_xticks(range(num_experts))
        ax.set_xlabel(caption("expert", "专家"))
        ax.set_title(caption(f"α = {run['alpha']:g}: chosen per step (last {last} steps)",
                             f"α = {run['alpha']:g}：每步被选中的次数（最后 {last} 步）"), fontsize=9)
    axes[0].set_ylabel(caption("assignments per step", "每步的分配数"))
    axes[len(runs) - 1].legend(fontsize=7)
    for run in runs:
        share = np.array(run["dropped"]).sum(1) / (run["assignments"] * np.array(run["dropped"]).shape[1])
        axes[-1].plot(100 * share, label=f"α = {run['alpha']:g}")
    axes[-1].set_xlabel(caption("training step", "训练步"))
    axes[-1].set_ylabel(caption("% of assignments dropped", "被丢弃的分配（%）"))
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


@functools.lru_cache(maxsize=1)
def _default_table() -> tuple:
    return tuple(routing_table())


def routing_figure(table, experts: int = 8, top_k: int = 2, capacity_factor=1.25, ranks: int = 4, skew: float = 1.0):
    """One setting of :func:`nnpar_lite.experiments.experts.routing_table`: the experts' load
    (coloured by the rank that holds them; hatched: chosen but dropped; dashed: the N·C places
    the ranks give each expert) and the bytes each rank sends in one all-to-all, against the
    balanced formula. Prints the counts."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.3), gridspec_kw={"width_ratios": [1.6, 1]})
    if experts % ranks:
        return _no_split(fig, experts, ranks)
    row = next(r for r in table if (r["E"], r["k"], r["cf"], r["N"], r["skew"]) ==
               (experts, top_k, capacity_factor, ranks, skew))
    per_rank = experts // ranks
    colors = [plt.get_cmap("tab10")(e // per_rank % 10) for e in range(experts)]
    left.bar(range(experts), row["load"], color=colors)
    dropped = np.array(row["wanted"]) - np.array(row["load"])
    left.bar(range(experts), dropped, bottom=row["load"], color="white", ec="0.3", hatch="///",
             label=caption(f"chosen, then dropped: {row['dropped']:,}", f"选中后被丢弃：{row['dropped']:,}"))
    if row["capacity"] is not None:
        left.axhline(ranks * row["capacity"], color="k", ls="--", lw=1, label=f"N·C = {ranks} × {row['capacity']}")
    left.legend(fontsize=8)
    left.set_xlabel(caption("expert (colour: the rank that holds it)", "专家（颜色：持有它的 rank）"))
    left.set_ylabel(caption("tokens", "词元数"))
    left.set_title(caption(f"{WIDGET_GRID['tokens']:,} tokens, {row['assignments']:,} assignments",
                           f"{WIDGET_GRID['tokens']:,} 个词元，{row['assignments']:,} 次分配"), fontsize=9)
    mib = np.array(row["sent"]) / 2 ** 20
    right.bar(range(ranks), mib, color=[plt.get_cmap("tab10")(r % 10) for r in range(ranks)])
    right.axhline(row["balanced"] / 2 ** 20, color="k", ls="--", lw=1,
                  label=caption("T·k·(N−1)/N·d·bytes", "T·k·(N−1)/N·d·字节数"))
    right.set_xticks(range(ranks))
    right.set_xlabel("rank")
    right.set_ylabel(caption("MiB sent, one all-to-all", "一次全对全发送的 MiB"))
    right.legend(fontsize=8)
    right.set_title(f"d = {WIDGET_GRID['d_model']:,}, bf16", fontsize=9)
    fig.tight_layout()
    _print_counts(row, experts, mib)
    return fig


def _no_split(fig, experts: int, ranks: int):
    """The figure says, instead of drawing, that E experts do not split over N ranks."""
    for ax in fig.axes:
        ax.axis("off")
    fig.axes[0].text(0.5, 0.5, caption(f"{experts} experts do not split over {ranks} ranks:\nE must be a multiple of N",
                                       f"{experts} 个专家不能均分给 {ranks} 个 rank：\nE 必须是 N 的倍数"),
                     ha="center", va="center", fontsize=11, transform=fig.axes[0].transAxes)
    print(say(f"{experts} experts do not split over {ranks} ranks", f"{experts} 个专家不能均分给 {ranks} 个 rank"))
    return fig


def _print_counts(row: dict, experts: int, mib: np.ndarray) -> None:
    """What the routing figure shows, in numbers."""
    share = 100 * row["dropped"] / row["assignments"]
    dropped, assignments, busiest = f"{row['dropped']:,}", f"{row['assignments']:,}", f"{max(row['load']):,}"
    mean, balanced = f"{sum(row['load']) / experts:,.0f}", f"{row['balanced'] / 2 ** 20:.2f}"
    print(say(f"dropped {dropped} of {assignments} assignments ({share:.1f} %); busiest expert {busiest} tokens, "
              f"mean {mean}; most sent by a rank {max(mib):.2f} MiB, balanced formula {balanced} MiB",
              f"{assignments} 次分配中丢弃 {dropped} 次（{share:.1f} %）；最忙的专家 {busiest} 个词元，平均 {mean}；"
              f"单个 rank 最多发送 {max(mib):.2f} MiB，均衡公式 {balanced} MiB"))


def experts_widget(table=None):
    """Experts × top-k × capacity factor × ranks × router skew → the load, the drops and the
    bytes sent (``table``: :func:`routing_table`'s rows; computed once when not given)."""
    import ipywidgets as widgets

    table = _default_table() if table is None else table
    controls = {
        "experts": widgets.ToggleButtons(options=list(WIDGET_GRID["experts"]), value=8,
                                         description=say("experts E", "专家数 E")),
        "top_k": widgets.ToggleButtons(options=list(WIDGET_GRID["top_k"]), value=2, description="top-k"),
        "capacity_factor": widgets.SelectionSlider(options=[(say("none", "无"), None)] + [
            (f"{f:g}", f) for f in WIDGET_GRID["factors"][1:]], value=1.25, description=say("capacity", "容量因子")),
        "ranks": widgets.ToggleButtons(options=list(WIDGET_GRID["ranks"]), value=4,
                                       description=say("ranks N", "rank 数 N")),
        "skew": widgets.SelectionSlider(options=list(WIDGET_GRID["skews"]), value=1.0,
                                        description=say("router skew", "路由偏斜")),
    }
    return interactive_figure(controls, [["experts", "top_k"], ["capacity_factor", "ranks"], ["skew"]],
                              lambda **v: routing_figure(table, **v))
