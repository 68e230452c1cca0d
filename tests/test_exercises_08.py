"""Chapter 08's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest
import torch.distributed as dist

from exercise_proofs import assert_check_is_proven


def step_without_dividing(flat_params, flat_grad, momentum, lr, beta):
    """Takes the reduce-scatter's sum for the average: N times too large a step."""
    import torch
    from nnpar_lite.sharding import all_gather, reduce_scatter
    rank, chunk = dist.get_rank(), momentum.numel()
    mine = flat_params[rank * chunk:(rank + 1) * chunk]
    momentum.mul_(beta).add_(reduce_scatter(torch.empty_like(momentum), flat_grad))
    mine -= lr * momentum
    all_gather(flat_params, mine.clone())


def step_without_the_all_gather(flat_params, flat_grad, momentum, lr, beta):
    """Updates its own chunk and forgets to share it: the other chunks stay stale."""
    import torch
    from nnpar_lite.sharding import reduce_scatter
    rank, world, chunk = dist.get_rank(), dist.get_world_size(), momentum.numel()
    momentum.mul_(beta).add_(reduce_scatter(torch.empty_like(momentum), flat_grad) / world)
    flat_params[rank * chunk:(rank + 1) * chunk] -= lr * momentum


WRONG_ANSWERS = {
    "08.1": [(13.5, "ZeRO-2 shards the gradients"), (48, "2 + 2 + 12")],
    "08.2": [(1333.33, "⌈n / N⌉"), (4000, "zero-padded")],
    "08.3": [(3_600_000, "(N − 1)/N"), (1_800_000, "all-gather again")],
    "08.4": [(step_without_dividing, "rank 0 of 3"), (step_without_the_all_gather, "rank 0 of 3")],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG_ANSWERS))
def test_check_is_proven(capsys, exercise_id):
    assert_check_is_proven(capsys, exercise_id, WRONG_ANSWERS[exercise_id])
