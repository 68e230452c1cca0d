"""Chapter 12's typical wrong answers (tests/test_exercises.py proves each check with them)."""

import torch.distributed as dist


def place_with_tp_slowest(rank, dp, tp, pp):
    """Numbers the ranks with dp fastest, r = (t · pp + p) · dp + d: a stage's tp ranks land apart."""
    d, p, t = rank % dp, rank // dp % pp, rank // (dp * pp)

    def at(d, p, t):
        return (t * pp + p) * dp + d

    return {"coordinates": (d, p, t), "tp": [at(d, p, k) for k in range(tp)],
            "pp": [at(d, k, t) for k in range(pp)], "dp": [at(k, p, t) for k in range(dp)]}


def place_in_megatrons_order(rank, dp, tp, pp):
    """r = (p · dp + d) · tp + t, Megatron-LM's default: right whenever dp or pp is 1."""
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
    "12.1": [(16, "fp16 weights alone"), (8, "12 bytes of state"), (6, "d must divide the GPUs"),
             (5, "is not it")],
    "12.2": [(49152, "Four all-reduces"), (196608, "half of the blocks"), (24576, "4 bytes"), (60000, "is not it")],
    "12.3": [(place_with_tp_slowest, "dp fastest"), (place_in_megatrons_order, "Megatron-LM's default order")],
    "12.4": [(broadcast_the_first_stages_gradient, "without the head's use"), (average_the_two_uses, "not their average")],
}


def test_the_budget_answer_follows_the_calculator():
    from nnpar_lite.exercises.capstone import largest_data_parallel
    assert largest_data_parallel(13, 16, 80) == 4 and largest_data_parallel(13, 16, 110) == 8
    assert largest_data_parallel(13, 16, 10) == 0          # nothing fits without ZeRO
