"""The communication primitives on 2, 3 and 4 real ranks, against a recomputation in one
process: the rings against a sum, the average against Σ w_r t_r / Σ w_r, and every
differentiable collective's output and gradient against one-process autograd."""

import pytest

from collectives_workers import (average_against_a_recomputation, counted_bytes, differentiable_collectives,
                                 refused, rings_against_a_sum, uneven_exchange)
from nnpar_lite import collectives as co
from nnpar_lite.distributed import launch

WORLDS = [2, 3, 4]


@pytest.mark.parametrize("world_size", WORLDS)
def test_the_rings_sum_like_a_sum_for_sizes_that_do_not_divide(world_size):
    assert max(launch(rings_against_a_sum, world_size, [0, 1, 5, 1001])) < 1e-12


@pytest.mark.parametrize("world_size", WORLDS)
@pytest.mark.parametrize("use_ring", [False, True])
def test_the_average_over_a_group_is_the_weighted_mean_of_the_ranks(world_size, use_ring):
    shapes = [(3, 5), (7,), (0,), (2, 2, 2), (1,)]   # tiny buckets: several per call
    assert max(launch(average_against_a_recomputation, world_size, shapes, use_ring)) < 1e-12


@pytest.mark.parametrize("world_size", WORLDS)
def test_differentiable_collectives_equal_one_process_autograd(world_size):
    for gaps in launch(differentiable_collectives, world_size):
        assert max(gaps.values()) < 1e-12, gaps


@pytest.mark.parametrize("world_size", WORLDS)
def test_an_exchange_with_uneven_and_empty_counts_equals_one_process_autograd(world_size):
    assert max(launch(uneven_exchange, world_size)) < 1e-12


def test_counting_logs_what_each_rank_sends_by_the_ring_formula():
    world, n, f = 3, 18, 4                      # 18 float32 elements on 3 ranks
    log = launch(counted_bytes, world)[1]
    assert log[0] == ("all_reduce", n * f, 2 * (world - 1) / world * n * f)
    assert log[1] == ("all_gather", n * f, (world - 1) / world * n * f)
    assert log[2] == ("reduce_scatter", n * f, (world - 1) / world * n * f)
    assert log[3] == ("all_to_all", 2 * n * f, (world - 1) / world * 2 * n * f)
    sends = [e for e in log[4:] if e[0] == "send"]  # the ring: 2 (N − 1) messages of n/N elements
    assert len(sends) == 2 * (world - 1) and sum(e[2] for e in sends) == 2 * (world - 1) / world * n * f


def test_bad_input_is_refused_with_the_sizes_named():
    messages = launch(refused, 2)[0]
    assert "2 send counts adding up to the 3 rows" in messages[0]
    assert "size 3 does not divide by the 2 ranks" in messages[1]
    assert "contiguous" in messages[2]


def test_a_bucket_cap_must_be_a_positive_number():
    for bad in (0, -1.0, float("nan"), True, "25"):
        with pytest.raises(ValueError, match="bucket_mb must be a positive number"):
            co.plan_buckets([], bad)


def test_outside_a_process_group_the_error_says_how_to_start_one():
    with pytest.raises(RuntimeError, match="launch"):
        co.rank_and_size()
