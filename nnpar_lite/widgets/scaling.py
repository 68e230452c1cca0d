"""Chapter 07: communication costs, heterogeneous workers, memory."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .. import costmodel
from ..experiments.scaling import heterogeneous_comparison
from . import interactive_figure


def calibration_figure(measured: dict[int, float], alpha: float, beta: float, held_out: int | None = None,
                       world_size: int = 2):
    sizes = np.array(sorted(measured))
    fig, ax = plt.subplots(figsize=(6, 3.4))
    fitted = [n for n in sizes if n != held_out]
    ax.loglog(fitted, [measured[n] * 1e3 for n in fitted], "o", label="measured (fitted)")
    if held_out is not None:
        ax.loglog([held_out], [measured[held_out] * 1e3], "s", color="C3", ms=8, label="measured (held out)")
    grid = np.geomspace(sizes.min(), sizes.max(), 100)
    ax.loglog(grid, [costmodel.ring_allreduce_time(n, world_size, alpha, beta) * 1e3 for n in grid], "k-",
              label=f"ring model: α = {alpha * 1e6:.0f} µs, 1/β = {1 / beta / 1e9:.2f} GB/s")
    ax.set_xlabel("bytes all-reduced")
    ax.set_ylabel("ms")
    ax.set_title(f"dist.all_reduce, gloo, {world_size} processes on this machine", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def collectives_figure(alpha: float, beta: float, world_size: int = 8):
    """Predicted all-reduce time of the ring, the tree and a parameter server, by message size."""
    sizes = np.geomspace(1e2, 1e9, 120)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, formula in costmodel.ALLREDUCE_TIMES.items():
        ax.loglog(sizes, [formula(n, world_size, alpha, beta) for n in sizes], label=name)
    ax.set_xlabel("bytes per process")
    ax.set_ylabel("seconds (predicted)")
    ax.set_title(f"p = {world_size}, with the α and β measured here", fontsize=9)
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
            ax.text(0.02 * r["step"], i, f"n={n}", va="center", fontsize=8, color="w")
        ax.set_yticks(range(len(speeds)), [f"worker {i} (speed {s:g})" for i, s in enumerate(speeds)])
        ax.set_xlabel("time in one step (grey: waiting for the slowest)")
        ax.set_title(f"{'shards ∝ speed' if proportional else 'equal shards'}: step {r['step']:.1f}, "
                     f"idle {r['idle']:.0%}", fontsize=9)
    fig.tight_layout()
    return fig, results


def heterogeneous_widget():
    import ipywidgets as widgets

    def draw(**speeds):
        fig, results = heterogeneous_figure(list(speeds.values()))
        r = results["proportional"]
        print(f"shards ∝ speed {r['sizes']}: true mean loss {r['true loss']:.4f}, plain mean of shard losses "
              f"{r['plain mean of shard losses']:.4f}, weighted {r['weighted mean of shard losses']:.4f}")
        return fig

    controls = {f"speed_{i}": widgets.FloatSlider(value=v, min=0.25, max=8, step=0.25, description=f"speed {i}")
                for i, v in enumerate((1.0, 2.0, 4.0))}
    return interactive_figure(controls, [list(controls)], draw)


def memory_figure(num_params: float = 7e9, activation_bytes: float = 0.0, devices: int = 8,
                  precision: str = "fp32"):
    """Per-device training memory of one model under several ways of splitting it: its model
    states (weights, gradients, Adam's state), and activations when ``activation_bytes`` > 0."""
    layouts = {
        "1 device": dict(),
        f"data ×{devices}": dict(data_parallel=devices),
        f"ZeRO-1 ×{devices}": dict(data_parallel=devices, zero_stage=1),
        f"ZeRO-2 ×{devices}": dict(data_parallel=devices, zero_stage=2),
        f"ZeRO-3 ×{devices}": dict(data_parallel=devices, zero_stage=3),
        f"tensor ×{devices}": dict(tensor_parallel=devices),
        f"tensor ×2, pipeline ×2, ZeRO-1 ×{devices // 4}": dict(tensor_parallel=2, pipeline_parallel=2,
                                                               data_parallel=max(devices // 4, 1), zero_stage=1),
    }
    results = {name: costmodel.training_memory(num_params, precision=precision, optimizer="adam",
                                               activation_bytes=activation_bytes, **kw)
               for name, kw in layouts.items()}
    fig, ax = plt.subplots(figsize=(8, 3.4))
    left = np.zeros(len(results))
    parts = ("parameters", "gradients", "optimizer state") + (("activations",) if activation_bytes else ())
    for part, color in zip(parts, ("C0", "C1", "C2", "C7")):
        values = np.array([r[part] / 2 ** 30 for r in results.values()])
        ax.barh(list(results), values, left=left, color=color, label=part)
        left += values
    ax.axvline(80, color="k", ls=":", lw=1)
    ax.text(80, -0.6, " 80 GiB (one large GPU)", fontsize=7)
    ax.invert_yaxis()
    what = "model states and activations" if activation_bytes else "model states (activations left out)"
    ax.set_xlabel(f"GiB per device: {what}; Adam, {'mixed precision' if precision == 'mixed' else 'float32'}")
    ax.set_title(f"training a {num_params / 1e9:g}B-parameter model", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig, results


def memory_widget():
    """Model size and number of devices → memory per device under each way of splitting."""
    import ipywidgets as widgets

    controls = {"billions": widgets.FloatLogSlider(value=7, base=10, min=-1, max=3, step=0.1, description="B params"),
                "devices": widgets.SelectionSlider(options=[4, 8, 16, 32, 64], value=8, description="devices")}
    return interactive_figure(controls, [["billions", "devices"]],
                              lambda billions, devices: memory_figure(billions * 1e9, 0.0, devices)[0])
