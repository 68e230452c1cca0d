"""A GPT block split by Megatron's tensor parallelism, with and without sequence parallelism,
on 2, 3 and 4 ranks, against the unsplit block: output, input gradient, every parameter's
gradient (the shard's rows or columns of the full gradient), in float64."""

import pytest

from nnpar_lite.distributed import launch
from tensor_parallel_workers import block_against_unsplit, refuses_heads_that_do_not_divide


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tensor", "tensor+sequence"])
def test_a_split_block_equals_the_unsplit_block(world_size, sequence_parallel):
    for result in launch(block_against_unsplit, world_size, sequence_parallel):
        gaps = result["gaps"]
        assert len(gaps) == 2 + 12 and max(gaps.values()) < 1e-12, gaps


def test_tensor_parallelism_runs_two_all_reduces_forward_and_two_backward():
    ops = launch(block_against_unsplit, 2, False)[0]["ops"]
    assert ops == ["all_reduce"] * 4


def test_sequence_parallelism_turns_them_into_all_gathers_and_reduce_scatters():
    """Backward: each row-parallel layer's all-gather, each column-parallel layer's input gathered
    again (it kept its chunk only) and its input gradient reduce-scattered."""
    ops = launch(block_against_unsplit, 2, True)[0]["ops"]
    assert ops == ["all_gather", "reduce_scatter"] * 2 + ["all_gather", "all_gather", "reduce_scatter"] * 2


def test_heads_that_do_not_divide_are_refused_naming_both_numbers():
    assert "5 attention heads do not divide among the 2 ranks" in launch(refuses_heads_that_do_not_divide, 2)[0]
