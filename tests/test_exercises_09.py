"""Chapter 09's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest
import torch
import torch.distributed as dist

from exercise_proofs import assert_check_is_proven


def without_feedback(tensor, residual, k):
    """Top-k without error feedback: the residual is never kept."""
    picks = tensor.abs().topk(k).indices
    sent = torch.zeros_like(tensor)
    sent[picks] = tensor[picks]
    dist.all_reduce(sent)
    tensor.copy_(sent / dist.get_world_size())
    return tensor


def residual_from_the_gradient(tensor, residual, k):
    """Keeps g − sent instead of Δ − sent: last step's residual is lost after one step."""
    delta = tensor + residual
    picks = delta.abs().topk(k).indices
    sent = torch.zeros_like(delta)
    sent[picks] = delta[picks]
    residual.copy_(tensor - sent)
    dist.all_reduce(sent)
    tensor.copy_(sent / dist.get_world_size())
    return tensor


WRONG_ANSWERS = {
    "09.1": [(1200, "no_sync"), (3, "each bucket goes out once")],
    "09.2": [(256, "(n + m) · r"), (1024 / 4, "P (n × r)")],
    "09.3": [(2.0, "2 sin"), (2 / 3, "neither 2/λ")],
    "09.4": [(without_feedback, "after 1 step, rank 0 of 2"), (residual_from_the_gradient, "after 3 steps")],
}


@pytest.mark.parametrize("exercise_id", sorted(WRONG_ANSWERS))
def test_check_is_proven(capsys, exercise_id):
    assert_check_is_proven(capsys, exercise_id, WRONG_ANSWERS[exercise_id])


def template(tensor, residual, k):
    """The exercise's cell as the chapter stores it."""
    raise NotImplementedError  # your code here


def test_the_untouched_template_is_not_solved_yet_without_starting_ranks(capsys, monkeypatch):
    import nnpar_lite.distributed as distributed
    from nnpar_lite.exercises import check

    monkeypatch.setattr(distributed, "launch", lambda *a, **k: (_ for _ in ()).throw(AssertionError("launched")))
    assert not check("09.4", template)
    assert "not solved yet" in capsys.readouterr().out
