"""Self-checks for the chapters' exercises: a learner's answer in, a verdict out.

Each check prints a short verdict and returns True or False, so a learner can
try again. Solutions sit in the notebooks behind a collapsed "Solution" block.
"""

from __future__ import annotations

import math


def _verdict(ok: bool, right: str, wrong: str) -> bool:
    print(("✔ " + right) if ok else ("✘ " + wrong))
    return ok


def check_number(answer, expected: float, *, rel: float = 1e-6, hint: str = "") -> bool:
    """Is ``answer`` a number within ``rel`` (relative) of ``expected``?"""
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return _verdict(False, "", f"{answer!r} is not a number. {hint}".strip())
    ok = math.isclose(value, expected, rel_tol=rel, abs_tol=1e-12)
    return _verdict(ok, f"{value:g} is right.", f"{value:g} is not it. {hint}".strip())


def check_weighted_loss(answer) -> bool:
    """Chapter 00: two workers report mean losses 0.9 (over 10 samples) and 0.3 (over
    30 samples). What is the mean loss over all 40 samples?"""
    return check_number(answer, (0.9 * 10 + 0.3 * 30) / 40,
                        hint="Weight each worker's mean by its number of samples.")


# ------------------------------------------------------------------ chapter 02
def planted_fault_network(seed: int = 3):
    """A 4.2 network whose backward pass hides one fault. Which parameter's gradient is wrong?"""
    from .models import TanhNetwork, mse_output_gradient
    import numpy as np

    class Planted(TanhNetwork):
        def gradients(self, X, Y):
            p = self.params
            X1 = X @ p["W1"] + p["b1"]
            H = np.tanh(X1)
            dY = mse_output_gradient(H @ p["W2"] + p["b2"], Y)
            dX1 = (dY @ p["W2"].T) * (1.0 - H ** 2)
            return {"W1": X.T @ dX1, "b1": dX1.sum(axis=0), "W2": X1.T @ dY, "b2": dY.sum(axis=0)}

    return Planted(seed=seed)


def check_planted_fault(answer) -> bool:
    """Chapter 02: name the parameter whose gradient is wrong in ``planted_fault_network()``."""
    ok = str(answer).strip() == "W2"
    return _verdict(ok, "W2 it is: its gradient uses the pre-activation X1 where H = tanh(X1) belongs.",
                    f"{answer!r} is not it. Run gradient_check on the planted network and read the verdicts.")


def check_largest_lr(answer) -> bool:
    """Chapter 02: the largest learning rate at which full-batch gradient descent on the
    repaired 4.1 model still converges on the article's data (within 2 %)."""
    from .data import article_data
    from .models import largest_stable_lr

    return check_number(answer, largest_stable_lr(article_data()[0]), rel=0.02,
                        hint="Bisect: fit with a learning rate, see whether the loss falls or grows.")


# ------------------------------------------------------------------ chapter 03
def check_sum_reduction_scale(answer) -> bool:
    """Chapter 03: 4 ranks, 32 samples each, loss reduced with sum, gradients averaged by
    DDP. By what factor is the gradient larger than that of the mean loss of all 128?"""
    return check_number(answer, 32, hint="DDP averages the 4 ranks' gradients; each is a sum over 32 samples.")


def check_ring_elements(answer) -> bool:
    """Chapter 03: ring all-reduce of n = 1,000,000 elements over p = 4 ranks. How many
    elements does each rank send in all (reduce-scatter plus all-gather)?"""
    return check_number(answer, 2 * 3 / 4 * 1_000_000,
                        hint="p − 1 steps in each phase; each step sends one chunk of n / p elements.")


# ------------------------------------------------------------------ chapter 04
def check_bytes_per_epoch(answer) -> bool:
    """Chapter 04: P = 2,410 float32 parameters, K = 4 workers, 12 local steps per epoch,
    averaged every H = 4 steps by a ring all-reduce. Bytes sent per worker per epoch?"""
    return check_number(answer, 12 / 4 * 2 * 3 / 4 * 2410 * 4,
                        hint="rounds per epoch × 2 (K − 1)/K × P values × 4 bytes.")


def check_permutation(model, permutation) -> bool:
    """Chapter 04: does ``permutation`` of the hidden units leave the function unchanged while
    moving the parameters? (It must not be the identity.)"""
    import torch

    from .model_averaging import permute_hidden_units

    try:
        permuted = permute_hidden_units(model, permutation)
    except (ValueError, TypeError, IndexError) as error:
        return _verdict(False, "", f"not a permutation of the hidden units: {error}")
    x = torch.randn(16, model[0].in_features)
    with torch.no_grad():
        same_function = torch.allclose(model(x), permuted(x), atol=1e-6)
        moved = any(not torch.equal(p, q) for p, q in zip(model.parameters(), permuted.parameters()))
    return _verdict(same_function and moved, "Same function, different parameters: averaging the two would not "
                    "give back the function.", "That one leaves the parameters where they were (the identity?).")


# ------------------------------------------------------------------ chapter 05
def check_microbatches_for_bubble(answer) -> bool:
    """Chapter 05: with p = 4 stages, the smallest number of micro-batches m for which the
    bubble (p − 1)/(m + p − 1) is below 10 %."""
    from .costmodel import bubble_fraction

    smallest = next(m for m in range(1, 1000) if bubble_fraction(4, m) < 0.1)
    return check_number(answer, smallest, hint="Solve 3 / (m + 3) < 0.1 for the smallest whole m.")


def check_halo_pixels(answer) -> bool:
    """Chapter 05: a 3×3 'same' convolution on a 64×64 image cut into 2×2 tiles. How many
    pixels does the top-left tile receive from its neighbours?"""
    from .spatial import halo_fraction

    return check_number(answer, halo_fraction(64, 64, (2, 2), 3)["halo pixels"] / 4,
                        hint="Its window is one row and one column larger on the inner sides; the outer "
                             "sides are zero padding, which nobody sends.")
