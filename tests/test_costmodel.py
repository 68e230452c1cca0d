"""Cost formulas against hand-computed values; the fit; the calibrated prediction; memory."""

import re

import numpy as np
import pytest
import torch

from nnpar_lite import costmodel as cm
from nnpar_lite.experiments.scaling import measure_allreduce
from nnpar_lite.models import mlp
from nnpar_lite.distributed import launch


def test_ring_tree_and_parameter_server_cost_what_is_computed_by_hand():
    a, b = 1e-5, 1e-9
    assert cm.ring_allreduce_time(1e6, 4, a, b) == pytest.approx(6 * a + 1.5e6 * b)
    assert cm.tree_allreduce_time(1e6, 4, a, b) == pytest.approx(4 * (a + 1e6 * b))   # ⌈log₂ 4⌉ = 2
    assert cm.tree_allreduce_time(1e6, 5, a, b) == pytest.approx(6 * (a + 1e6 * b))   # ⌈log₂ 5⌉ = 3
    assert cm.parameter_server_time(1e6, 4, a, b) == pytest.approx(6 * (a + 1e6 * b))
    for f in cm.ALLREDUCE_TIMES.values():
        assert f(1e6, 1, a, b) == 0.0


def test_amdahl_and_gustafson_give_the_speedups_computed_by_hand():
    assert cm.amdahl_speedup(0.9, 10) == pytest.approx(1 / (0.1 + 0.09))
    assert cm.amdahl_speedup(1.0, 8) == 8 and cm.amdahl_speedup(0.0, 8) == 1
    assert cm.gustafson_speedup(0.9, 10) == pytest.approx(9.1)
    with pytest.raises(ValueError, match="parallel_fraction"):
        cm.amdahl_speedup(1.5, 2)


def test_a_step_adds_or_overlaps_compute_and_communication_and_efficiency_follows():
    assert cm.data_parallel_step_time(3.0, 1.0) == 4.0
    assert cm.data_parallel_step_time(3.0, 1.0, overlap=True) == 3.0
    assert cm.data_parallel_step_time(1.0, 3.0, overlap=True) == 3.0
    assert cm.scaling_efficiency(10.0, 5.0, 2) == 1.0 and cm.scaling_efficiency(10.0, 10.0, 2) == 0.5
    assert cm.overlap_hides_communication(2.0, 1.0) and not cm.overlap_hides_communication(1.0, 2.0)


@pytest.mark.parametrize("alpha, beta, p", [(2e-5, 1e-9, 2), (1e-4, 5e-10, 4), (3e-6, 2e-11, 8)])
def test_fit_recovers_known_alpha_and_beta(alpha, beta, p):
    sizes = np.geomspace(4e3, 6.4e7, 10)
    rng = np.random.default_rng(0)
    exact = np.array([cm.ring_allreduce_time(n, p, alpha, beta) for n in sizes])
    fitted = cm.fit_alpha_beta(sizes, exact, p)
    assert fitted == pytest.approx((alpha, beta), rel=1e-9)
    noisy = exact * rng.uniform(0.97, 1.03, len(sizes))          # 3 % noise: still close
    a, b = cm.fit_alpha_beta(sizes, noisy, p)
    assert a == pytest.approx(alpha, rel=0.1) and b == pytest.approx(beta, rel=0.1)


@pytest.mark.parametrize("sizes, times, p, word", [([1.0], [1.0], 2, "two"), ([1, 2], [1, -1], 2, "positive"),
                                                  ([1, 2], [1, 2], 1, "world_size")])
def test_the_fit_refuses_one_point_a_negative_time_and_one_process(sizes, times, p, word):
    with pytest.raises(ValueError, match=word):
        cm.fit_alpha_beta(sizes, times, p)


@pytest.mark.timing   # measured times depend on the machine's load: pytest -m timing
def test_calibrated_model_predicts_a_held_out_size_within_a_factor_of_1_5():
    held_out = 8 * 2 ** 20
    sizes = sorted([4096 * 4 ** i for i in range(8)] + [held_out])
    measured = launch(measure_allreduce, 2, sizes, 15, backend="gloo", timeout=120)[0]
    alpha, beta = cm.fit_alpha_beta([n for n in measured if n != held_out],
                                    [t for n, t in measured.items() if n != held_out], 2)
    ratio = cm.ring_allreduce_time(held_out, 2, alpha, beta) / measured[held_out]
    assert alpha > 0 and beta > 0
    assert 1 / 1.5 <= ratio <= 1.5, f"predicted/measured = {ratio:.2f} (α = {alpha:.2e}, β = {beta:.2e})"


@pytest.mark.parametrize("optimizer, state_key_count", [("adam", 2), ("sgd-momentum", 1)])
def test_memory_calculator_matches_torch_exactly(optimizer, state_key_count):
    model = mlp((64, 48, 32, 10))
    params = list(model.parameters())
    opt = torch.optim.Adam(params) if optimizer == "adam" else torch.optim.SGD(params, lr=0.1, momentum=0.9)
    torch.nn.functional.cross_entropy(model(torch.randn(8, 64)), torch.randint(0, 10, (8,))).backward()
    opt.step()
    measured = {
        "parameters": sum(p.numel() * p.element_size() for p in params),
        "gradients": sum(p.grad.numel() * p.grad.element_size() for p in params),
        "optimizer state": sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                               if torch.is_tensor(t)),
    }
    computed = cm.training_memory(sum(p.numel() for p in params), optimizer=optimizer, num_tensors=len(params))
    for part, value in measured.items():
        assert computed[part] == value, part
    full_size = [sum(torch.is_tensor(t) and t.shape == p.shape for t in opt.state[p].values()) for p in params]
    assert full_size == [state_key_count] * len(params)   # Adam's two moments, SGD's one momentum buffer


def test_zero_and_model_splits_divide_the_model_states_as_computed_by_hand():
    full = cm.training_memory(1000, optimizer="adam")
    assert full == {"parameters": 4000, "gradients": 4000, "optimizer state": 8000, "activations": 0, "total": 16000}
    z3 = cm.training_memory(1000, optimizer="adam", zero_stage=3, data_parallel=4)
    assert (z3["parameters"], z3["gradients"], z3["optimizer state"]) == (1000, 1000, 2000)
    z1 = cm.training_memory(1000, optimizer="adam", zero_stage=1, data_parallel=4)
    assert (z1["parameters"], z1["gradients"], z1["optimizer state"]) == (4000, 4000, 2000)
    tp = cm.training_memory(1000, optimizer="sgd", tensor_parallel=2, pipeline_parallel=2, activation_bytes=400,
                            sequence_parallel=True)
    assert tp == {"parameters": 1000, "gradients": 1000, "optimizer state": 0, "activations": 100, "total": 2100}
    with pytest.raises(ValueError, match="zero_stage"):
        cm.training_memory(10, zero_stage=4)
    with pytest.raises(ValueError, match="optimizer"):
        cm.training_memory(10, optimizer="lion")


def test_the_calculator_gives_figure_1_of_the_zero_paper():
    """Rajbhandari et al. 2020, figure 1: 7.5 B parameters, mixed-precision Adam (2Ψ + 2Ψ + 12Ψ),
    N_d = 64: 120, 31.4, 16.6 and 1.9 GB per device for ZeRO stages 0 to 3."""
    got = [cm.training_memory(7.5e9, precision="mixed", optimizer="adam", zero_stage=stage,
                              data_parallel=64)["total"] / 1e9 for stage in range(4)]
    assert [round(g, 1) for g in got] == [120.0, 31.4, 16.6, 1.9]


def test_sequence_parallelism_splits_what_tensor_parallelism_leaves_replicated():
    """Korthikanti et al. 2022: without sequence parallelism about 10 of a layer's 34 s·b·h bytes
    stay replicated on each of t devices; with it, all 34 are split."""
    A = 34e9
    without = cm.training_memory(1, tensor_parallel=8, activation_bytes=A)["activations"]
    with_sp = cm.training_memory(1, tensor_parallel=8, activation_bytes=A, sequence_parallel=True)["activations"]
    assert without == pytest.approx(10e9 + 24e9 / 8) and with_sp == pytest.approx(34e9 / 8)
    assert cm.training_memory(1, tensor_parallel=1, activation_bytes=A)["activations"] == A


def test_a_pipeline_stage_holds_the_micro_batches_its_schedule_keeps_at_once():
    """p = 4 stages, m = 8 micro-batches, no recomputation: each stage keeps its quarter of the
    layers; under GPipe all 8 micro-batches of it at once, under 1F1B stage 0 (the fullest)
    min(p, m) = 4 of them, half as many (costmodel.peak_activations, measured in chapter 05)."""
    gpipe = cm.training_memory(1, activation_bytes=800, pipeline_parallel=4, num_microbatches=8)["activations"]
    one_f_one_b = cm.training_memory(1, activation_bytes=800, pipeline_parallel=4, num_microbatches=8,
                                     schedule="1f1b")["activations"]
    assert gpipe == 200 and one_f_one_b == 100
    assert cm.training_memory(1, activation_bytes=800, pipeline_parallel=4, num_microbatches=2,
                              schedule="1f1b")["activations"] == 200          # m < p: all of them
    assert cm.training_memory(1, activation_bytes=800, num_microbatches=4, schedule="1f1b")["activations"] == 200
    with pytest.raises(ValueError, match="schedule"):
        cm.training_memory(1, activation_bytes=800, schedule="zero-bubble")


def test_data_parallel_replicas_each_hold_their_share_of_the_batch_activations():
    """With a fixed global batch, each of d replicas runs 1/d of it: activations shrink, model states do not."""
    one = cm.training_memory(1000, activation_bytes=800)
    four = cm.training_memory(1000, activation_bytes=800, data_parallel=4)
    assert four["activations"] == 200 and four["parameters"] == one["parameters"]


def test_a_sharded_parameter_server_divides_the_traffic():
    single = cm.parameter_server_time(1e6, 9, 1e-5, 1e-9)
    sharded = cm.parameter_server_time(1e6, 9, 1e-5, 1e-9, servers=4)
    assert single == pytest.approx(16 * (1e-5 + 1e-3)) and sharded == pytest.approx(16 * (1e-5 + 1e-3 / 4))


def test_mixed_precision_calculator_matches_the_tensors_torch_keeps():
    """bfloat16 weights and gradients (2 bytes, as fp16), Adam over an fp32 master copy: the tensors'
    numel × element_size add up to 2Ψ, 2Ψ and 12Ψ (+ Adam's step counters), as the calculator says."""
    model = mlp((64, 48, 32, 10)).to(torch.bfloat16)
    params = list(model.parameters())
    master = [p.detach().float().requires_grad_() for p in params]
    opt = torch.optim.Adam(master)
    torch.nn.functional.cross_entropy(model(torch.randn(8, 64, dtype=torch.bfloat16)).float(),
                                      torch.randint(0, 10, (8,))).backward()
    for p, m in zip(params, master):
        m.grad = p.grad.float()
    opt.step()
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    measured = {"parameters": sum(p.numel() * p.element_size() for p in params),
                "gradients": sum(p.grad.numel() * p.grad.element_size() for p in params),
                "optimizer state": sum(m.numel() * m.element_size() for m in master)
                + sum(t.numel() * t.element_size() for t in state)}
    computed = cm.training_memory(sum(p.numel() for p in params), precision="mixed", num_tensors=len(params))
    assert {part: computed[part] for part in measured} == measured


@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_the_chapters_tensor_count_agrees_with_the_calculator(precision):
    from nnpar_lite.experiments.scaling import tensor_bytes_after_one_step
    held = tensor_bytes_after_one_step((32, 24, 10), precision=precision, batch=4)
    computed = cm.training_memory(held["num_params"], precision=precision, num_tensors=held["num_tensors"])
    for part in ("parameters", "gradients", "optimizer state"):
        assert held[part] == computed[part], part
    with pytest.raises(ValueError, match="precision"):
        tensor_bytes_after_one_step(precision="fp16")


def test_synthetic_times_scatter_around_the_ring_model():
    from nnpar_lite.experiments.scaling import synthetic_allreduce_times
    sizes = np.geomspace(4096, 2 ** 26, 9)
    exact = [cm.ring_allreduce_time(n, 3, 2e-5, 1e-9) for n in sizes]
    assert np.array_equal(synthetic_allreduce_times(2e-5, 1e-9, 3, sizes), exact)
    noisy = synthetic_allreduce_times(2e-5, 1e-9, 3, sizes, noise=0.15, seed=1)
    ratio = noisy / exact
    assert np.all((ratio > 0.5) & (ratio < 2)) and ratio.std() > 0.03
    assert np.array_equal(noisy, synthetic_allreduce_times(2e-5, 1e-9, 3, sizes, noise=0.15, seed=1))


def test_measured_and_predicted_efficiency_match_a_hand_computation():
    """One process computes in 8 ms; two in 4 ms plus 4 ms of all-reduce: measured efficiency 1/2.
    The model with α = 0, 1/β = 1 GB/s: 2 · 1/2 · n β for n gradient bytes."""
    from nnpar_lite.experiments.scaling import efficiency_against_model
    timings = {1: {64: {"compute": 8e-3, "communication": 0.0}}, 2: {64: {"compute": 4e-3, "communication": 4e-3}}}
    result = efficiency_against_model(timings, 0.0, 1e-9, sizes=(10, 20, 5))
    n = 4 * (10 * 20 + 20 + 20 * 5 + 5)
    r = result[64]
    assert r["gradient bytes"] == n and r["predicted communication"] == pytest.approx(n * 1e-9)
    assert r["measured"] == pytest.approx(0.5)
    assert r["predicted"] == pytest.approx(8e-3 / (2 * (4e-3 + n * 1e-9)))
    assert r["predicted with overlap"] == pytest.approx(1.0) and r["hidden by overlap"] is True


def test_the_memory_figure_shows_model_states_unless_given_activations():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nnpar_lite.widgets.scaling import memory_figure
    fig, results = memory_figure(7e9, devices=8, precision="mixed")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["parameters", "gradients", "optimizer state"] and "model states" in fig.axes[0].get_xlabel()
    assert all(r["activations"] == 0 for r in results.values())
    assert results["ZeRO-3 ×8"]["total"] == pytest.approx(16 * 7e9 / 8)
    plt.close(fig)
    fig, results = memory_figure(7e9, activation_bytes=40e9, devices=8)
    assert "activations" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert results["data ×8"]["activations"] == 5e9
    assert results["tensor ×8"]["activations"] > results["tensor ×8, sequence parallel"]["activations"] == 5e9
    plt.close(fig)


def test_shards_in_proportion_to_speed_finish_together_and_need_the_weighted_mean():
    """Speeds 1, 2, 4 and 120 samples: equal shards wait 40 for the slowest; shards ∝ speed finish
    together, and only the size-weighted mean of their shard losses is the batch's mean loss."""
    from nnpar_lite.data import per_sample_losses
    from nnpar_lite.experiments.scaling import heterogeneous_comparison
    step = cm.heterogeneous_step([1.0, 2.0, 4.0], [40, 40, 40])
    assert step["compute"] == [40, 20, 10] and step["step"] == 40 and step["idle"] == pytest.approx(1 - 70 / 120)
    result = heterogeneous_comparison((1.0, 2.0, 4.0), 120)
    equal, proportional = result["equal"], result["proportional"]
    assert sum(proportional["sizes"]) == 120 and proportional["step"] < equal["step"] / 2
    true_loss = per_sample_losses(120).mean()
    assert proportional["weighted mean of shard losses"] == pytest.approx(true_loss, abs=1e-12)
    assert abs(proportional["plain mean of shard losses"] - true_loss) > 0.1
    with pytest.raises(ValueError, match="the speed of worker 1 must be a positive number, got 0.0"):
        cm.heterogeneous_step([1.0, 0.0], [1, 1])


def test_the_step_is_timed_alone_and_together_in_one_launch():
    from nnpar_lite.experiments.scaling import time_step_alone_and_together
    per_rank = launch(time_step_alone_and_together, 2, (8, 30), (6, 5, 3), 4, timeout=60)
    assert per_rank[1][1] is None and per_rank[0][1].keys() == per_rank[0][2].keys() == {8, 30}
    for rank_result in per_rank:
        for times in rank_result[2].values():
            assert times["compute"] > 0 and times["communication"] > 0


@pytest.mark.parametrize("call, words", [
    (lambda: cm.ring_allreduce_time(-1, 2, 1e-5, 1e-9), "nbytes must be a finite number ≥ 0, got -1"),
    (lambda: cm.ring_allreduce_time(1e6, 2, True, 1e-9), "alpha must be a finite number ≥ 0, got True"),
    (lambda: cm.ring_allreduce_time(1e6, 2, 1e-5, float("nan")), "beta must be a finite number ≥ 0, got nan"),
    (lambda: cm.ring_allreduce_time(1e6, 2.0, 1e-5, 1e-9), "world_size must be an integer ≥ 1, got 2.0"),
    (lambda: cm.amdahl_speedup(-0.1, 2), "parallel_fraction must be a number in [0, 1], got -0.1"),
    (lambda: cm.gustafson_speedup("0.5", 2), "parallel_fraction must be a number in [0, 1]"),
    (lambda: cm.heterogeneous_step([1.0, 2.0], [1, 1, 1]), "give one speed per shard: 2 speeds for 3 shards"),
    (lambda: cm.expert_capacity(10, 1, 2, float("inf")), "capacity_factor must be a positive number, got inf"),
    (lambda: cm.expert_capacity(10, 1, 2, 0), "capacity_factor must be a positive number, got 0"),
])
def test_a_bad_number_is_refused_with_its_name_and_value(call, words):
    """One number check (nnpar_lite.util) behind every formula: a bool, NaN, ∞, a string or a
    value out of range is named, never taken for a number."""
    with pytest.raises(ValueError, match=re.escape(words)):
        call()


BEFORE_THE_SPLIT = [   # every public name of the one-file cost model, as chapters and readers use them
    "bubble_fraction", "pipeline_step_time", "peak_activations", "ring_allreduce_time", "tree_allreduce_time",
    "parameter_server_time", "ALLREDUCE_TIMES", "fit_alpha_beta", "overlap_hides_communication",
    "data_parallel_step_time", "scaling_efficiency", "amdahl_speedup", "gustafson_speedup", "heterogeneous_step",
    "communication_per_epoch", "PRECISIONS", "REPLICATED_ACTIVATIONS", "model_state_bytes", "training_memory",
    "SEQUENCE_METHODS", "gpt_block_activations", "sequence_parallel_activations", "sequence_parallel_bytes",
    "causal_ring_work", "expert_capacity", "moe_parameters", "moe_active_parameters", "expert_all_to_all_bytes",
    "MODEL_BILLIONS", "DEVICE_COUNTS", "memory_layouts", "memory_by_layout", "zero_communication",
    "ring_allreduce_bytes", "gpt_rank_tensors", "zero_chunk_elements", "adam_state_bytes",
    "gpt_block_activation_values", "gpt_head_activation_values", "mesh_step_time"]


def test_every_name_of_the_cost_model_is_importable_from_costmodel_and_lives_in_one_topic():
    import importlib
    topics = ("communication", "pipeline", "laws", "memory", "long_sequences", "experts", "mesh")
    modules = [importlib.import_module(f"nnpar_lite.costmodel.{topic}") for topic in topics]
    for name in BEFORE_THE_SPLIT:
        homes = [m.__name__ for m in modules if name in vars(m) and getattr(m, name) is getattr(cm, name)]
        defined = [h for h in homes if getattr(getattr(cm, name), "__module__", h) == h]
        assert len(defined) == 1, (name, homes)
    assert sorted(cm.__all__) == sorted(BEFORE_THE_SPLIT)


def test_a_pipeline_stage_outside_the_pipeline_is_named():
    with pytest.raises(ValueError, match="stage must be an integer between 0 and 3, got 4"):
        cm.peak_activations(4, 8, 4, "gpipe")
    with pytest.raises(ValueError, match="stage must be an integer between 0 and 3, got -1"):
        cm.peak_activations(4, 8, -1, "1f1b")


def test_a_token_cannot_choose_more_experts_than_there_are():
    assert cm.moe_active_parameters(16, 40, 8, 8) == cm.moe_parameters(16, 40, 8)
    with pytest.raises(ValueError, match="top_k must be an integer between 1 and 8, got 9"):
        cm.moe_active_parameters(16, 40, 8, 9)
