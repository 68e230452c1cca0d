"""The communication primitives on 2, 3 and 4 real ranks, against a recomputation in one
process: the rings against a sum, the average against Σ w_r t_r / Σ w_r, and every
differentiable collective's output and gradient against one-process autograd."""

import pytest

import torch

from collectives_workers import (agreement_and_broadcast, average_against_a_recomputation, counted_bytes,
                                 counted_elements, differentiable_collectives, passed_from_the_left, refused,
                                 rings_against_a_sum, tally_and_refusal, uneven_exchange)
from nnpar_lite import collectives as co
from nnpar_lite.data_parallel_overlap import plan_buckets_like_ddp
from nnpar_lite.distributed import launch
from nnpar_lite.util import real_number, whole_number

WORLDS = [2, 3, 4]


@pytest.mark.parametrize("world_size", WORLDS)
def test_the_rings_sum_like_a_sum_for_sizes_that_do_not_divide(world_size):
    assert max(launch(rings_against_a_sum, world_size, [0, 1, 5, 1001])) < 1e-12


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_a_pass_right_brings_the_left_neighbours_tensor_and_on_one_rank_is_a_copy(world_size):
    results = launch(passed_from_the_left, world_size, 7)
    assert max(gap for gap, _ in results) == 0.0
    if world_size == 1:
        assert "receive holds 8" in results[0][1]


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


def test_a_bucket_cap_must_be_a_positive_number_in_both_plans():
    """One check for both: True is not 1 MiB in either."""
    for bad in (0, -1.0, float("nan"), float("inf"), True, "25"):
        for plan in (co.plan_buckets, plan_buckets_like_ddp):
            with pytest.raises(ValueError, match="bucket_mb must be a positive number"):
                plan([torch.ones(3)], bad)


@pytest.mark.parametrize("world_size", WORLDS)
def test_counting_adds_up_the_elements_and_bytes_each_rank_sends(world_size):
    n = 1001
    size = -(-n // world_size)                  # S = ⌈n / N⌉: the ring sends 2 (N − 1) chunks of S
    for found in launch(counted_elements, world_size, n):
        assert found["ring"] == {"elements": 2 * (world_size - 1) * size, "bytes": 16 * (world_size - 1) * size}
        assert found["ring, earlier form"] == found["ring"]
        assert found["all_reduce"] == {"elements": 1 + n, "bytes": 8 + 4 * n}


@pytest.mark.parametrize("world_size", WORLDS)
def test_on_some_rank_and_the_broadcast_from_a_groups_first_rank(world_size):
    reports = launch(agreement_and_broadcast, world_size)
    for rank, report in enumerate(reports):
        assert report["used"] == [True, False, True, True]
        source = 1 if rank > 0 else 0           # the group of ranks 1 … N−1 takes global rank 1's values
        assert report["values"] == [[float(source)] * 3, [10.0 + source] * 4]


@pytest.mark.parametrize("world_size", WORLDS)
def test_the_tally_comes_back_summed_with_no_extra_all_reduce_and_a_bad_weight_names_its_rank(world_size):
    weights = [r + 1.0 for r in range(world_size)]
    mean = sum(w * r for r, w in enumerate(weights)) / sum(weights)
    for rank, report in enumerate(launch(tally_and_refusal, world_size)):
        assert report["tally"] == [sum(range(world_size)), world_size]
        assert report["buckets"] == 2 and report["all-reduces"] == 2
        assert report["values"] == pytest.approx([mean, 2 * mean], abs=1e-6)
        assert f"rank {rank}: weight must be a finite number ≥ 0" in report["refusal"]


def test_unflatten_gives_views_and_copy_back_writes_scaled_copies():
    like = [torch.zeros(2, 3), torch.zeros(0), torch.zeros(4)]
    flat = torch.arange(11.0)                   # one element more than the tensors hold
    views = co.unflatten(flat, like)
    assert [v.shape for v in views] == [t.shape for t in like]
    assert views[2].data_ptr() == flat[6:].data_ptr() and views[2].tolist() == [6.0, 7.0, 8.0, 9.0]
    co.copy_back(like, flat.clone(), scale=0.5)
    assert like[0].flatten().tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5] and like[2].tolist() == [3.0, 3.5, 4.0, 4.5]
    assert co.flatten(like).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]


@pytest.mark.parametrize("value, bounds, words", [
    (0, dict(above=0), "x must be a positive number, got 0"),
    (True, dict(above=0), "x must be a positive number, got True"),
    (-1, dict(minimum=0), "x must be a finite number ≥ 0, got -1"),
    (float("inf"), dict(minimum=0), "x must be a finite number ≥ 0, got inf"),
    (1.5, dict(above=0, maximum=1), r"x must be a number in \(0, 1\], got 1.5"),
    ("3", dict(), "x must be a finite number, got '3'"),
])
def test_one_check_of_a_real_number_names_it_and_its_bounds(value, bounds, words):
    with pytest.raises(ValueError, match=words):
        real_number("x", value, **bounds)


def test_the_checks_return_the_number_within_its_bounds():
    assert real_number("x", 1, above=0, maximum=1) == 1.0 and isinstance(real_number("x", 3, minimum=0), float)
    assert whole_number("k", 3, maximum=3) == 3
    with pytest.raises(ValueError, match="k must be an integer between 1 and 3, got 4"):
        whole_number("k", 4, maximum=3)


def test_outside_a_process_group_the_error_says_how_to_start_one():
    with pytest.raises(RuntimeError, match="launch"):
        co.rank_and_size()


def test_the_earlier_counting_refuses_a_name_it_does_not_count():
    from nnpar_lite.util import counting

    with pytest.raises(ValueError, match="counting knows .* got 'gather'"):
        counting(None, "gather", {})
