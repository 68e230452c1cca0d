"""Gradient compression (chapter 09): PowerSGD and top-k, with and without error feedback.

References: the exact average (computed here), torch's PowerSGD DDP hook on the same model,
data and rank, and the running-mean identity of error feedback
    Σ_t output_t = Σ_t ḡ_t − ē_T        (ē: the ranks' mean residual, e_0 = 0),
checked over 3 real processes for both compressors."""

import functools
import math

import pytest
import torch

from comm_workers import fixed_gradients, running_means
from nnpar_lite.compression import PowerSGD, TopK, simulate_allreduce_
from nnpar_lite.distributed import launch
from nnpar_lite.experiments.communication_efficiency import against_powersgd_hook_runs

SHAPES = [(7, 5), (5,), (4, 3, 2), (20, 30)]          # a matrix, a bias, a 3-D tensor, a large matrix


def norm(tensors):
    return math.sqrt(sum(float((t ** 2).sum()) for t in tensors))


def exact_average(per_worker):
    return [sum(w[i] for w in per_worker) / len(per_worker) for i in range(len(per_worker[0]))]


def simulated(make, world_size, steps=1):
    compressors = [make() for _ in range(world_size)]
    for _ in range(steps):
        tensors = [fixed_gradients(r, SHAPES) for r in range(world_size)]
        simulate_allreduce_(compressors, tensors)
    return compressors, tensors


# ------------------------------------------------------------ in one process
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("make", [lambda: PowerSGD(100, min_compression_rate=0), lambda: TopK(1.0)],
                         ids=["PowerSGD at full rank", "top-k of everything"])
def test_full_compression_is_the_exact_average(make, world_size):
    expected = exact_average([fixed_gradients(r, SHAPES) for r in range(world_size)])
    compressors, outputs = simulated(make, world_size, steps=2)
    for worker in outputs:
        assert max(float((o - e).abs().max()) for o, e in zip(worker, expected)) < 1e-12
    mean_residual = [sum(c.residuals[i] for c in compressors) / world_size for i in range(len(SHAPES))]
    assert norm(mean_residual) < 1e-12                                  # nothing left behind, on average


@pytest.mark.parametrize("make", [lambda: PowerSGD(1), lambda: TopK(0.1)], ids=["PowerSGD rank 1", "top-k 10 %"])
def test_real_compression_is_not_exact_and_every_worker_gets_the_same(make):
    expected = exact_average([fixed_gradients(r, SHAPES) for r in range(3)])
    _, outputs = simulated(make, 3)
    assert max(float((o - e).abs().max()) for o, e in zip(outputs[0], expected)) > 0.1
    for worker in outputs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(worker, outputs[0]))
    assert torch.equal(outputs[0][1], expected[1].to(outputs[0][1].dtype)) or \
        float((outputs[0][1] - expected[1]).abs().max()) < 1e-15          # the bias is sent exactly


def test_bytes_sent_per_step():
    """PowerSGD rank 2: matrices where (n + m) r · 2 < n m compressed to (n + m) r numbers, the
    others and the bias sent whole; top-k 10 %: ⌈0.1 n⌉ values (8 B) and positions (4 B) per
    tensor of ≥ 2 dimensions, the bias whole. Float64: 8 bytes a number."""
    power, _ = simulated(lambda: PowerSGD(2), 2, steps=3)
    assert power[0].bytes_sent == 3 * 8 * (35 + 5 + 24 + (20 + 30) * 2)
    topk, _ = simulated(lambda: TopK(0.1), 2, steps=3)
    k = math.ceil(3.5) + math.ceil(2.4) + math.ceil(60)
    assert topk[0].bytes_sent == 3 * (8 * 5 + (8 + 4) * k)


def test_bad_input_is_refused_before_anything_is_sent():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="rank"):
            PowerSGD(bad)
    for bad in (0, -0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="fraction"):
            TopK(bad)
    with pytest.raises(TypeError, match="error_feedback"):
        TopK(0.1, error_feedback="yes")
    compressor = PowerSGD(1)
    with pytest.raises(TypeError, match="tensor 1"):
        compressor.allreduce_([torch.zeros(3, 3), "grad"])
    with pytest.raises(TypeError, match="list of tensors"):
        compressor.allreduce_(torch.zeros(3, 3))
    simulate_allreduce_([compressor], [[torch.zeros(3, 3), torch.zeros(3)]])
    with pytest.raises(ValueError, match="tensor 0"):
        simulate_allreduce_([compressor], [[torch.zeros(3, 4), torch.zeros(3)]])
    with pytest.raises(ValueError, match="2 compressors for 1"):
        simulate_allreduce_([PowerSGD(1), PowerSGD(1)], [[torch.zeros(3, 3)]])


# ------------------------------------------------------------ over 3 processes
SPECS = [("PowerSGD rank 1", "PowerSGD", (1,), {}), ("PowerSGD rank 1, no feedback", "PowerSGD", (1,),
                                                                {"error_feedback": False}),
         ("top-k 10 %", "TopK", (0.1,), {}), ("top-k 10 %, no feedback", "TopK", (0.1,), {"error_feedback": False})]
CHECKPOINTS = [40, 80, 160, 320]


@functools.lru_cache(maxsize=None)
def three_ranks():
    return launch(running_means, 3, SPECS, SHAPES, CHECKPOINTS, timeout=180)


def mean_error_and_residual(name, T):
    """‖Σ_t output_t / T − ḡ‖ on rank 0, the ranks' mean residual ē_T, and the identity's error."""
    results = three_ranks()
    g_bar = exact_average([fixed_gradients(r, SHAPES) for r in range(3)])
    at = results[0][name]["at"][T]
    e_bar = [sum(per_rank) / 3 for per_rank in at["residuals"]]
    identity = max(float((s - T * g + e).abs().max()) for s, g, e in zip(at["sum"], g_bar, e_bar))
    return norm([s / T - g for s, g in zip(at["sum"], g_bar)]), e_bar, identity, at["residuals"]


@pytest.mark.parametrize("name", ["PowerSGD rank 1", "top-k 10 %"])
def test_with_error_feedback_the_running_mean_tends_to_the_true_average_as_one_over_t(name):
    errors, residuals = {}, {}
    for T in CHECKPOINTS:
        errors[T], e_bar, identity, _ = mean_error_and_residual(name, T)
        residuals[T] = norm(e_bar)
        assert identity < 1e-9                              # nothing lost, only delayed
        assert errors[T] == pytest.approx(residuals[T] / T, rel=1e-6)
    assert max(residuals.values()) < 2 * residuals[CHECKPOINTS[0]]   # the mean residual stays bounded
    assert errors[320] < errors[40] / 4                      # so the error falls as 1/T (×8 ideally)


@pytest.mark.parametrize("name", ["PowerSGD rank 1, no feedback", "top-k 10 %, no feedback"])
def test_without_error_feedback_the_running_mean_stays_biased(name):
    g_bar = exact_average([fixed_gradients(r, SHAPES) for r in range(3)])
    first, last = mean_error_and_residual(name, 40)[0], mean_error_and_residual(name, 320)[0]
    assert last > 0.5 * first and last > 0.1 * norm(g_bar)


def test_top_k_residual_stays_bounded_on_every_rank():
    """Top-k drops a fixed share of each rank's own Δ, a contraction: every rank's residual is
    bounded. (PowerSGD projects on a subspace chosen from the *sum* of the ranks' Δ, so a rank's
    persistent difference from the others can pile up in its own residual; their mean is what
    reaches the output, and it is bounded: the test above.)"""
    norms = {T: [norm(r) for r in zip(*mean_error_and_residual("top-k 10 %", T)[3])] for T in CHECKPOINTS}
    for rank in range(3):
        assert max(norms[T][rank] for T in CHECKPOINTS) < 2 * norms[40][rank]


@pytest.mark.parametrize("name, make", [("PowerSGD rank 1", lambda: PowerSGD(1)), ("top-k 10 %", lambda: TopK(0.1))])
def test_processes_equal_the_simulation(name, make):
    compressors = [make() for _ in range(3)]
    for step in range(3):
        tensors = [fixed_gradients(r, SHAPES) for r in range(3)]
        simulate_allreduce_(compressors, tensors)
        for rank, results in enumerate(three_ranks()):
            got = results[name]["first"][step]
            assert max(float((a - b).abs().max()) for a, b in zip(got, tensors[rank])) < 1e-12


# ------------------------------------------------------------ against torch's PowerSGD hook
HOOK_CONFIGS = [dict(sizes=(20, 16, 12, 5), batch=8, matrix_rank=r, steps=4, lr=0.2) for r in (1, 2, 4)] + \
               [dict(sizes=(20, 16, 12, 5), batch=8, matrix_rank=100, min_compression_rate=0, steps=4, lr=0.2)] + \
               [dict(sizes=(20, 16, 12, 5), batch=8, matrix_rank=r, steps=4, lr=0.2, dtype=dtype)
                for dtype in ("float16", "bfloat16") for r in (1, 4)]
HALF = {(c["dtype"], c["matrix_rank"]): i for i, c in enumerate(HOOK_CONFIGS) if "dtype" in c}


@functools.lru_cache(maxsize=None)
def hook_reports():
    return launch(against_powersgd_hook_runs, 2, HOOK_CONFIGS, timeout=180)[0]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["rank 1", "rank 2", "rank 4"])
def test_bytes_per_step_equal_torchs_hook(index):
    """Same model, data and rank, torch's default min_compression_rate: the same matrices are
    compressed to the same P and Q sizes, so the same bytes go to all_reduce at every step."""
    report = hook_reports()[index]
    assert report["ours"]["bytes"] == report["torch hook"]["bytes"]
    assert report["ours"]["bytes"][2] < report["ours"]["bytes"][0]      # compressed after 2 exact steps


def test_at_full_rank_both_give_the_exact_average():
    report = hook_reports()[3]
    for name in ("ours", "torch hook"):
        assert max(report[name]["vs exact"]) < 1e-12, name
    assert report["ours"]["loss"] == pytest.approx(report["torch hook"]["loss"], rel=1e-12)


def test_at_low_rank_both_leave_the_exact_average_alike():
    report = hook_reports()[0]
    for name in ("ours", "torch hook"):
        assert report[name]["vs exact"][:2] == [0.0, 0.0] and min(report[name]["vs exact"][2:]) > 1e-4
    assert report["ours"]["loss"] == pytest.approx(report["torch hook"]["loss"], rel=0.02)


# ------------------------------------------------------------ half precision
@pytest.mark.parametrize("dtype, matrix_rank", list(HALF), ids=[f"{d}, rank {r}" for d, r in HALF])
def test_in_half_precision_bytes_and_losses_follow_torchs_hook(dtype, matrix_rank):
    """float16 and bfloat16 models (torch's QR takes neither): at rank 1 torch's hook uses
    Gram–Schmidt whatever the dtype, at rank 4 because of it; ours too. The same bytes at every
    step, losses within 1 %."""
    report = hook_reports()[HALF[(dtype, matrix_rank)]]
    assert report["ours"]["bytes"] == report["torch hook"]["bytes"]
    assert report["ours"]["bytes"][2] < report["ours"]["bytes"][0]
    assert report["ours"]["loss"] == pytest.approx(report["torch hook"]["loss"], rel=0.01)


@functools.lru_cache(maxsize=None)
def half_runs():
    import edge_workers
    cases = [("powersgd_half", dict(dtype=dtype, N=n)) for n in (2, 3) for dtype in ("float16", "bfloat16")]
    per_rank = launch(edge_workers.run_many, 3, cases, timeout=180)
    return [(config, [reports[i] for reports in per_rank[:config["N"]]]) for i, (_, config) in enumerate(cases)]


def test_half_precision_is_orthogonalised_as_torchs_hook_does_and_exact_at_full_rank():
    """Our Gram–Schmidt against the hook's own ``_orthogonalize`` on the same half-precision
    matrix; at full rank the compressed average within the dtype's rounding of the exact one
    (float16 keeps 11 significant bits, bfloat16 8), on 2 and 3 ranks."""
    for config, ranks in half_runs():
        for report in ranks:
            assert "error" not in report, report
            assert report["orthogonalisation vs torch's hook"] < 1e-3, report
            assert report["full rank vs exact"] < {"float16": 1e-2, "bfloat16": 5e-2}[config["dtype"]], report
