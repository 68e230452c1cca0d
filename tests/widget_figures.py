"""Every figure function of nnpar_lite.widgets, called as its chapter calls it: with the
package's own runs where they take a second or less, otherwise with small inputs of the same
shape as the chapter's measured ones (a trace, timings, a sweep). tests/test_widgets.py draws
each in both editions."""

import numpy as np

from nnpar_lite import context_parallel as cp
from nnpar_lite import costmodel
from nnpar_lite.experiments import experts as expert_runs
from nnpar_lite.experiments.communication_efficiency import COMPRESSORS
from nnpar_lite.widgets import (article_code, background, capstone, communication_efficiency, data_parallel, experts,
                                long_sequences, model_averaging, model_split, scaling, sharding, spatial, start_here)


def _fsdp_trace() -> list[dict]:
    """One step of two FSDP units as rank 0 traces it: gather and free in forward; gather,
    reduce-scatter and free in backward."""
    events = [("all-gather", "0", "forward"), ("free", "0", "forward"), ("all-gather", "2", "forward"),
              ("free", "2", "forward"), ("all-gather", "2", "backward"), ("reduce-scatter", "2", "backward"),
              ("free", "2", "backward"), ("all-gather", "0", "backward"), ("reduce-scatter", "0", "backward"),
              ("free", "0", "backward")]
    held = [400, 0, 300, 0, 300, 300, 0, 400, 400, 0]
    return [{"event": e, "unit": u, "phase": p, "gathered bytes": b} for (e, u, p), b in zip(events, held)]


def _memory_table() -> list[dict]:
    rows = []
    for n in (2, 3):
        for stage in range(4):
            parts = {"parameters": 4000 / (n if stage == 3 else 1), "gradients": 4000 / (n if stage >= 2 else 1),
                     "optimizer state": 8000 / (n if stage >= 1 else 1)}
            rows.append({"stage": stage, "N": n, "precision": "fp32", **parts, "predicted": sum(parts.values())})
    return rows


def _overlap_timeline() -> dict:
    ready = [(f"w{i}", 0.001 * (i + 1)) for i in range(4)]
    return {"after backward": {"ready": ready, "communication": [("leaves", 0, 0.004), ("arrives", 0, 0.007)],
                               "end": 0.007},
            "overlapped": {"ready": ready, "communication": [("leaves", 0, 0.002), ("arrives", 0, 0.004),
                                                             ("leaves", 1, 0.004), ("arrives", 1, 0.005)],
                           "end": 0.005}}


def _compression_runs() -> dict:
    runs = {("exact", True): {"accuracy": [(0, 0.1), (50, 0.9)], "bytes per step": 40_000}}
    for i, name in enumerate(COMPRESSORS):
        for feedback in (True, False):
            runs[(name, feedback)] = {"accuracy": [(0, 0.1), (50, 0.8 - 0.05 * i - 0.1 * (not feedback))],
                                      "bytes per step": 400 * (i + 1)}
    return runs


def _staleness() -> tuple[dict, dict]:
    sweep = {"taus": [0, 1, 4, 16], "accuracy": {0.1: [0.9, 0.89, 0.85, 0.6], 0.3: [0.92, 0.9, 0.7, 0.2]}}
    taus = [0, 1, 2, 4]
    bound = [2 * np.sin(np.pi / (2 * (2 * t + 1))) for t in range(max(taus) + 1)]
    runs = {(t, lr): lr < bound[t] for t in taus for lr in (0.1, 0.5, 1.5)}
    return sweep, {"taus": taus, "bound": bound, "runs": runs}


def _causal_split() -> tuple:
    schedules = {layout: cp.ring_schedule(16, 4, layout) for layout in cp.LAYOUTS}
    counted = {layout: cp.ring_work(16, 4, layout) for layout in cp.LAYOUTS}
    formula = {layout: costmodel.causal_ring_work(16, 4, layout) for layout in cp.LAYOUTS}
    return schedules, 16, counted, formula


def _mesh_runs() -> tuple[dict, dict]:
    losses = [3.0, 2.5, 2.2, 2.0]
    return {"losses": losses}, {"dp 2 × tp 2": {"losses": [x * (1 + 1e-7) for x in losses]}}


FIGURES = {
    "start_here.loss_average_figure": lambda: start_here.loss_average_figure(3, 0.6),
    "article_code.training_figure": lambda: article_code.training_figure(3, 0.03, 200),
    "background.step_time_figure": lambda: background.step_time_figure(
        [{"flops": 1e8 * 4 ** i, "seconds": 1e-3 * 4 ** i, "width": 64 * 2 ** i} for i in range(4)], 1e11),
    "background.laws_figure": lambda: background.laws_figure(0.9, 64, measured={1: 1.0, 2: 1.8, 4: 3.1}),
    "data_parallel.six_steps_diagram": lambda: data_parallel.six_steps_diagram(3),
    "data_parallel.gradient_comparison_figure": lambda: data_parallel.gradient_comparison_figure(3, 0.6, "sum", False),
    "model_averaging.label_histogram_figure": lambda: model_averaging.label_histogram_figure(4, (None, 1.0, 0.1)),
    "model_averaging.compare_schemes_figure": lambda: model_averaging.compare_schemes_figure(4, 8, 0.1),
    "model_averaging.communication_accuracy_figure": lambda: model_averaging.communication_accuracy_figure(
        [{"bytes": 1e4 * h, "accuracy": {None: 0.9 - 0.01 * h, 0.1: 0.7 - 0.02 * h}, "H": h} for h in (1, 4, 16)]),
    "model_averaging.drift_figure": lambda: model_averaging.drift_figure({None: [0.1, 0.2, 0.3, 0.4, 0.5],
                                                                          0.1: [0.2, 0.4, 0.8, 1.2, 1.5]}),
    "model_split.pipeline_figure": lambda: model_split.pipeline_figure(4, 8, "1f1b"),
    "model_split.tensor_split_figure": lambda: model_split.tensor_split_figure(8, 6, 3),
    "spatial.halo_figure": lambda: spatial.halo_figure((3, 3), 9, 4),
    "spatial.halo_growth_figure": lambda: spatial.halo_growth_figure(96, 3),
    "scaling.calibration_figure": lambda: scaling.calibration_figure(
        {4096: 1e-4, 65536: 3e-4, 2 ** 20: 2e-3, 2 ** 24: 3e-2}, 5e-5, 1e-9, 65536),
    "scaling.collectives_figure": lambda: scaling.collectives_figure(5e-5, 1e-9, 8),
    "scaling.heterogeneous_figure": lambda: scaling.heterogeneous_figure((1.0, 2.0, 4.0)),
    "scaling.memory_figure": lambda: scaling.memory_figure(7e9, 40e9, 8, "mixed"),
    "sharding.fsdp_timeline_figure": lambda: sharding.fsdp_timeline_figure(_fsdp_trace()),
    "sharding.memory_figure": lambda: sharding.memory_figure(_memory_table()),
    "sharding.memory_per_rank_figure": lambda: sharding.memory_per_rank_figure(3, 8, 7e9, "mixed"),
    "communication_efficiency.overlap_timeline_figure": lambda: communication_efficiency.overlap_timeline_figure(
        _overlap_timeline()),
    "communication_efficiency.error_feedback_figure": lambda: communication_efficiency.error_feedback_figure(
        {("PowerSGD rank 2", True): [1 / t for t in range(1, 30)], ("top-k 1 %", False): [0.5] * 29}),
    "communication_efficiency.compression_tradeoff_figure": lambda: communication_efficiency.compression_tradeoff_figure(
        _compression_runs()),
    "communication_efficiency.hook_comparison_figure": lambda: communication_efficiency.hook_comparison_figure(
        {"ours": {"loss": [2.0, 1.5, 1.2], "bytes": [4000, 400, 400]},
         "torch hook": {"loss": [2.0, 1.5, 1.2], "bytes": [4000, 400, 400]}}, 2),
    "communication_efficiency.staleness_figure": lambda: communication_efficiency.staleness_figure(*_staleness()),
    "communication_efficiency.parameter_server_figure": lambda: communication_efficiency.parameter_server_figure(
        [{"worker": i % 3, "staleness": i % 4} for i in range(24)]),
    "communication_efficiency.compression_figure": lambda: communication_efficiency.compression_figure(
        "PowerSGD rank 1", False),
    "long_sequences.activation_growth_figure": lambda: long_sequences.activation_growth_figure(
        [{"seq_len": s, "kept": 1000 * s, "attention": a} for s in (32, 64) for a in ("formula", "fused", "ring")]),
    "long_sequences.ring_rotation_figure": lambda: long_sequences.ring_rotation_figure(
        cp.ring_schedule(16, 4, "contiguous"), 16),
    "long_sequences.causal_split_figure": lambda: long_sequences.causal_split_figure(*_causal_split()),
    "long_sequences.sequence_calculator_figure": lambda: long_sequences.sequence_calculator_figure(
        "ring", 4, 4096, "this chapter's block", [{"method": "ring", "N": 4, "seq_len": 4096, "kept": 2e6,
                                                  "sent forward": 1e5, "sent backward": 2e5}]),
    "experts.dispatch_figure": lambda: experts.dispatch_figure(expert_runs.dispatch_example()),
    "experts.load_figure": lambda: experts.load_figure(
        [expert_runs.balance_run(dict(expert_runs.BALANCE_RUN, steps=3), alpha) for alpha in (0.0, 0.1)], last=2),
    "experts.routing_figure": lambda: experts.routing_figure(experts._default_table()),
    "capstone.mesh_figure": lambda: capstone.mesh_figure(2, 2, 2),
    "capstone.loss_figure": lambda: capstone.loss_figure(*_mesh_runs()),
    "capstone.layout_figure": lambda: capstone.layout_figure(2, 2, 2, 2),
}

# Figures a setting can make say something else: each is drawn too.
CASES = {
    "experts.routing_figure, 6 experts on 4 ranks": lambda: experts.routing_figure(experts._default_table(), experts=6,
                                                                                   ranks=4),
    "capstone.layout_figure, 3 heads' worth of tp": lambda: capstone.layout_figure(1, 4, 1, 2, config=_odd_heads()),
    "scaling.memory_figure, fp32 model states": lambda: scaling.memory_figure(7e9, 0.0, 8, "fp32"),
    "model_split.pipeline_figure, GPipe": lambda: model_split.pipeline_figure(3, 4, "gpipe"),
}


def _odd_heads():
    config = capstone.program_sizes()
    config.n_head = 3
    return config


def figure(make) -> "object":
    """The figure a figure function made (some return (figure, what it computed))."""
    made = make()
    return made[0] if isinstance(made, tuple) else made
