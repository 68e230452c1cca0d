"""Cost formulas against hand-computed values; the fit; the calibrated prediction; memory."""

import numpy as np
import pytest
import torch

from nnpar_lite import costmodel as cm
from nnpar_lite.experiments.scaling import measure_allreduce
from nnpar_lite.models import mlp
from nnpar_lite.distributed import launch


def test_collective_costs_by_hand():
    a, b = 1e-5, 1e-9
    assert cm.ring_allreduce_time(1e6, 4, a, b) == pytest.approx(6 * a + 1.5e6 * b)
    assert cm.tree_allreduce_time(1e6, 4, a, b) == pytest.approx(4 * (a + 1e6 * b))   # ⌈log₂ 4⌉ = 2
    assert cm.tree_allreduce_time(1e6, 5, a, b) == pytest.approx(6 * (a + 1e6 * b))   # ⌈log₂ 5⌉ = 3
    assert cm.parameter_server_time(1e6, 4, a, b) == pytest.approx(6 * (a + 1e6 * b))
    for f in cm.ALLREDUCE_TIMES.values():
        assert f(1e6, 1, a, b) == 0.0


def test_laws_by_hand():
    assert cm.amdahl_speedup(0.9, 10) == pytest.approx(1 / (0.1 + 0.09))
    assert cm.amdahl_speedup(1.0, 8) == 8 and cm.amdahl_speedup(0.0, 8) == 1
    assert cm.gustafson_speedup(0.9, 10) == pytest.approx(9.1)
    with pytest.raises(ValueError, match="parallel_fraction"):
        cm.amdahl_speedup(1.5, 2)


def test_step_time_and_efficiency():
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
def test_fit_bad_input(sizes, times, p, word):
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


def test_memory_sharding_by_hand():
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


def test_zero_paper_figure_1():
    """Rajbhandari et al. 2020, figure 1: 7.5 B parameters, mixed-precision Adam (2Ψ + 2Ψ + 12Ψ),
    N_d = 64: 120, 31.4, 16.6 and 1.9 GB per device for ZeRO stages 0 to 3."""
    got = [cm.training_memory(7.5e9, precision="mixed", optimizer="adam", zero_stage=stage,
                              data_parallel=64)["total"] / 1e9 for stage in range(4)]
    assert [round(g, 1) for g in got] == [120.0, 31.4, 16.6, 1.9]


def test_tensor_parallel_activations_with_and_without_sequence_parallelism():
    """Korthikanti et al. 2022: without sequence parallelism about 10 of a layer's 34 s·b·h bytes
    stay replicated on each of t devices; with it, all 34 are split."""
    A = 34e9
    without = cm.training_memory(1, tensor_parallel=8, activation_bytes=A)["activations"]
    with_sp = cm.training_memory(1, tensor_parallel=8, activation_bytes=A, sequence_parallel=True)["activations"]
    assert without == pytest.approx(10e9 + 24e9 / 8) and with_sp == pytest.approx(34e9 / 8)
    assert cm.training_memory(1, tensor_parallel=1, activation_bytes=A)["activations"] == A


def test_data_parallel_replicas_each_hold_their_share_of_the_batch_activations():
    """With a fixed global batch, each of d replicas runs 1/d of it: activations shrink, model states do not."""
    one = cm.training_memory(1000, activation_bytes=800)
    four = cm.training_memory(1000, activation_bytes=800, data_parallel=4)
    assert four["activations"] == 200 and four["parameters"] == one["parameters"]


def test_a_sharded_parameter_server_divides_the_traffic():
    single = cm.parameter_server_time(1e6, 9, 1e-5, 1e-9)
    sharded = cm.parameter_server_time(1e6, 9, 1e-5, 1e-9, servers=4)
    assert single == pytest.approx(16 * (1e-5 + 1e-3)) and sharded == pytest.approx(16 * (1e-5 + 1e-3 / 4))
