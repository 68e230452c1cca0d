"""Chapter 12's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest
import torch.distributed as dist

from exercise_proofs import assert_check_is_proven


def place_with_tp_slowest(rank, dp, tp, pp):
    """Numbers the ranks with dp fastest, r = (t · pp + p) · dp + d: a stage's tp ranks land apart."""
    d, p, t = rank % dp, rank // dp % pp, rank // (dp * pp)

    def at(d, p, t):
        return (t * pp + p) * dp + d

    return {"coordinates": (d, p, t), "tp": [at(d, p, k) for k in range(tp)],
            "pp": [at(d, k, t) for k in range(pp)], "dp": [at(k, p, t) for k in range(dp)]}


def place_with_dp_and_pp_swapped(rank, dp, tp, pp):
    """r = (p · dp + d) · tp + t: right whenever dp or pp is 1, wrong on a real 3-D mesh."""
    p, d, t = rank // (dp * tp), rank // tp % dp, rank % tp

    def at(d, p, t):
        return (p * dp + d) * tp + t

    return {"coordinates": (d, p, t), "tp": [at(d, p, k) for k in range(tp)],
            "pp": [at(d, k, t) for k in range(pp)], "dp": [at(k, p, t) for k in range(dp)]}


def broadcast_the_first_stages_gradient(stage, group=None):
    """The two copies stay equal, but both miss the head's gradient."""
    if stage.num_stages == 1 or not (stage.first or stage.last):
        return
    weight = stage.wte.weight if stage.first else stage.lm_head.weight
    dist.broadcast(weight.grad, src=dist.get_global_rank(group, 0), group=group)


def average_the_two_uses(stage, group=None):
    """Averages as data parallelism does: half the tied gradient."""
    if stage.num_stages == 1 or not (stage.first or stage.last):
        return
    weight = stage.wte.weight if stage.first else stage.lm_head.weight
    dist.all_reduce(weight.grad, group=group)
    weight.grad /= 2


WRONG_ANSWERS = {
    "12.1": [(16, "fp16 weights alone"), (8, "12 bytes of state"), (6, "d = 16, 8, 4")],
    "12.2": [(32768, "Four all-reduces"), (131072, "holds 2 blocks"), (16384, "2 (t − 1)/t")],
    "12.3": [(place_with_tp_slowest, "case rank 5 of dp = 2, tp = 2, pp = 2: expected"),
             (place_with_dp_and_pp_swapped, "case rank 5 of dp = 2, tp = 2, pp = 2: expected")],
    "12.4": [(broadcast_the_first_stages_gradient, "case dp = 1, pp = 2, rank 0 of 2: expected"),
             (average_the_two_uses, "two uses")],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG_ANSWERS))
def test_check_is_proven(capsys, exercise_id):
    assert_check_is_proven(capsys, exercise_id, WRONG_ANSWERS[exercise_id])


def test_the_answers_follow_from_the_numbers_the_prompts_state():
    from nnpar_lite.exercises.capstone import BUDGET, largest_data_parallel
    assert BUDGET == dict(num_params=13e9, gpus=16, gigabytes=80)
    assert largest_data_parallel(13e9, 16, 80) == 4 and largest_data_parallel(13e9, 16, 200) == 8
