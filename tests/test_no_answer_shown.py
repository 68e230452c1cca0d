"""Nothing a learner reads before an exercise gives its answer away: no stored output or code of
the cells before a chapter's exercises shows the body of a solution (two or more of its lines),
and no stored output prints a number exercise's answer (written with 3 or more significant
digits, as Python or a person writes it). A chapter that teaches the function an exercise asks
for shows its interface instead (``nnpar_lite.util.interface``)."""

import inspect
import re
import textwrap
from pathlib import Path

import nbformat
import pytest

from nnpar_lite.exercises import all_exercises
from nnpar_lite.util import interface

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
SECTION = "## Exercises"


def before_the_exercises(chapter: str) -> tuple[str, str]:
    """The code and the stored text outputs of the chapter's cells before its exercise section."""
    code, outputs = [], []
    for cell in nbformat.read(NOTEBOOKS / chapter, as_version=4).cells:
        if cell.cell_type == "markdown" and SECTION in [line.strip() for line in cell.source.splitlines()]:
            break
        if cell.cell_type == "code":
            code.append(cell.source)
            outputs += [o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", [])]
    return "\n".join(code), "\n".join(outputs)


def body_lines(fn) -> list[str]:
    """The lines of ``fn``'s body after its docstring that say something (15 characters or more)."""
    source = textwrap.dedent(inspect.getsource(fn))
    docstring_end = len(interface(fn, "").splitlines()) - 1 if fn.__doc__ else 1
    lines = [line.strip() for line in source.splitlines()[docstring_end:]]
    return [line for line in lines if len(line) >= 15 and not line.startswith("#")]


def written(value: float) -> list[str]:
    """How a stored output may print ``value``: 98,304 and 98304, or 0.667 and 0.6667."""
    if float(value).is_integer():
        return [f"{int(value):,}", f"{int(value)}"]
    return [f"{value:.3g}", f"{value:.4g}", f"{value:.6g}"]


EXERCISES = all_exercises()
# Read and allowed: the number appears, but not as the exercise's answer.
COINCIDENCES = {"09.1": "300 is the number of steps of the error-feedback runs",
                "13.2": "175 is one of the widget's model sizes, which the exercise asks to choose among"}


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_nothing_before_the_exercises_gives_the_answer_away(exercise_id):
    chapter = next(c for c in CHAPTERS if c.startswith(exercise_id[:2]))
    code, outputs = before_the_exercises(chapter)
    answer = EXERCISES[exercise_id].solution
    if inspect.isfunction(answer):
        body = body_lines(answer)
        shown = [line for line in body if line in code or line in outputs]
        assert len(shown) < max(2, len(body) / 2), f"{chapter} shows {exercise_id}'s answer before its exercise: {shown}"
    elif isinstance(answer, (int, float)) and not isinstance(answer, bool) and exercise_id not in COINCIDENCES:
        digits = len(f"{abs(answer):.12e}".split("e")[0].replace(".", "").rstrip("0"))
        if digits >= 3 or abs(answer) >= 100:
            for text in written(answer):
                assert not re.search(rf"(?<![\d.,]){re.escape(text)}(?![\d,]|\.\d)", outputs), \
                    f"{chapter} prints {exercise_id}'s answer {text} before its exercise"


def test_an_interface_shows_the_docstring_and_not_the_body():
    from nnpar_lite.context_parallel import merge_partial
    shown = interface(merge_partial, "10.3")
    assert merge_partial.__doc__.strip().splitlines()[0] in shown and "logaddexp" not in shown
    assert shown.endswith("...  # the body: exercise 10.3's answer")
    with pytest.raises(ValueError, match="no docstring"):
        interface(undocumented, "00.0")


def undocumented():
    return 0
