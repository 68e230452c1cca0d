"""Finite differences against an analytic gradient: the check for any hand-written backward pass.

For each parameter entry θ_k the central difference

    g_k ≈ (L(θ + ε e_k) − L(θ − ε e_k)) / (2 ε)

has an error of order ε² (plus rounding of order machine-ε · |L| / ε), so with
float64 and ε = 1e-6 a correct gradient agrees to about 1e-8 relative error.
The relative error per parameter is ‖a − g‖ / (‖a‖ + ‖g‖) over all its entries
(a norm, not an entry-by-entry ratio: an entry whose gradient is nearly zero,
such as behind a saturated tanh, would otherwise compare rounding noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_TOLERANCE = 1e-6  # float64, ε = 1e-6: a correct gradient lands near 1e-9


@dataclass
class GradientCheck:
    """One row per parameter: its relative error, or why it could not be compared."""

    rows: dict[str, tuple[float, str]]
    tolerance: float

    @property
    def passed(self) -> bool:
        return all(error <= self.tolerance for error, _ in self.rows.values())

    def failing(self) -> list[str]:
        return [name for name, (error, _) in self.rows.items() if not error <= self.tolerance]

    def __str__(self) -> str:
        """The verdicts at the tolerance: a passing gradient's exact error depends on the
        machine's rounding, so it is reported as "below" the tolerance, a failing one as is."""
        tolerance = f"{self.tolerance:.0e}".replace("e-0", "e-")
        lines = [f"{'parameter':<10} {'relative error':<16} verdict"]
        for name, (error, note) in self.rows.items():
            if error <= self.tolerance:
                lines.append(f"{name:<10} {'below ' + tolerance:<16} ok")
            else:
                lines.append(f"{name:<10} {error:<16.2g} WRONG{'  ' + note if note else ''}")
        lines.append("all gradients agree" if self.passed else f"wrong: {', '.join(self.failing())}")
        return "\n".join(lines)

    __repr__ = __str__


def numerical_gradient(loss: Callable[[], float], param: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of ``loss()`` with respect to every entry of ``param`` (changed in
    place and restored)."""
    grad = np.zeros_like(param, dtype=np.float64)
    for index in np.ndindex(param.shape):
        saved = param[index]
        param[index] = saved + eps
        up = loss()
        param[index] = saved - eps
        down = loss()
        param[index] = saved
        grad[index] = (up - down) / (2 * eps)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """‖a − g‖ / (‖a‖ + ‖g‖): 0 when equal, 1 when of opposite sign or one is zero."""
    scale = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    return float(np.linalg.norm(analytic - numeric) / scale) if scale > 1e-300 else 0.0


def gradient_check(loss: Callable[[], float], params: dict[str, np.ndarray], analytic: dict,
                   *, eps: float = 1e-6, tolerance: float = DEFAULT_TOLERANCE) -> GradientCheck:
    """Compare ``analytic[name]`` with central differences of ``loss()`` for each parameter.

    ``loss`` takes no arguments and reads ``params`` (perturbed in place, then
    restored). A gradient of the wrong shape is reported as wrong, not raised.
    """
    if not isinstance(params, dict) or not isinstance(analytic, dict):
        raise TypeError("params and analytic must be dicts of arrays, name → array")
    missing = set(params) - set(analytic)
    if missing:
        raise ValueError(f"analytic gradients are missing for {sorted(missing)}")
    rows = {}
    for name, param in params.items():
        if param.dtype != np.float64:
            raise TypeError(f"parameter {name!r} is {param.dtype}; finite differences need float64")
        numeric = numerical_gradient(loss, param, eps)
        given = np.asarray(analytic[name], dtype=np.float64)
        if given.shape != param.shape:
            rows[name] = (float("inf"), f"shape {given.shape}, parameter is {param.shape}")
        else:
            rows[name] = (relative_error(given, numeric), "")
    return GradientCheck(rows, tolerance)
