"""How every exercise is checked: a verdict like a good test suite's, in the edition's language.

The learner's side, three calls (``from nnpar_lite.exercises import check, hint, solution``)::

    check("05.2", answer)   # ✔, or ✘ with what is wrong, then: Stuck? hint("05.2"), then solution("05.2")
    hint("05.2")            # a nudge that does not give the answer
    solution("05.2")        # one answer and why, only when asked

An answer still ``None``, or a function whose body is only ``raise NotImplementedError``, gets
"not solved yet", so a stored notebook shows no answer.

The author's side. A chapter's module (``exercises/<topic>.py``) registers each exercise under
its id ``"CC.N"``:

- **A number.** :func:`number_exercise` takes the numbers the prompt states
  (``stated={"p": 6, "m": 10, "stage": 2}``) and the function that computes the answer from
  them with the package function the chapter teaches
  (``answer=lambda p, m, stage: costmodel.peak_activations(p, m, stage, "1f1b")``), never a
  typed constant. ``wrong`` lists typical wrong beliefs, each computed from the same numbers
  with what it gets wrong, so that the ✘ names the belief. A widget exercise computes its
  answer with the widget's own computation at the stated settings, through a function that
  imports neither matplotlib nor ipywidgets. ``tests/test_exercise_prompts.py`` reads the
  stated numbers out of the prompt in both editions, and checks that no typical wrong belief
  gives the answer.
- **A choice** (a letter, a name): :class:`Exercise` with a check built on :func:`verdict`.
- **A function, in one process**: :func:`run_cases` runs it and a reference on unseen
  :class:`Case` s, each named in both editions (``Case(("uneven sizes 10 and 30", "大小不等的 10
  和 30"), args)``); :func:`report` names the first failing case in the edition's language and
  where expected and got first differ (:func:`difference`: the index and both values), with the
  message of the first :class:`Probe` that recognises the bug.
- **A function on real ranks**: :func:`nnpar_lite.exercises.ranks.check_on_ranks` carries the
  learner's function (and the helpers and constants it uses from the notebook) to spawned
  processes, runs a driver on each case, and tells the common bugs apart with probes
  (averaged instead of summed, not in place, a wrong chunk); a rank that makes no progress
  for 10 s is reported as a deadlock with its case.

Every exercise has a ``hint`` (English, Chinese) and an ``explanation`` shown after its solution;
an explanation may name the stated numbers and the answer as ``{p}`` or ``{answer}``.
:func:`check_number` says "close: give more digits" for a rounding of the answer.
Each exercise is proven in ``tests/test_exercises.py``: its solution passes, and every typical
wrong answer listed in ``tests/test_exercises_CC.py`` (``WRONG_ANSWERS``) fails with the words
that name its mistake.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import numbers
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..language import say
from .compare import as_array, as_number, difference, same_number, same_sequence, same_values  # noqa: F401

TYPICAL_REL = 1e-4   # a typical wrong value is recognised within this (or the check's own tolerance, if larger)
NOT_SOLVED = ("not solved yet: write your answer in place of None (or the function's body), then run the cell again.",
              "尚未作答：把 None（或函数体）换成你的答案，再运行这个单元格。")


@dataclass
class Exercise:
    """One exercise: ``check(answer) -> bool`` prints its verdict, and ``solution`` passes it (a
    value, or a function whose source is the answer); ``hint`` is the nudge :func:`hint` prints,
    ``explanation`` follows the solution, ``stated`` holds the numbers the prompt gives (English,
    Chinese pairs for the texts)."""
    id: str
    check: Callable[[Any], bool]
    solution: Any
    explanation: tuple[str, str] = ("", "")
    hint: tuple[str, str] = ("", "")
    stated: dict[str, float] = field(default_factory=dict)
    typical: list[tuple[float, tuple[str, str]]] = field(default_factory=list)


REGISTRY: dict[str, Exercise] = {}


class Verdict:
    """What ``check`` returns: true when the answer passes. The check has printed its message
    already, so a notebook shows nothing more for it (not a bare ``True`` or ``False``)."""

    def __init__(self, passed: bool):
        self.passed = bool(passed)

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"Verdict({'passed' if self.passed else 'not passed'})"

    def _ipython_display_(self) -> None:
        pass


def register(exercise: Exercise) -> Exercise:
    if exercise.id in REGISTRY and REGISTRY[exercise.id] is not exercise:
        raise ValueError(f"exercise {exercise.id} is registered twice")
    REGISTRY[exercise.id] = exercise
    return exercise


def all_exercises() -> dict[str, Exercise]:
    """Every chapter's exercises (importing each module of this package registers its own)."""
    import pkgutil

    from .. import exercises
    for module in pkgutil.iter_modules(exercises.__path__):
        importlib.import_module(f"{exercises.__name__}.{module.name}")
    return dict(sorted(REGISTRY.items()))


def _exercise(exercise_id: str) -> Exercise:
    found = all_exercises().get(exercise_id)
    if found is None:
        raise ValueError(say(f"there is no exercise {exercise_id!r}; the ids are {sorted(REGISTRY)}",
                             f"没有编号为 {exercise_id!r} 的练习；已有的编号：{sorted(REGISTRY)}"))
    return found


def stuck(exercise_id: str) -> str:
    """The line every ✘ ends with: where to go next."""
    return say(f'Stuck? hint("{exercise_id}"), then solution("{exercise_id}").',
               f'卡住了？先看 hint("{exercise_id}")，再看 solution("{exercise_id}")。')


def check(exercise_id: str, answer: Any) -> Verdict:
    """Check a learner's answer to exercise ``exercise_id``: prints the verdict and returns it
    (true when the answer passes)."""
    exercise = _exercise(exercise_id)
    if answer is None or still_a_stub(answer):      # nothing to run, on one process or on ranks
        print("… " + say(*NOT_SOLVED))
        return Verdict(False)
    try:
        passed = bool(exercise.check(answer))
    except NotImplementedError:
        print("… " + say(*NOT_SOLVED))
        return Verdict(False)
    if not passed:
        print("  " + stuck(exercise_id))
    return Verdict(passed)


def still_a_stub(fn: Any) -> bool:
    """Is ``fn`` a function whose body (its docstring and comments aside) is only ``raise
    NotImplementedError``, as a notebook stores an exercise before the learner writes it?"""
    import ast

    if not isinstance(fn, types.FunctionType):
        return False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.FunctionDef) else []
    body = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    return len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])


def hint(exercise_id: str) -> None:
    """A nudge towards exercise ``exercise_id``'s answer, without the answer."""
    exercise = _exercise(exercise_id)
    print(say(f"Exercise {exercise_id}, a hint: ", f"练习 {exercise_id} 的提示：") + _filled(exercise, exercise.hint))


def solution(exercise_id: str) -> None:
    """Show the solution of an exercise (and why), only when asked."""
    exercise = _exercise(exercise_id)
    answer = exercise.solution
    shown = textwrap.dedent(inspect.getsource(answer)) if callable(answer) else readable(answer)
    print(say(f"Exercise {exercise_id}, a solution:", f"练习 {exercise_id} 的参考答案：") + "\n\n" + shown.rstrip())
    explanation = _filled(exercise, exercise.explanation)
    if explanation:
        print("\n" + explanation)


def _filled(exercise: Exercise, text: tuple[str, str]) -> str:
    """The text in the edition's language, its ``{name}`` fields filled with the stated numbers
    and ``{answer}`` with the solution (when the exercise states numbers)."""
    chosen = say(*text)
    if not exercise.stated:
        return chosen
    values = {name: readable(value, grouped=True) for name, value in exercise.stated.items()}
    return chosen.format(**values, answer=readable(exercise.solution, grouped=True))


def readable(value: Any, *, grouped: bool = False) -> str:
    """A number as a person writes it (10 significant digits, no trailing zeros; ``grouped``:
    thousands separated, 8,388,608, for prose); anything else as its repr."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        whole = float(value).is_integer() and abs(value) < 1e15
        return f"{int(value):,}" if grouped and whole else f"{float(value):.10g}"
    return repr(value)


# ------------------------------------------------------------------ verdicts
def verdict(ok: bool, right: tuple[str, str], wrong: tuple[str, str]) -> bool:
    """Print ✔ and the first message (English, Chinese) or ✘ and the second; return ``ok``."""
    print(("✔ " + say(*right)) if ok else ("✘ " + say(*wrong)))
    return ok


def is_rounding_of(value: float, expected: float) -> bool:
    """Is ``value`` ``expected`` rounded (or cut) to the significant digits ``value`` is written
    with (0.62 for 0.618, 19 for 19.05, 8e9 for 7.75e9; cut, 469 for 469.76), with fewer digits?
    A count below 10⁵ (28 micro-batches, 1,336 bytes) is written exactly: 30 is no rounding of 28."""
    def digits(x: float) -> int:
        return len(f"{abs(x):.12e}".split("e")[0].replace(".", "").rstrip("0"))
    exact_count = float(expected).is_integer() and abs(expected) < 1e5
    if value == 0 or expected == 0 or exact_count or digits(value) >= digits(expected):
        return False
    rounded = float(f"{expected:.{digits(value) - 1}e}")
    scale = 10.0 ** (math.floor(math.log10(abs(expected))) - digits(value) + 1)
    truncated = math.trunc(expected / scale) * scale
    cut = digits(value) >= 3 and math.isclose(value, truncated, rel_tol=1e-9)     # 469 for 469.76, not 0.3 for 0.35
    return math.isclose(value, rounded, rel_tol=1e-9) or cut


def check_number(answer: Any, expected: float, *, rel: float = 1e-6,
                 typical: Mapping[float, tuple[str, str]] | Sequence[tuple[float, tuple[str, str]]] = (),
                 hint: tuple[str, str] = ("", ""), known: Mapping[float, tuple[str, str]] | None = None) -> bool:
    """Is ``answer`` a number within ``rel`` (relative) of ``expected``? When not, the ✘ says
    why: the diagnosis of a ``typical`` wrong value (value → (English, Chinese), matched within
    ``rel``), or "close: give more digits" for a rounding of ``expected``, or that it is not it
    (followed by ``hint``, if any). ``known`` is the former name of ``typical``."""
    typical = known if known is not None else typical
    value = as_number(answer)
    if value is None:
        return verdict(False, ("", ""), (f"{answer!r:.60} is not a number. {hint[0]}".rstrip(),
                                         f"{answer!r:.60} 不是数字。{hint[1]}".rstrip()))
    if math.isclose(value, expected, rel_tol=rel, abs_tol=1e-12):
        return verdict(True, (f"{value:.10g} is right.", f"{value:.10g} 正确。"), ("", ""))
    pairs = typical.items() if isinstance(typical, Mapping) else typical
    why = next((words for wrong, words in pairs if math.isclose(value, wrong, rel_tol=max(rel, TYPICAL_REL))), None)
    near = rel > 0 and math.isclose(value, expected, rel_tol=5 * rel)
    if why is None and is_rounding_of(value, expected):
        return verdict(False, ("", ""), (f"{value:.10g} is close: give more digits.",
                                         f"{value:.10g} 很接近了：请多给几位有效数字。"))
    if why is None and near:
        then = hint if hint[0] else ("More digits would not help: check each term.", "多给几位数字也无济于事：请逐项检查。")
        return verdict(False, ("", ""), (f"{value:.10g} is near, but not within {rel:.2%} of the answer. {then[0]}",
                                         f"{value:.10g} 接近答案，但相对误差超过 {rel:.2%}。{then[1]}"))
    why = why or hint
    return verdict(False, ("", ""), (f"{value:.10g} is not it. {why[0]}".rstrip(),
                                     f"{value:.10g} 不对。{why[1]}".rstrip()))


def number_exercise(exercise_id: str, *, stated: dict[str, float], answer: Callable[..., float],
                    hint: tuple[str, str], explanation: tuple[str, str],
                    wrong: Sequence[tuple[Callable[..., float], tuple[str, str]]] = (), rel: float = 1e-6) -> Exercise:
    """Register an exercise whose answer is one number, ``answer(**stated)``: the package function
    the chapter teaches, applied to the numbers the prompt states. Each ``wrong`` belief is a
    function of the same numbers with what that belief says, and what it gets wrong."""
    expected = answer(**stated)
    typical = [(belief(**stated), why) for belief, why in wrong]
    return register(Exercise(exercise_id, lambda given: check_number(given, expected, rel=rel, typical=typical),
                             solution=expected, explanation=explanation, hint=hint, stated=dict(stated),
                             typical=typical))


def check_widget_choice(answer: Any, options: Sequence[float], correct: float, smaller: Callable[[float], tuple],
                        larger: Callable[[float], tuple]) -> bool:
    """The widget offers ``options`` and ``correct`` is the one asked for; a wrong option gets what
    ``smaller(option)`` or ``larger(option)`` says of it (English, Chinese); a value the widget
    does not offer is named as such."""
    value = as_number(answer)
    if value is not None and not any(math.isclose(value, o, rel_tol=1e-9) for o in options):
        listed = [f"{o:g}" for o in options]
        return verdict(False, ("", ""), (f"{value:g} is not one of the widget's values ({', '.join(listed)}).",
                                         f"{value:g} 不是控件提供的值（{'、'.join(listed)}）之一。"))
    typical = [(o, smaller(o) if o < correct else larger(o)) for o in options if o != correct]
    return check_number(answer, correct, rel=1e-9, typical=typical)


def model_state_gb(billions: float, devices: int, zero_stage: int, precision: str = "mixed") -> float:
    """GB per device of Adam's model states under ZeRO stage ``zero_stage`` on ``devices``
    devices: the bar of the memory widget (chapters 07 and 13), from the same calculator."""
    from ..costmodel import memory_by_layout

    bars = memory_by_layout(billions * 1e9, devices, precision)
    label = f"ZeRO-{zero_stage} ×{devices}" if zero_stage else f"data ×{devices}"
    return bars[label]["total"] / 1e9


def diagnosed_number(answer: Any, expected: float, diagnoses: list[tuple[float, tuple[str, str]]],
                     hint: tuple[str, str] = ("", ""), rel: float = 1e-6) -> bool:
    """:func:`check_number` with typical wrong values (kept for the chapters that call it by this name)."""
    return check_number(answer, expected, rel=rel, typical=diagnoses, hint=hint)


# ---------------------------------------------------- functions, in one process
@dataclass
class Case:
    """One case a learner's function is run on: its name in both editions, (English, Chinese),
    which the report shows in the edition's language, and its arguments."""
    name: tuple[str, str]
    args: tuple

    def __post_init__(self):
        pair = self.name
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(n, str) and n.strip() for n in pair)):
            raise TypeError(f"a Case's name is a pair of texts (English, Chinese), got {pair!r}")

    @property
    def title(self) -> str:
        """The case's name in the edition's language."""
        return say(*self.name)


def case_names(cases: Sequence[Case]) -> str:
    """The cases' names, listed in the edition's language."""
    return say(", ".join(c.name[0] for c in cases), "；".join(c.name[1] for c in cases))


@dataclass(frozen=True)
class Probe:
    """A common bug, recognised on a failing case. ``test(expected, got, facts)`` returns a true
    value when the case shows it (a dict adds fields to ``facts``); ``message`` (English,
    Chinese) says what the bug is, with ``{name}`` fields filled from ``facts`` (the driver's
    observations, and ``world_size`` and ``rank`` on ranks)."""
    test: Callable[[Any, Any, dict], Any]
    message: tuple[str, str]

    def diagnose(self, expected: Any, got: Any, facts: dict) -> tuple[str, str] | None:
        try:
            found = self.test(expected, got, facts)
        except Exception:  # a probe that cannot read this result does not apply to it
            return None
        if not found:
            return None
        fields = {**facts, **(found if isinstance(found, dict) else {})}
        return self.message[0].format(**fields), self.message[1].format(**fields)


@dataclass
class Result:
    """What one case gave: expected, got, the error the learner's code raised (or None), and
    what the driver observed besides (``facts``)."""
    case: Case
    expected: Any
    got: Any
    error: str | None = None
    facts: dict = field(default_factory=dict)


def first_failure(results: Sequence[Result], same: Callable[[Any, Any], bool]) -> Result | None:
    """The first result whose ``got`` is not ``same`` as ``expected``, or that raised."""
    return next((r for r in results if r.error is not None or not same(r.got, r.expected)), None)


def report(results: Sequence[Result], same: Callable[[Any, Any], bool], probes: Sequence[Probe] = (),
           passed: str | None = None) -> bool:
    """A test suite's verdict on a learner's function: all cases pass (``passed`` names them, by
    default the cases' names), or the first failing case with where expected and got first
    differ, and what the first probe that recognises it says."""
    failure = first_failure(results, same)
    if failure is None:
        names = passed or case_names([r.case for r in results])
        return verdict(True, (f"all {len(results)} cases pass ({names}).", f"全部 {len(results)} 个用例通过（{names}）。"),
                       ("", ""))
    name = failure.case.title
    if failure.error is not None:
        return verdict(False, ("", ""), (f"case {name}: your function raised {failure.error}",
                                         f"用例 {name}：你的函数抛出了 {failure.error}"))
    where = difference(failure.expected, failure.got)
    why = next((d for d in (p.diagnose(failure.expected, failure.got, failure.facts) for p in probes) if d), ("", ""))
    return verdict(False, ("", ""), (f"case {name}: {where[0]}. {why[0]}".rstrip(),
                                     f"用例 {name}：{where[1]}。{why[1]}".rstrip()))


def run_cases(fn: Callable, reference: Callable, cases: Sequence[Case]) -> list[Result]:
    """A :class:`Result` for each case, in one process; the learner's function gets its own copy
    of the arguments, so it cannot spoil the reference's."""
    results = []
    for case in cases:
        expected = reference(*copy.deepcopy(case.args))
        try:
            got, error = fn(*copy.deepcopy(case.args)), None
        except NotImplementedError:
            raise
        except Exception as exc:  # the learner's bug, reported as a failing case
            got, error = None, f"{type(exc).__name__}: {exc}"
        results.append(Result(case, expected, got, error, {"args": case.args}))
    return results


RANK_MACHINERY = ("Carried", "carry", "define_again", "run_on_ranks", "check_on_ranks")


def __getattr__(name: str) -> Any:
    """The machinery for functions run on ranks lives in :mod:`.ranks`; importable from here too."""
    if name in RANK_MACHINERY:
        from . import ranks
        return getattr(ranks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
