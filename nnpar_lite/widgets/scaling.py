"""Chapters 07 and 10: communication costs, heterogeneous workers, training memory."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np

from .. import costmodel
from ..experiments.scaling import heterogeneous_comparison
from ..language import say
from . import caption, interactive_figure, memory_part

LAYOUT_WORDS = ((r"(\d+) devices?", r"\1 个设备"), (r"sequence parallel", "序列并行"), (r"data", "数据并行"),
                (r"tensor", "张量并行"), (r"pipeline", "流水线并行"), (r", ", "，"))


def layout_name(english: str) -> str:
    """A layout of costmodel.memory_by_layout ("tensor ×2, pipeline ×2, ZeRO-1 ×2") in the figure's language."""
    chinese = english
    for pattern, words in LAYOUT_WORDS:
        chinese = re.sub(pattern, words, chinese)
    return caption(english, chinese)


def calibration_figure(measured: dict[int, float], alpha: float, beta: float, held_out: int | None = None,
                       world_size: int = 2):
    """Measured all-reduce times (medians) against the ring model fitted to them, one size held out."""
    sizes = np.array(sorted(measured))
    fig, ax = plt.subplots(figsize=(6, 3.4))
    fitted = [n for n in sizes if n != held_out]
    ax.loglog(fitted, [measured[n] * 1e3 for n in fitted], "o", label=caption("measured (fitted)", "实测（用于拟合）"))
    if held_out is not None:
        ax.loglog([held_out], [measured[held_out] * 1e3], "s", color="C3", ms=8,
                  label=caption("measured (held out)", "实测（留出检验）"))
    grid = np.geomspace(sizes.min(), sizes.max(), 100)
    ax.loglog(grid, [costmodel.ring_allreduce_time(n, world_size, alpha, beta) * 1e3 for n in grid], "k-",
              label=caption("ring model", "环形模型") + f": α = {alpha * 1e6:.0f} µs, 1/β = {1 / beta / 1e9:.2f} GB/s")
    ax.set_xlabel(caption("bytes all-reduced", "全归约的字节数"))
    ax.set_ylabel(caption("ms", "毫秒"))
    ax.set_title(caption(f"dist.all_reduce, gloo, {world_size} processes on this machine",
                         f"dist.all_reduce，gloo，本机上 {world_size} 个进程"), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def collectives_figure(alpha: float, beta: float, world_size: int = 8):
    """Predicted all-reduce time of the ring, the binomial tree and a parameter server (one
    server, and the keys sharded over as many servers as workers), by message size."""
    sizes = np.geomspace(1e2, 1e9, 120)
    labels = {"ring": caption("ring", "环"), "tree": caption("binomial tree (unpipelined)", "二项树（不分段流水）"),
              "parameter server": caption("parameter server (one server)", "参数服务器（一台服务器）")}
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, formula in costmodel.ALLREDUCE_TIMES.items():
        ax.loglog(sizes, [formula(n, world_size, alpha, beta) for n in sizes], label=labels.get(name, name),
                  lw=3 if name == "ring" else 1.5)
    ax.loglog(sizes, [costmodel.parameter_server_time(n, world_size, alpha, beta, servers=world_size) for n in sizes],
              "--", color="C3", label=caption(f"parameter server, keys sharded over {world_size} servers (= ring here)",
                                              f"参数服务器，键分片到 {world_size} 台服务器（此处等同于环）"))
    ax.set_xlabel(caption("bytes per process", "每个进程的字节数"))
    ax.set_ylabel(caption("seconds (predicted)", "秒（预测）"))
    ax.set_title(caption(f"p = {world_size} processes", f"p = {world_size} 个进程")
                 + f", α = {alpha * 1e6:.3g} µs, 1/β = {1 / beta / 1e9:.3g} GB/s", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def heterogeneous_figure(speeds=(1.0, 2.0, 4.0), global_batch: int = 120):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
    results = heterogeneous_comparison(speeds, global_batch)
    for ax, proportional in zip(axes, (False, True)):
        r = results["proportional" if proportional else "equal"]
        for i, (c, n) in enumerate(zip(r["compute"], r["sizes"])):
            ax.barh(i, c, color="C0")
            ax.barh(i, r["step"] - c, left=c, color="lightgrey")
            ax.text(0.02 * r["step"], i, f"n={n}", va="center", fontsize=8)
        ax.set_yticks(range(len(speeds)), [caption(f"worker {i} (speed {s:g})", f"计算单元 {i}（速度 {s:g}）")
                                           for i, s in enumerate(speeds)], fontsize=8)
        ax.set_xlabel(caption("time in one step (grey: waiting for the slowest)", "一步中的时间（灰色：等待最慢者）"))
        split = caption("shards ∝ speed", "分片 ∝ 速度") if proportional else caption("equal shards", "等大分片")
        ax.set_title(caption(f"{split}: step {r['step']:.1f}, idle {r['idle']:.0%}",
                             f"{split}：每步 {r['step']:.1f}，空闲 {r['idle']:.0%}"), fontsize=9)
    fig.subplots_adjust(left=0.17, right=0.98, bottom=0.18, top=0.9, wspace=0.12)  # fixed: faster than tight_layout
    return fig, results


def heterogeneous_widget():
    import ipywidgets as widgets

    def draw(**speeds):
        fig, results = heterogeneous_figure(list(speeds.values()))
        r = results["proportional"]
        true, plain, weighted = r["true loss"], r["plain mean of shard losses"], r["weighted mean of shard losses"]
        print(say(f"shards ∝ speed {r['sizes']}: true mean loss {true:.4f}, plain mean of shard losses {plain:.4f}, "
                  f"weighted {weighted:.4f}",
                  f"分片 ∝ 速度 {r['sizes']}：真实平均损失 {true:.4f}，各分片损失的简单平均 {plain:.4f}，加权平均 {weighted:.4f}"))
        return fig

    controls = {f"speed_{i}": widgets.FloatSlider(value=v, min=0.25, max=8, step=0.25,
                                                  description=say(f"speed {i}", f"速度 {i}"))
                for i, v in enumerate((1.0, 2.0, 4.0))}
    return interactive_figure(controls, [list(controls)], draw, slow=True)


def memory_figure(num_params: float = 7e9, activation_bytes: float = 0.0, devices: int = 8,
                  precision: str = "fp32", device_gb: float = 80):
    """Per-device training memory (GB, 10⁹ bytes) of one model under several ways of splitting
    it over ``devices`` devices: its model states (weights, gradients, Adam's state) in fp32 or
    mixed precision, and the activations of the global batch when ``activation_bytes`` > 0."""
    results = costmodel.memory_by_layout(num_params, devices, precision, activation_bytes)
    height = 0.4 * len(results) + 1.5
    fig, ax = plt.subplots(figsize=(8, height))
    fig.subplots_adjust(left=0.3, right=0.97, bottom=0.75 / height, top=1 - 0.45 / height)  # fixed: faster than tight_layout
    left = np.zeros(len(results))
    parts = ("parameters", "gradients", "optimizer state") + (("activations",) if activation_bytes else ())
    for part, color in zip(parts, ("C0", "C1", "C2", "C7")):
        values = np.array([r[part] / 1e9 for r in results.values()])
        ax.barh([layout_name(name) for name in results], values, left=left, color=color, label=memory_part(part))
        left += values
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:,.1f}", va="center", fontsize=7)
    ax.axvline(device_gb, color="k", ls=":", lw=1)
    ax.text(device_gb, -0.62, f" {device_gb:g} GB" + caption(": one large GPU", "：一块大显存 GPU"), fontsize=7)
    ax.set_xlim(0, max(left.max() * 1.12, device_gb * 1.5))
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    what = caption("model states and activations", "模型状态与激活值") if activation_bytes else \
        caption("model states (activations left out)", "模型状态（不含激活值）")
    kind = caption("mixed precision, 2 + 2 + 12 bytes per parameter", "混合精度，每个参数 2 + 2 + 12 字节") \
        if precision == "mixed" else caption("fp32, 4 + 4 + 8 bytes per parameter", "fp32，每个参数 4 + 4 + 8 字节")
    ax.set_xlabel(caption(f"GB per device (10⁹ bytes): {what}\nAdam, {kind}", f"每个设备的 GB（十亿字节）：{what}\nAdam，{kind}"),
                  fontsize=8)
    ax.set_title(caption(f"training a {num_params / 1e9:g} B-parameter model on {devices} devices",
                         f"在 {devices} 个设备上训练 {num_params / 1e9:g} B 参数的模型"), fontsize=9, pad=12)
    ax.legend(fontsize=7, loc="lower right")
    return fig, results


MODEL_BILLIONS, DEVICE_COUNTS = costmodel.MODEL_BILLIONS, costmodel.DEVICE_COUNTS   # the sliders' choices


def memory_widget():
    """Model size, number of devices and precision → model states per device under each way
    of splitting (activations left out)."""
    import ipywidgets as widgets

    controls = {"billions": widgets.SelectionSlider(options=MODEL_BILLIONS, value=7,
                                                    description=say("B params", "参数（B）")),
                "devices": widgets.SelectionSlider(options=DEVICE_COUNTS, value=8, description=say("devices", "设备数")),
                "precision": widgets.ToggleButtons(options=["fp32", "mixed"], value="fp32",
                                                   description=say("precision", "精度"))}
    return interactive_figure(controls, [["billions", "devices"], ["precision"]],
                              lambda billions, devices, precision: memory_figure(
                                  billions * 1e9, 0.0, devices, precision)[0])
