"""The exercises: one module per chapter holds its checks and solutions, registered by id.

    from nnpar_lite.exercises import check, solution
    check("03.2", answer)      # prints ✔ or ✘ with the first failing case and a hint
    solution("03.2")           # only when asked
"""

from .core import Case, Exercise, all_exercises, check, check_number, register, solution, verdict

__all__ = ["Case", "Exercise", "all_exercises", "check", "check_number", "register", "solution", "verdict"]
