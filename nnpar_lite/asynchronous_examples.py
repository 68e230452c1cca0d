"""Stale gradient descent on the smallest example there is, a quadratic: chapter 09 runs it on
both sides of :func:`nnpar_lite.asynchronous.largest_stable_lr`'s bound. (It belongs beside
the bound in :mod:`nnpar_lite.asynchronous`, where it is to move.)
"""

from __future__ import annotations


def delayed_quadratic(lr: float, staleness: int, *, curvature: float = 1.0, steps: int = 60) -> list[float]:
    """θ_t of stale gradient descent on L = λ θ² / 2 from θ_0 = 1: θ_{t+1} = θ_t − η λ θ_{t−τ}."""
    theta = [1.0]
    for t in range(steps):
        theta.append(theta[-1] - lr * curvature * theta[max(0, t - staleness)])
    return theta
