"""The exercise machinery: every registered exercise proven (its solution passes, each typical
wrong answer of its chapter's test file fails with the words that name the mistake); verdicts
that say where a result differs and what is close; hints; a learner's function that reaches
spawned ranks with its helpers, or is refused in plain words; bugs on ranks told apart, and a
deadlock named within seconds."""

import linecache
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from exercise_proofs import assert_check_is_proven, wrong_answers
from nnpar_lite.exercises import all_exercises, check, check_number, hint, solution
from nnpar_lite.exercises.compare import difference
from nnpar_lite.exercises.ranks import carry, define_again

WRONG_ANSWERS = wrong_answers()


def test_every_exercise_is_proven_by_a_test_file():
    missing = sorted(set(all_exercises()) - set(WRONG_ANSWERS))
    assert not missing, f"exercises without a proof in tests/test_exercises_*.py: {missing}"
    assert all(len(wrong) >= 2 for wrong in WRONG_ANSWERS.values())


@pytest.mark.parametrize("exercise_id", sorted(WRONG_ANSWERS))
def test_check_is_proven(capsys, exercise_id):
    """The package's answer passes; every listed wrong answer fails, saying what is wrong."""
    assert_check_is_proven(capsys, exercise_id, WRONG_ANSWERS[exercise_id])


def test_ids_name_a_chapter_and_a_number():
    for exercise_id in all_exercises():
        chapter, number = exercise_id.split(".")
        assert len(chapter) == 2 and chapter.isdigit() and number.isdigit(), exercise_id


def test_an_unknown_id_is_named():
    with pytest.raises(ValueError, match="no exercise '99.9'"):
        check("99.9", 1)


def test_solution_is_shown_only_when_asked_with_the_stated_numbers_filled_in(capsys):
    solution("03.1")
    out = capsys.readouterr().out
    assert "32" in out and "{" not in out


@pytest.mark.parametrize("exercise_id", sorted(all_exercises()))
def test_every_exercise_has_a_hint_that_does_not_give_its_number_away(capsys, exercise_id):
    hint(exercise_id)
    printed = capsys.readouterr().out
    assert printed.startswith(f"Exercise {exercise_id}, a hint: ") and len(printed) > 60
    answer = all_exercises()[exercise_id].solution
    if isinstance(answer, (int, float)):
        for written in {f"{answer:g}", f"{answer:,}", f"{answer:.4g}"}:
            assert not re.search(rf"(?<![\w.,]){re.escape(written)}(?![\w,]|\.\d)", printed), printed


def test_importing_the_exercises_draws_nothing():
    """The checks import neither matplotlib nor ipywidgets (they read widgets' numbers from the package)."""
    code = ("import sys; from nnpar_lite.exercises import all_exercises; all_exercises(); "
            "print(sorted(m for m in ('matplotlib', 'ipywidgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("given, words", [
    (0.62, "close: give more digits"), (0.6, "close: give more digits"), (0.61803, "is right"),
    (0.5, "is not it"), (0.6283, "the approximation"), ("fast", "not a number")])
def test_a_number_check_says_right_close_typical_or_wrong(capsys, given, words):
    typical = {0.6283185307: ("the approximation", "近似")}
    check_number(given, 0.6180339887, rel=1e-4, typical=typical)
    assert words in capsys.readouterr().out


def test_a_count_written_exactly_is_not_called_close(capsys):
    check_number(30, 28, rel=0)
    assert "is not it" in capsys.readouterr().out


@pytest.mark.parametrize("expected, got, words", [
    (np.arange(200.0), np.r_[np.arange(150.0), np.zeros(50)], "first difference at index 150: expected 150, got 0 "
                                                              "(50 of 200 values differ)"),
    (torch.ones(3, 4, dtype=torch.float64), torch.ones(4, 3), "expected shape (3, 4), got shape (4, 3)"),
    (np.eye(3), np.eye(3) * [1, 1, 2], "first difference at index (2, 2): expected 1, got 2"),
    ([("F", 0), ("B", 0)], [("F", 0), ("F", 1)], "first difference at position 1: expected ('B', 0), got ('F', 1)"),
    ((torch.zeros(2), torch.ones(300)), (torch.zeros(2), torch.ones(300) * 2), "item 1: first difference at index 0"),
    (0.5, None, "got None"),
])
def test_a_failing_case_shows_where_expected_and_got_first_differ(expected, got, words):
    assert words in difference(expected, got)[0]


def notebook_function(source: str, name: str, namespace: dict | None = None):
    """Define a function as a notebook cell does: in __main__, its source known to linecache."""
    filename = f"<cell {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": "__main__", **(namespace or {})}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def test_a_notebook_function_travels_with_its_imports():
    fn = notebook_function("def twice(t):\n    return torch.mul(t, 2)\n", "twice", {"torch": torch})
    carried = carry(fn)
    assert carried.module is None and carried.imports == (("torch", "torch", None),)
    assert torch.equal(define_again(carried)(torch.ones(2)), torch.full((2,), 2.0))


def test_a_notebook_function_travels_with_its_helpers_and_constants():
    source = ("SCALE = (2, 3)\ndef inner(t):\n    return t * SCALE[0]\n"
              "def outer(t):\n    return inner(t) + SCALE[1]\n")
    fn = notebook_function(source, "outer")
    again = define_again(carry(fn))
    assert again(5) == 13


@pytest.mark.parametrize("source, namespace, words", [
    ("def outer():\n    k = 2\n    def inner(t):\n        return t * k\n    return inner\nf = outer()\n", {},
     "enclosing function"),
    ("def f(t):\n    return data + t\n", {"data": torch.ones(2)}, "data, a Tensor defined elsewhere"),
    ("f = lambda t: t\n", {}, "lambda"),
])
def test_what_cannot_travel_is_refused_in_plain_words(source, namespace, words):
    fn = notebook_function(source, "f", namespace)
    with pytest.raises(ValueError, match=words):
        carry(fn)


def test_a_deadlock_is_named_with_its_case_within_seconds(capsys):
    """Every rank sends first with a blocking send: the check names the deadlock and its case."""
    source = ("def ring(tensor):\n    w = dist.get_world_size()\n    if w > 1:\n"
              "        dist.send(tensor, (dist.get_rank() + 1) % w)\n"
              "        dist.recv(tensor, (dist.get_rank() - 1) % w)\n")
    fn = notebook_function(source, "ring", {"dist": torch.distributed})
    start = time.monotonic()
    assert not check("03.4", fn)
    took = time.monotonic() - start
    out = capsys.readouterr().out
    assert "deadlock" in out and "case length" in out and 'Stuck? hint("03.4")' in out, out
    assert took < 30, f"the deadlock took {took:.0f} s to report"       # about 10 s of waiting, then the report


def test_an_exception_on_one_rank_is_named_with_its_case(capsys):
    source = ("def ring(tensor):\n    if dist.get_rank() == 1:\n        raise KeyError('mine')\n"
              "    dist.barrier()\n")
    fn = notebook_function(source, "ring", {"dist": torch.distributed})
    assert not check("03.4", fn)
    assert "rank 1 of 2: your function raised KeyError: 'mine'" in capsys.readouterr().out
