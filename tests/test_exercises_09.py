"""Chapter 09's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest
import torch
import torch.distributed as dist



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
    "09.1": [(1200, "no_sync"), (100, "on its own"), (3, "one optimizer step")],
    "09.2": [(256, "both factors"), (512, "r columns"), (1 / 128, "upside down")],
    "09.3": [(2.0, "without staleness"), (2 / 3, "a guess"), (0.628, "approximation"),
             (0.62, "close: give more digits")],
    "09.4": [(without_feedback, "never added back"), (residual_from_the_gradient, "it must be Δ − sent")],
}



def template(tensor, residual, k):
    """The exercise's cell as the chapter stores it."""
    raise NotImplementedError  # your code here


def test_the_untouched_template_is_not_solved_yet_without_starting_ranks(capsys, monkeypatch):
    import nnpar_lite.distributed as distributed
    from nnpar_lite.exercises import check

    monkeypatch.setattr(distributed, "launch", lambda *a, **k: (_ for _ in ()).throw(AssertionError("launched")))
    assert not check("09.4", template)
    assert "not solved yet" in capsys.readouterr().out
