"""Chapter 04's exercise checks, proven: the solution passes, typical wrong answers fail; and the
statements of exercise 04.3 are re-measured on the widget's own runs."""

import pytest
import torch
import torch.distributed as dist

from nnpar_lite.exercises.model_averaging import TRUE_STATEMENTS
from nnpar_lite.experiments.model_averaging import compare_schemes


def forgets_to_divide(tensors, weight):
    """Σ_r w_r θ_r, never divided by Σ_r w_r."""
    for t in tensors:
        weighted = t * weight
        dist.all_reduce(weighted)
        t.copy_(weighted)


def averages_without_weights(tensors, weight):
    """The article's plain mean 1/K Σ_r θ_r: right only when every weight is the same."""
    for t in tensors:
        dist.all_reduce(t)
        t /= dist.get_world_size()


def rebinds_instead_of_writing(tensors, weight):
    """The weighted average computed right, then bound to a local name: the caller's tensors never
    change (the slip d2l's multi-GPU all-reduce shipped with)."""
    total = torch.tensor([float(weight)], dtype=torch.float64)
    dist.all_reduce(total)
    for t in tensors:
        weighted = t * weight
        dist.all_reduce(weighted)
        t = weighted / total


def replaces_the_list_entries(tensors, weight):
    """The weighted average computed right, stored as new tensors in the list: the list is right,
    the caller's tensors (a model's parameters) never change."""
    total = torch.tensor([float(weight)], dtype=torch.float64)
    dist.all_reduce(total)
    for i, t in enumerate(tensors):
        weighted = t * weight
        dist.all_reduce(weighted)
        tensors[i] = weighted / total


WRONG_ANSWERS = {
    "04.1": [(14_460, "one averaging round"), (173_520, "after every step"), (10_845, "counts values"),
             (57_840, "not 2P"), (40_000, "is not it")],
    "04.2": [(list(range(16)), "identity"), (list(range(32)), "0 to 15"), ([0] * 16, "0 to 15"),
             ([float(i) for i in range(16)][::-1], "0 to 15")],
    "04.3": [("ac", "look again at (e)"), ("abce", "look again at (b)"), ("ace and f", "letters a–e"),
             (3, "letters a–e")],
    "04.4": [(forgets_to_divide, "weights [1, 3], rank 0 of 2: first difference"),
             (averages_without_weights, "plain mean over the ranks"),
             (rebinds_instead_of_writing, "unchanged"), (replaces_the_list_entries, "tensors[i] = ...")],
}



def test_the_statements_hold_on_the_widgets_runs_with_a_margin():
    """Exercise 04.3's key, measured on the runs the widget draws (η = 0.5, 96 local steps)."""
    iid = compare_schemes(8, 32, None)
    skew2, skew8, skew8_h32 = compare_schemes(2, 8, 0.1), compare_schemes(8, 8, 0.1), compare_schemes(8, 32, 0.1)
    tiny_alpha, tiny_alpha_h1 = compare_schemes(4, 8, 0.03), compare_schemes(4, 1, 0.03)
    margins = {                               # > 0: the statement is true; its size: how safely
        "a": 0.02 - abs(iid["averaged"][-1] - iid["synchronous"][-1]),
        "b": skew8["averaged"][-1] - skew2["averaged"][-1],
        "c": 0.5 - max(tiny_alpha["alone"]),
        "d": max(skew8_h32["alone"]) - skew8_h32["averaged"][-1],
        "e": 1e-12 - abs(tiny_alpha_h1["averaged"][-1] - tiny_alpha_h1["synchronous"][-1]),
    }
    assert {k for k, m in margins.items() if m > 0} == TRUE_STATEMENTS, margins
    assert all(abs(m) >= 0.015 for k, m in margins.items() if k != "e"), margins
