"""Data parallelism: the simulation against one big batch, the real processes against
PyTorch DDP and against one process on all rows (the pattern of CS336's DDP tests)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnpar_lite import data_parallel as dp
from nnpar_lite.experiments import data_parallel as dpx
from nnpar_lite.models import mlp
from nnpar_lite.distributed import launch

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
CONFIGS = {
    "even, 1 bucket": dict(shard_sizes=[8, 8, 8], weighted=False, bucket_mb=1.0),
    "uneven, 2 buckets": dict(shard_sizes=[3, 8, 13], weighted=False, bucket_mb=1500 / MIB),
    "uneven weighted, 4 buckets": dict(shard_sizes=[3, 8, 13], weighted=True, bucket_mb=100 / MIB),
    "uneven weighted, frozen bias": dict(shard_sizes=[5, 1, 12], weighted=True, bucket_mb=1500 / MIB,
                                         frozen=["0.bias"]),
}


@pytest.fixture(scope="module")
def ddp_reports():
    configs = [dict(c, sizes=(64, 32, 10), steps=5, lr=0.5, seed=i) for i, c in enumerate(CONFIGS.values())]
    reports = launch(dpx.train_against_ddp_configs, 3, configs, backend="gloo", timeout=180)
    return {name: [rank_reports[i] for rank_reports in reports] for i, name in enumerate(CONFIGS)}


TOL = 1e-6  # float32, 5 steps


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_rank_holds_the_same_parameters(ddp_reports, name):
    ranks = ddp_reports[name]
    for other in ranks[1:]:
        for key, value in ranks[0]["params"].items():
            assert torch.equal(value, other["params"][key]), f"{name}: ranks disagree on {key}"


@pytest.mark.parametrize("name", ["even, 1 bucket", "uneven, 2 buckets"])
def test_unweighted_equals_ddp_after_every_step(ddp_reports, name):
    assert len(ddp_reports[name][0]["vs_ddp"]) == 5
    assert max(ddp_reports[name][0]["vs_ddp"]) < TOL


def test_even_shards_equal_the_single_process_reference(ddp_reports):
    assert max(ddp_reports["even, 1 bucket"][0]["vs_reference"]) < TOL


def test_uneven_unweighted_is_not_the_global_mean(ddp_reports):
    assert max(ddp_reports["uneven, 2 buckets"][0]["vs_reference"]) > 1e-3


@pytest.mark.parametrize("name", ["uneven weighted, 4 buckets", "uneven weighted, frozen bias"])
def test_weighted_equals_the_single_process_reference_after_every_step(ddp_reports, name):
    report = ddp_reports[name][0]
    assert max(report["vs_reference"]) < TOL
    assert max(report["vs_ddp"]) > 1e-4  # DDP weights ranks equally: not the global mean here


def test_frozen_parameter_is_left_alone(ddp_reports):
    initial = dict(mlp((64, 32, 10), seed=3).named_parameters())["0.bias"]
    assert torch.equal(ddp_reports["uneven weighted, frozen bias"][0]["params"]["0.bias"], initial.detach())


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ring_allreduce_equals_dist_all_reduce(world_size):
    numels = [0, 1, world_size - 1, world_size + 1, 7, 1001]
    for differences in launch(dpx.check_ring_allreduce, world_size, numels, backend="gloo", timeout=120):
        assert max(differences) < 1e-12


def test_torchrun_command_from_the_readme(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "run"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "nnpar_lite.train", "--out", str(out),
           "--steps", "4"]
    two = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "nnpar_lite.train", "--out", str(tmp_path / "one"), "--steps", "4"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    lines = two.stdout.strip().splitlines()
    assert [l.split()[:2] for l in lines[:4]] == [["step", str(i)] for i in range(4)]
    assert lines[-1].startswith("world size 2") and one.stdout.strip().splitlines()[-1].startswith("world size 1")
    # The same trajectory for 1 and 2 processes: the weighted average makes the split invisible.
    assert lines[-1].split("parameters:")[1] == one.stdout.strip().splitlines()[-1].split("parameters:")[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "run"]  # nothing written elsewhere
    assert sorted(p.name for p in out.iterdir()) == ["final_params.pt", "log.txt"]
