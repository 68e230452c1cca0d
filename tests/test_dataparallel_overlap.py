"""DataParallel (chapter 09): bucket all-reduces started from gradient hooks during backward.

In the pattern of CS336's DDP tests: toy models with a frozen bias, a fixed non-trainable
parameter and tied weights; every rank starts from a different model; after every step
DataParallel must equal PyTorch's DDP and one process trained on all rows, with 1, 2 and 3
buckets, uneven shards, 2 and 3 ranks, and gradient accumulation under no_sync; its buckets
must be the ones DDP hands its communication hook. The edge cases of tests/edge_workers.py:
parameters some ranks or no rank use, BatchNorm's buffers, a second backward. All
configurations of one world size run in one launch."""

import functools

import pytest
import torch

from comm_workers import ToyModel, ToyModelWithTiedWeights, two_rank_suite
from nnpar_lite.data_parallel import DataParallel, plan_buckets, plan_buckets_like_ddp
from nnpar_lite.distributed import launch
from nnpar_lite.experiments import communication_efficiency as comm
from nnpar_lite.models import mlp

B = 1 / 2 ** 20                      # one byte, in MiB
# ToyModel's trainable weights in reverse order: fc3 1000 B, fc2 2000 B, fc1 400 B.
# A bucket closes once it holds at least the cap: 1 MiB → one bucket, 2000 B → [fc3, fc2] [fc1],
# 500 B → each alone. ToyModelWithTiedWeights: fc5 1000 B, fc3 2000 B, fc2 2000 B (also fc4), fc1 400 B.
CONFIGS = {
    2: {"toy, 1 bucket": dict(model=ToyModel, bucket_mb=1.0, shard_sizes=[3, 5], buckets=1),
        "toy, 2 buckets": dict(model=ToyModel, bucket_mb=2000 * B, shard_sizes=[4, 4], buckets=2),
        "toy, 3 buckets": dict(model=ToyModel, bucket_mb=500 * B, shard_sizes=[7, 2], buckets=3),
        "tied, 2 buckets": dict(model=ToyModelWithTiedWeights, bucket_mb=2500 * B, shard_sizes=[5, 3], buckets=2),
        "toy, accumulate 3, 2 buckets": dict(model=ToyModel, bucket_mb=2000 * B, shard_sizes=[2, 6],
                                             micro_steps=3, buckets=2),
        # BatchNorm's weight is ready before its bias: DDP's buckets follow that order, not the reverse one
        "batchnorm, 3 buckets": dict(model=functools.partial(mlp, (10, 32, 32, 5), batch_norm=True),
                                     bucket_mb=700 * B, shard_sizes=[5, 11], buckets=3)},
    3: {"toy, 3 buckets": dict(model=ToyModel, bucket_mb=500 * B, shard_sizes=[2, 5, 4], buckets=3),
        "tied, 1 bucket": dict(model=ToyModelWithTiedWeights, bucket_mb=1.0, shard_sizes=[1, 4, 6], buckets=1),
        "tied, accumulate 2, 3 buckets": dict(model=ToyModelWithTiedWeights, bucket_mb=2000 * B,
                                              shard_sizes=[3, 3, 5], micro_steps=2, buckets=3)},
}
CASES = [(world, name) for world, configs in CONFIGS.items() for name in configs]
WITHOUT_BATCHNORM = [case for case in CASES if "batchnorm" not in case[1]]
STEPS = 4


def configs(world_size: int) -> list[dict]:
    return [dict({k: v for k, v in c.items() if k not in ("model", "buckets")}, make_model=c["model"],
                 steps=STEPS, lr=0.5, seed=i) for i, c in enumerate(CONFIGS[world_size].values())]


@functools.lru_cache(maxsize=None)
def two_ranks() -> list[dict]:
    """One launch of two ranks: the comparisons, the misuse messages and a small timeline."""
    return launch(two_rank_suite, 2, configs(2), timeout=180)


@functools.lru_cache(maxsize=None)
def reports(world_size: int) -> dict[str, list[dict]]:
    """Every configuration of one world size: {name: [report of rank 0, 1, ...]}."""
    per_rank = [r["compare"] for r in two_ranks()] if world_size == 2 else \
        launch(comm.compare_with_ddp, world_size, configs(world_size), timeout=180)
    return {name: [rank_reports[i] for rank_reports in per_rank] for i, name in enumerate(CONFIGS[world_size])}


@pytest.mark.parametrize("world, name", CASES)
def test_different_initial_models_end_equal_after_the_broadcast(world, name):
    for report in reports(world)[name]:
        assert report["broadcast spread"] == 0.0            # every rank holds the same θ ...
        assert report["vs rank 0's model"] == 0.0           # ... and it is rank 0's


@pytest.mark.parametrize("world, name", CASES)
def test_buckets_are_the_planned_ones_and_ddps(world, name):
    """DDP's real buckets, as a communication hook receives them: in its first step one bucket
    of everything (it notes the order gradients become ready), from the second step on the
    rebuilt ones, which must be the plan, bucket for bucket and parameter for parameter."""
    report = reports(world)[name][0]
    assert len(report["buckets"]) == CONFIGS[world][name]["buckets"]
    assert len(report["ddp buckets"]) == STEPS
    for step, ddp_buckets in enumerate(report["ddp buckets"][1:], start=1):
        assert ddp_buckets == report["buckets"], (step, ddp_buckets)


def test_with_mixed_dtypes_each_dtype_keeps_its_own_bucket_as_in_ddp():
    """float32 and float64 layers in turn. A cap of 100 bytes closes a bucket per layer, in
    backward's order, as DDP does; a cap of 1 MiB leaves one bucket per dtype open to the end,
    and DDP lists those in an order of its own (a hash map's), so they are compared as sets."""
    small, large = two_ranks()[0]["mixed dtypes"][1], two_ranks()[0]["mixed dtypes"][0]
    assert small["ours"] == small["ddp"] == [[7, 6], [5, 4], [3, 2], [1, 0]]
    assert sorted(large["ours"]) == sorted(large["ddp"]) == [[5, 4, 1, 0], [7, 6, 3, 2]]


@pytest.mark.parametrize("world, name", WITHOUT_BATCHNORM)
def test_every_step_equals_ddp_and_one_process_on_all_rows(world, name):
    for report in reports(world)[name]:
        assert len(report["vs_ddp"]) == STEPS
        assert max(report["vs_ddp"]) < 1e-6, report["vs_ddp"]
        assert max(report["vs_reference"]) < 1e-5, report["vs_reference"]
        assert report["final spread"] == 0.0                # the ranks stay identical


def test_with_batchnorm_every_step_equals_ddp_buffers_included_but_not_one_process():
    """Each rank normalises by its own rows' statistics, so one process on all rows is another
    computation; DDP, which also broadcasts rank 0's buffers before each forward, is matched."""
    for report in reports(2)["batchnorm, 3 buckets"]:
        assert len(report["vs_ddp"]) == STEPS and max(report["vs_ddp"]) < 1e-6
        assert max(report["buffers vs_ddp"]) < 1e-6 and min(report["vs_reference"][1:]) > 1e-3


@pytest.mark.parametrize("world, name", CASES)
def test_frozen_and_fixed_parameters_never_move(world, name):
    for report in reports(world)[name]:
        assert report["frozen moved"] == 0.0


def test_with_two_ranks_the_arithmetic_is_ddps_to_the_last_bit():
    """g_r / K summed: DDP's own order of operations; with K = 2 the sum has one rounding only."""
    for name, ranks in reports(2).items():
        assert max(ranks[0]["vs_ddp"]) == 0.0, name


def test_buckets_start_during_backward():
    """The overlap itself: with 3 buckets, the first two all-reduces leave before backward ends."""
    timeline = two_ranks()[0]["timeline"]
    overlapped = timeline["overlapped"]
    leaves = sorted(t for kind, _, t in overlapped["communication"] if kind == "leaves")
    assert len(timeline["buckets"]) == 3 and len(leaves) == 3
    assert leaves[1] < overlapped["backward end"]
    assert sorted(b for kind, b, _ in overlapped["communication"] if kind == "arrives") == [0, 1, 2]
    after = timeline["after backward"]
    assert min(t for kind, _, t in after["communication"] if kind == "leaves") >= after["backward end"]


def test_misuse_is_refused_in_plain_words():
    messages = two_ranks()[0]["misuse"]
    assert "finish_gradient_synchronization" in messages["forward before finish"]
    assert "second backward" in messages["second backward"] and "without a new forward" in messages["second backward"]


# The edge cases of tests/edge_workers.py, on the first 2 and all 3 ranks of one launch.
EDGE = [("unused_parameters", dict(scheme="DataParallel", users=users, optimizer=optimizer, N=n))
        for n in (2, 3) for users in ([0], [1, 2], []) for optimizer in ("sgd", "adamw")] + \
       [("batchnorm_buffers", dict(micro_steps=k, N=n)) for n in (2, 3) for k in (1, 2)] + \
       [("second_backward", dict(N=n)) for n in (2, 3)]


@functools.lru_cache(maxsize=None)
def edge_reports() -> list[tuple[str, dict, list]]:
    import edge_workers
    per_rank = launch(edge_workers.run_many, 3, EDGE, timeout=240)
    return [(name, config, [reports[i] for reports in per_rank[:config["N"]]]) for i, (name, config) in enumerate(EDGE)]


def edge(kind: str) -> list[tuple[dict, list]]:
    return [(config, ranks) for name, config, ranks in edge_reports() if name == kind]


def test_a_parameter_some_ranks_do_not_use_gets_ddps_result_and_one_no_rank_uses_none():
    """Branchy's ``extra`` runs only on the ranks in ``users``, ``never`` on none; buckets of a
    layer or two, so ``never`` holds its bucket back on every rank. DataParallel equals DDP's
    find_unused_parameters=True and one process at every step, with SGD and AdamW, and leaves
    ``never`` without a gradient (it does not move under AdamW's weight decay)."""
    for config, ranks in edge("unused_parameters"):
        for rank, report in enumerate(ranks):
            assert len(report["vs DDP"]) == 4
            assert max(report["vs DDP"]) < 1e-6 and max(report["vs one process"]) < 1e-6, (config, rank, report)
            assert report["never moved"] == 0.0, (config, rank)


def test_batchnorm_buffers_equal_ddps_on_every_rank_at_every_step():
    """Rank 0's buffers before each forward, as DDP sends them: after a forward that was followed
    by a synchronised backward, not after one under no_grad or inside no_sync."""
    for config, ranks in edge("batchnorm_buffers"):
        for rank, report in enumerate(ranks):
            assert len(report["buffers"]) == 4
            assert max(report["buffers"]) < 1e-6 and max(report["parameters"]) < 1e-6, (config, rank, report)


def test_a_second_backward_without_a_new_forward_is_refused_on_every_rank():
    for config, ranks in edge("second_backward"):
        for report in ranks:
            assert report.get("error", "").startswith("RuntimeError: a second backward"), report


def test_bad_arguments_are_refused_before_any_communication():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        DataParallel("not a model")
    with pytest.raises(TypeError, match="broadcast_buffers"):
        DataParallel(mlp((4, 3)), broadcast_buffers="yes")
    with pytest.raises(ValueError, match="no trainable parameter"):
        DataParallel(mlp((4, 3)).requires_grad_(False))
    for bad in (0, -1.0, float("nan"), True, "25"):
        with pytest.raises(ValueError, match="bucket_mb"):
            DataParallel(mlp((4, 3)), bucket_mb=bad)      # no process group needed to refuse


def test_ddp_rule_closes_a_bucket_once_full_unlike_the_at_most_rule():
    params = list(mlp((512, 1024, 1024, 10)).parameters())
    assert plan_buckets_like_ddp(params, 25.0) == [[5, 4, 3, 2, 1, 0]]
    assert plan_buckets_like_ddp(params, 1.0) == [[5, 4, 3, 2], [1, 0]]       # DDP's, measured
    assert plan_buckets(params, 1.0) == [[5, 4, 3], [2], [1], [0]]            # chapter 03's at-most rule
    mixed = [torch.zeros(3), torch.zeros(3, dtype=torch.float64), torch.zeros(3)]
    assert plan_buckets_like_ddp(mixed, 1.0) == [[2, 0], [1]]                 # one open bucket per dtype
