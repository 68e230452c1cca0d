"""The exercises: one module per chapter holds its checks, hints and solutions, registered by id.

    from nnpar_lite.exercises import check, hint, solution
    check("03.2", answer)      # prints ✔, or ✘ with what is wrong
    hint("03.2")               # a nudge, without the answer
    solution("03.2")           # one answer and why, only when asked

How an exercise is written: :mod:`nnpar_lite.exercises.core`.
"""

from .core import (Case, Exercise, Probe, all_exercises, check, check_number, hint, number_exercise, register,
                   solution, verdict)

__all__ = ["Case", "Exercise", "Probe", "all_exercises", "check", "check_number", "hint", "number_exercise",
           "register", "solution", "verdict"]
