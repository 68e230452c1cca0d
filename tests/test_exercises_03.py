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
    "03.3": [(120, "divides it by K"), (1, "sums over each shard"), (40, "whatever the shard sizes")],
    "03.4": [(ring_for_two_ranks_only, "rank 0 of 3"), (ring_that_forgets_the_all_gather, "expected")],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG_ANSWERS))
def test_check_is_proven(capsys, exercise_id):
    assert_check_is_proven(capsys, exercise_id, WRONG_ANSWERS[exercise_id])


def test_the_widget_shows_the_scale_03_2_asks_for():
    """03.3's answer is what the chapter's widget shows for K = 5, skew 0.8, sum loss, plain mean."""
    from nnpar_lite.experiments.data_parallel import gradient_comparison
    shown = gradient_comparison(num_workers=5, skew=0.8, reduction="sum", weighted=False)
    assert len(set(shown["sizes"])) == 5 and shown["scale"] == pytest.approx(24, rel=1e-12)


def test_an_unsolved_stub_starts_no_rank(capsys, monkeypatch):
    """The stored notebook's cell: "not solved yet", without spawning processes."""
    from test_exercises import notebook_function

    from nnpar_lite import distributed
    from nnpar_lite.exercises import check

    monkeypatch.setattr(distributed, "launch", lambda *a, **k: pytest.fail("a stub started ranks"))
    stub = notebook_function('def ring(tensor):\n    """Sum in place."""\n    raise NotImplementedError  # your code here\n',
                             "ring")
    assert not check("03.4", stub) and "not solved yet" in capsys.readouterr().out
