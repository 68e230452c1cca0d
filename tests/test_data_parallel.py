"""Data parallelism: the simulation against one big batch; the real processes against one
process on all rows, in the loop of CS336's DDP tests (tests/dp_workers.py), and through
chapter 03's harness against PyTorch DDP; the ring against dist.all_reduce; the torchrun
program over 1, 2 and 3 processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnpar_lite import data_parallel as dp
from nnpar_lite.distributed import launch
from nnpar_lite.experiments import data_parallel as dpx
from nnpar_lite.models import mlp
from nnpar_lite.util import max_abs_difference

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------ simulation
@pytest.fixture(scope="module")
def batch():
    from nnpar_lite.data import digits
    X, y = digits()
    return torch.from_numpy(X[:120]).double(), torch.from_numpy(y[:120])


def model(batch_norm=False):
    return mlp((64, 32, 10), seed=0, batch_norm=batch_norm, dtype=torch.float64)


@pytest.mark.parametrize("sizes", [[40, 40, 40], [7, 33, 80], [1, 119], [10, 20, 30, 60]])
def test_weighted_shards_give_the_big_batch_gradient(batch, sizes):
    r = dp.compare_with_big_batch(model(), *batch, sizes, weighted=True)
    assert r["relative error"] < 1e-12 and r["scale"] == pytest.approx(1.0, abs=1e-12)


def test_equal_shards_need_no_weights(batch):
    assert dp.compare_with_big_batch(model(), *batch, [30, 30, 30, 30], weighted=False)["relative error"] < 1e-12


def test_mean_of_means_is_wrong_for_uneven_shards(batch):
    assert dp.compare_with_big_batch(model(), *batch, [7, 33, 80], weighted=False)["relative error"] > 1e-2


@pytest.mark.parametrize("sizes", [[120], [60, 60], [40, 40, 40]])
def test_sum_reduction_scales_the_gradient_by_the_per_worker_batch(batch, sizes):
    r = dp.compare_with_big_batch(model(), *batch, sizes, reduction="sum", weighted=False)
    assert r["scale"] == pytest.approx(120 / len(sizes), rel=1e-12)


def test_batchnorm_statistics_per_worker_differ_from_the_big_batch(batch):
    net = model(batch_norm=True)
    assert dp.compare_with_big_batch(net, *batch, [40, 40, 40])["relative error"] > 1e-3
    net.eval()  # running statistics: the same for every worker, so the split is exact again
    assert dp.compare_with_big_batch(net, *batch, [40, 40, 40])["relative error"] < 1e-12


# --------------------------------------------------------------- buckets
def params_of(sizes=(64, 32, 10)):
    return list(mlp(sizes).parameters())  # 0.weight 8192 B, 0.bias 128 B, 2.weight 1280 B, 2.bias 40 B


@pytest.mark.parametrize("bucket_bytes, expected", [
    (2 ** 20, [[3, 2, 1, 0]]),            # one bucket
    (1500, [[3, 2, 1], [0]]),             # two: the big weight alone
    (100, [[3], [2], [1], [0]]),          # every tensor alone
])
def test_plan_buckets(bucket_bytes, expected):
    assert dp.plan_buckets(params_of(), bucket_bytes / 2 ** 20) == expected


def test_plan_buckets_never_mixes_dtypes():
    params = [torch.zeros(3), torch.zeros(3, dtype=torch.float64), torch.zeros(3)]
    assert dp.plan_buckets(params, 1.0) == [[2], [1], [0]]


@pytest.mark.parametrize("weight", [-1, float("nan"), float("inf"), "3", True])
def test_allreduce_gradients_rejects_bad_weight_before_communicating(weight):
    with pytest.raises(ValueError, match="weight"):
        dp.allreduce_gradients(params_of(), weight=weight)  # no process group needed to refuse


def test_plan_buckets_rejects_bad_cap():
    with pytest.raises(ValueError, match="bucket_mb"):
        dp.plan_buckets(params_of(), 0)


# ------------------------------------------------------- real processes
MIB = 2 ** 20
EQUIVALENCE = {   # the loop of tests/dp_workers.py, on 3 ranks with rows 2, 5 and 9 (or 4 each)
    "weighted, uneven rows, 1 bucket": dict(adapter="weighted by rows", rows=[2, 5, 9], bucket_mb=1.0),
    "weighted, uneven rows, a bucket per tensor": dict(adapter="weighted by rows", rows=[2, 5, 9], bucket_mb=1 / MIB),
    "weighted, uneven rows, frozen layer": dict(adapter="weighted by rows", rows=[2, 5, 9], bucket_mb=200 / MIB,
                                                frozen=["0.weight", "2.bias"]),
    "plain mean, equal rows": dict(adapter="plain mean", rows=[4, 4, 4], bucket_mb=200 / MIB),
    "plain mean, uneven rows": dict(adapter="plain mean", rows=[2, 5, 9], bucket_mb=200 / MIB),
}


@pytest.fixture(scope="module")
def equivalence():
    import dp_workers
    configs = [dict(c, steps=6) for c in EQUIVALENCE.values()]
    reports = launch(dp_workers.equivalence_loops, 3, configs, backend="gloo", timeout=180)
    return {name: [rank_reports[i] for rank_reports in reports] for i, name in enumerate(EQUIVALENCE)}


@pytest.mark.parametrize("name", [n for n in EQUIVALENCE if n != "plain mean, uneven rows"])
def test_every_rank_follows_one_process_on_all_rows_step_by_step(equivalence, name):
    for rank, report in enumerate(equivalence[name]):
        assert len(report["differences"]) == 6
        assert max(report["differences"]) < 1e-12, f"{name}, rank {rank}: {report['differences']}"


def test_the_loop_catches_the_plain_mean_of_uneven_rows(equivalence):
    """The same loop rejects what is wrong: the unweighted average of rows 2, 5 and 9."""
    assert min(equivalence["plain mean, uneven rows"][0]["differences"]) > 1e-4


@pytest.mark.parametrize("name", list(EQUIVALENCE))
def test_the_ranks_hold_identical_parameters(equivalence, name):
    ranks = equivalence[name]
    for other in ranks[1:]:
        for key, value in ranks[0]["params"].items():
            assert torch.equal(value, other["params"][key]), f"{name}: ranks disagree on {key}"


def test_frozen_parameters_keep_their_initial_values(equivalence):
    import dp_workers
    initial = dict(mlp(dp_workers.SIZES, seed=7, dtype=torch.float64).named_parameters())
    final = equivalence["weighted, uneven rows, frozen layer"][0]["params"]
    for name in ("0.weight", "2.bias"):
        assert torch.equal(final[name], initial[name].detach())
    assert not torch.equal(final["2.weight"], initial["2.weight"].detach())


# The chapter's harness (nnpar_lite.experiments.data_parallel.train_against_ddp), which chapter 03
# runs: ours, PyTorch's DistributedDataParallel and the one-process reference side by side.
HARNESS = {
    "even, 1 bucket": dict(shard_sizes=[8, 8, 8], weighted=False, bucket_mb=1.0),
    "uneven, 2 buckets": dict(shard_sizes=[3, 8, 13], weighted=False, bucket_mb=1500 / MIB),
    "uneven weighted, frozen bias": dict(shard_sizes=[5, 1, 12], weighted=True, bucket_mb=1500 / MIB,
                                         frozen=["0.bias"]),
}


@pytest.fixture(scope="module")
def ddp_reports():
    configs = [dict(c, sizes=(64, 32, 10), steps=5, lr=0.5, seed=i) for i, c in enumerate(HARNESS.values())]
    reports = launch(dpx.train_against_ddp_configs, 3, configs, backend="gloo", timeout=180)
    return {name: [rank_reports[i] for rank_reports in reports] for i, name in enumerate(HARNESS)}


TOL = 1e-6  # float32, 5 steps


@pytest.mark.parametrize("name", ["even, 1 bucket", "uneven, 2 buckets"])
def test_unweighted_equals_ddp_after_every_step(ddp_reports, name):
    assert len(ddp_reports[name][0]["vs_ddp"]) == 5
    assert max(ddp_reports[name][0]["vs_ddp"]) < TOL


def test_even_shards_equal_ddp_and_the_single_process_reference(ddp_reports):
    assert max(ddp_reports["even, 1 bucket"][0]["vs_reference"]) < TOL


def test_ddp_is_not_the_global_mean_for_uneven_shards(ddp_reports):
    assert max(ddp_reports["uneven, 2 buckets"][0]["vs_reference"]) > 1e-3
    weighted = ddp_reports["uneven weighted, frozen bias"][0]
    assert max(weighted["vs_reference"]) < TOL and max(weighted["vs_ddp"]) > 1e-4


def test_the_harness_leaves_a_frozen_parameter_alone(ddp_reports):
    initial = dict(mlp((64, 32, 10), seed=2).named_parameters())["0.bias"]
    for rank in ddp_reports["uneven weighted, frozen bias"]:
        assert torch.equal(rank["params"]["0.bias"], initial.detach())


# Parameters that some ranks, or no rank, use (tests/edge_workers.py): DDP with
# find_unused_parameters=True and one process on every rank's rows are the references.
UNUSED = [dict(scheme="allreduce_gradients", users=users, optimizer=optimizer, N=n)
          for n in (2, 3) for users in ([0], [1, 2], []) for optimizer in ("sgd", "adamw")]


@pytest.fixture(scope="module")
def unused():
    import edge_workers
    per_rank = launch(edge_workers.run_many, 3, [("unused_parameters", c) for c in UNUSED], timeout=240)
    return [(config, [reports[i] for reports in per_rank[:config["N"]]]) for i, config in enumerate(UNUSED)]


def test_a_parameter_some_ranks_do_not_use_gets_ddps_result_and_one_no_rank_uses_is_skipped(unused):
    """Branchy's ``extra`` runs on the ranks in ``users`` only, ``never`` on none: each rank
    sends the same buckets (no gloo abort), the result equals DDP's find_unused_parameters=True
    and one process at every step, with SGD and with AdamW, and ``never`` does not move (AdamW
    would decay it, were it given a zero gradient)."""
    for config, ranks in unused:
        for rank, report in enumerate(ranks):
            assert len(report["vs DDP"]) == 4, config
            assert max(report["vs DDP"]) < 1e-6 and max(report["vs one process"]) < 1e-6, (config, rank, report)
            assert report["never moved"] == 0.0, (config, rank)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ring_allreduce_equals_dist_all_reduce(world_size):
    numels = [0, 1, world_size - 1, world_size + 1, 7, 1001]
    for differences in launch(dpx.check_ring_allreduce, world_size, numels, backend="gloo", timeout=120):
        assert max(differences) < 1e-12


def run_train(folder: Path, world_size: int) -> subprocess.CompletedProcess:
    """``python -m nnpar_lite.train`` (one process) or under torchrun, as chapter 03 shows it; shards of
    a global batch of 10 are uneven over 3 processes (4, 3, 3)."""
    args = ["-m", "nnpar_lite.train", "--out", str(folder / f"run{world_size}"), "--steps", "12", "--global-batch", "10"]
    launcher = [sys.executable] if world_size == 1 else \
        [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", str(world_size)]
    done = subprocess.run(launcher + args, cwd=folder, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_train_py_over_1_2_and_3_processes_agrees_up_to_rounding(tmp_path):
    """What the program and chapter 03 promise, and no more: 1, 2 and 3 processes end with the same
    parameters up to float32 rounding (the sums are taken in another order, so not bit for bit, and
    the printed checksum may differ in its last digit). Averaging without the weights would leave
    them about 0.1 apart here; rounding leaves them about 1e-7 apart."""
    outputs = {k: run_train(tmp_path, k).stdout.strip().splitlines() for k in (1, 2, 3)}
    finals = {k: torch.load(tmp_path / f"run{k}" / "final_params.pt") for k in (1, 2, 3)}
    initial = dict(mlp((64, 64, 10), seed=0).named_parameters())
    assert max_abs_difference(finals[1], {n: p.detach() for n, p in initial.items()}) > 0.05   # it trained
    for k in (2, 3):
        assert outputs[k][-1].startswith(f"world size {k}")
        assert max_abs_difference(finals[k], finals[1]) < 1e-5
        losses = [[float(line.split()[-1]) for line in outputs[w][:12]] for w in (1, k)]
        assert [line.split()[:2] for line in outputs[k][:12]] == [["step", str(i)] for i in range(12)]
        assert max(abs(a - b) for a, b in zip(*losses)) < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run1", "run2", "run3"]   # nothing written elsewhere
    assert sorted(p.name for p in (tmp_path / "run3").iterdir()) == ["final_params.pt", "log.txt"]


@pytest.mark.parametrize("gpus, ranks_here, expected", [(0, 2, "gloo"), (1, 2, "gloo"), (2, 2, "nccl"), (1, 1, "nccl")])
def test_train_py_picks_nccl_only_with_a_gpu_for_every_rank(monkeypatch, gpus, ranks_here, expected):
    """On a one-GPU machine the second rank would ask for cuda:1, which is not there: NCCL needs a GPU per rank."""
    from nnpar_lite import train
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks_here))
    assert train.default_backend() == expected
