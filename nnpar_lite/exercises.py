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
