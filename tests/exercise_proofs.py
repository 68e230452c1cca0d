"""What every exercise test does: the solution passes, each typical wrong answer fails and its
printed hint says what is wrong, and an unanswered exercise reads "not solved yet"."""

from nnpar_lite.exercises import all_exercises, check


def assert_check_is_proven(capsys, exercise_id: str, wrong_answers: list) -> None:
    exercise = all_exercises()[exercise_id]
    assert check(exercise_id, exercise.solution), capsys.readouterr().out
    assert "✔" in capsys.readouterr().out
    assert len(wrong_answers) >= 2, f"{exercise_id}: prove the check with at least two wrong answers"
    for answer, fragment in wrong_answers:
        assert not check(exercise_id, answer), f"{exercise_id} accepted a wrong answer {answer!r}"
        printed = capsys.readouterr().out
        assert "✘" in printed and fragment in printed, f"{exercise_id}: {fragment!r} missing from {printed!r}"
    assert not check(exercise_id, None)
    assert "not solved yet" in capsys.readouterr().out
