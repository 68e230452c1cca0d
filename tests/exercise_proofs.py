"""What every exercise test does: the solution passes, each typical wrong answer fails with the
words that name its mistake and the way on (hint, then solution), and an unanswered exercise
reads "not solved yet". The typical wrong answers live in each chapter's tests/test_exercises_CC.py."""

import importlib
from pathlib import Path

from nnpar_lite.exercises import all_exercises, check

TESTS = Path(__file__).resolve().parent


def wrong_answers() -> dict[str, list]:
    """Every chapter's WRONG_ANSWERS, by exercise id."""
    found = {}
    for path in sorted(TESTS.glob("test_exercises_*.py")):
        found.update(importlib.import_module(path.stem).WRONG_ANSWERS)
    return found


def assert_check_is_proven(capsys, exercise_id: str, wrong: list) -> None:
    exercise = all_exercises()[exercise_id]
    assert check(exercise_id, exercise.solution), capsys.readouterr().out
    assert "✔" in capsys.readouterr().out
    assert len(wrong) >= 2, f"{exercise_id}: prove the check with at least two wrong answers"
    for answer, fragment in wrong:
        assert not check(exercise_id, answer), f"{exercise_id} accepted a wrong answer {answer!r}"
        printed = capsys.readouterr().out
        assert "✘" in printed and fragment in printed, f"{exercise_id}: {fragment!r} missing from {printed!r}"
        assert f'Stuck? hint("{exercise_id}"), then solution("{exercise_id}")' in printed, printed
    assert not check(exercise_id, None)
    assert "not solved yet" in capsys.readouterr().out
