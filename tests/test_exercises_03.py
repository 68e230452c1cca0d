"""Chapter 03's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest
import torch.distributed as dist

from exercise_proofs import assert_check_is_proven


def ring_for_two_ranks_only(tensor):
    """Swaps with the one neighbour: right for K = 2, wrong for K ≥ 3."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return tensor
    other = tensor.clone()
    request = dist.isend(tensor.clone(), (rank + 1) % world)
    dist.recv(other, (rank - 1) % world)
    request.wait()
    tensor.add_(other)
    return tensor


def ring_that_forgets_the_all_gather(tensor):
    """The reduce-scatter alone: each rank holds one chunk of the sum, the rest partial."""
    import torch
    rank, world = dist.get_rank(), dist.get_world_size()
    chunks = list(torch.tensor_split(tensor, world))
    for step in range(world - 1):
        send, receive = chunks[(rank - step) % world], chunks[(rank - step - 1) % world]
        incoming = torch.empty_like(receive)
        request = dist.isend(send.clone(), (rank + 1) % world)
        dist.recv(incoming, (rank - 1) % world)
        request.wait()
        receive.add_(incoming)
    return tensor


WRONG_ANSWERS = {
    "03.1": [(128, "each is a sum"), (4, "each is a sum")],
    "03.2": [(2_000_000, "p − 1 steps"), (750_000, "Two phases")],
    "03.3": [(ring_for_two_ranks_only, "rank 0 of 3"), (ring_that_forgets_the_all_gather, "expected")],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG_ANSWERS))
def test_check_is_proven(capsys, exercise_id):
    assert_check_is_proven(capsys, exercise_id, WRONG_ANSWERS[exercise_id])
