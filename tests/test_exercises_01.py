"""Chapter 01's exercise checks, proven: the solution passes, typical wrong answers fail."""

import pytest

from nnpar_lite import costmodel
from nnpar_lite.exercises import all_exercises, check


def efficiency_instead(speedup, workers):
    """S / p is the parallel efficiency, not Amdahl's fraction."""
    return speedup / workers


def forgets_the_workers(speedup, workers):
    """1 − 1/S: right only as p → ∞."""
    return 1 - 1 / speedup


def gustafson_instead(speedup, workers):
    """Gustafson's law solved for f: S = (1 − f) + f p."""
    return (speedup - 1) / (workers - 1)


WRONG_ANSWERS = {
    "01.1": [("a", "pipeline parallelism"), ("b", "data parallelism"), ("D", "tensor parallelism"),
             ("e", "not one of the letters")],
    "01.2": [(5.12e9, "forward pass alone"), (1.024e10, "two gradients"), (6e7, "one sample"),
             (1.5e10, "close: give more digits")],
    "01.3": [(20, "the curve's limit"), (10, "S = p holds"), (18, "is not it")],
    "01.4": [(efficiency_instead, "case S = 1.5 on 2 workers: expected 0.6666666667, got 0.75. That is the parallel "
                                  "efficiency"),
             (forgets_the_workers, "infinitely many workers"), (gustafson_instead, "expected 0.6666666667")],
}



def test_the_answers_agree_with_the_cost_model():
    """01.3 and 01.4's solutions, against costmodel's Amdahl law written independently."""
    assert costmodel.amdahl_speedup(0.95, 19) == pytest.approx(10, abs=1e-12)
    assert costmodel.amdahl_speedup(0.95, 18) < 9.9
    fraction = all_exercises()["01.4"].solution
    for f in (0.0, 0.3, 0.9, 1.0):
        for p in (2, 3, 64):
            assert fraction(costmodel.amdahl_speedup(f, p), p) == pytest.approx(f, abs=1e-12)


def test_a_letter_in_parentheses_or_capitals_is_read(capsys):
    assert check("01.1", "(C)")
    assert "c is right" in capsys.readouterr().out
