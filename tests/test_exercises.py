"""The exercise machinery: every registered exercise is proven by a chapter's test file, and a
learner's function reaches spawned ranks or is refused in plain words."""

import importlib
import linecache
from pathlib import Path

import pytest
import torch

from nnpar_lite.exercises import all_exercises, check, solution
from nnpar_lite.exercises.core import carry, define_again

TESTS = Path(__file__).resolve().parent


def test_every_exercise_is_proven_by_a_test_file():
    proven = {}
    for path in sorted(TESTS.glob("test_exercises_*.py")):
        proven.update(importlib.import_module(path.stem).WRONG_ANSWERS)
    missing = sorted(set(all_exercises()) - set(proven))
    assert not missing, f"exercises without a proof in tests/test_exercises_*.py: {missing}"
    assert all(len(wrong) >= 2 for wrong in proven.values())


def test_ids_name_a_chapter_and_a_number():
    for exercise_id in all_exercises():
        chapter, number = exercise_id.split(".")
        assert len(chapter) == 2 and chapter.isdigit() and number.isdigit(), exercise_id


def test_an_unknown_id_is_named():
    with pytest.raises(ValueError, match="no exercise '99.9'"):
        check("99.9", 1)


def test_solution_is_shown_only_when_asked(capsys):
    solution("03.1")
    assert "32" in capsys.readouterr().out


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


@pytest.mark.parametrize("source, namespace, words", [
    ("def outer():\n    k = 2\n    def inner(t):\n        return t * k\n    return inner\nf = outer()\n", {},
     "enclosing function"),
    ("def f(t):\n    return helper(t)\n", {"helper": None}, "helper, which is defined elsewhere"),
    ("f = lambda t: t\n", {}, "lambda"),
])
def test_what_cannot_travel_is_refused_in_plain_words(source, namespace, words):
    fn = notebook_function(source, "f", namespace)
    with pytest.raises(ValueError, match=words):
        carry(fn)
