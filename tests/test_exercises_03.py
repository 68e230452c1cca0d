"""Chapter 03's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest
import torch
import torch.distributed as dist


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


def sum_round_the_ring(tensor):
    """A slow but right sum over send and recv: each whole tensor travels p − 1 steps round the ring."""
    rank, world = dist.get_rank(), dist.get_world_size()
    total, passing = tensor.clone(), tensor.clone()
    for _ in range(world - 1 if tensor.numel() else 0):
        arriving = torch.empty_like(tensor)
        request = dist.isend(passing, (rank + 1) % world)
        dist.recv(arriving, (rank - 1) % world)
        request.wait()
        total += arriving
        passing = arriving
    return total


def ring_that_averages(tensor):
    """Sums round the ring, then divides: the average, where the sum was asked for."""
    tensor.copy_(sum_round_the_ring(tensor) / dist.get_world_size())


def ring_that_rebinds(tensor):
    """Computes the sum into a new tensor and rebinds the name: the caller's tensor never changes."""
    tensor = sum_round_the_ring(tensor)
    return tensor


def ring_by_all_reduce(tensor):
    """torch's all-reduce, where the exercise asks for the ring over send and recv."""
    dist.all_reduce(tensor)


WRONG_ANSWERS = {
    "03.1": [(128, "sum over all samples"), (4, "its own samples"), (1, "mean losses")],
    "03.2": [(2_000_000, "n/p elements"), (750_000, "one phase"), (6_000_000, "not the whole tensor")],
    "03.3": [(120, "divides it by K"), (1, "sums over each shard"), (5, "counts samples"), (40, "is not it")],
    "03.4": [(ring_for_two_ranks_only, "rank 0 of 3: first difference at index 0"),
             (ring_that_forgets_the_all_gather, "holds the sum and chunk"),
             (ring_that_averages, "average over the 2 ranks"), (ring_that_rebinds, "unchanged"),
             (ring_by_all_reduce, "uses all_reduce")],
}



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
