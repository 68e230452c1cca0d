"""How every exercise is checked: a verdict like a good test suite's, in the edition's language.

An exercise is registered under its id, "CC.N" (chapter CC, exercise N), with its check, its
solution and the typical wrong answers its check must reject (the tests feed all three).
A learner calls ``check("03.2", answer)``; an answer still ``None``, or a function that still
raises ``NotImplementedError``, gets "not solved yet", so a stored notebook shows no answer.
``solution("03.2")`` shows the solution, only when asked.

Functions a learner writes are run on cases the learner does not see. Where the topic is
multi-process they run on real ranks: a function defined in a notebook lives in
``__main__``, which spawned processes cannot import, so its source travels to the ranks and
is defined there again (:func:`carry`), with a plain message when that cannot work.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import math
import textwrap
import types
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..language import say

NOT_SOLVED = ("not solved yet: write your answer in place of None (or the function's body), then run the cell again.",
              "尚未作答：把 None（或函数体）换成你的答案，再运行这个单元格。")


@dataclass
class Exercise:
    """One exercise: ``check(answer) -> bool`` prints its verdict, and ``solution`` passes it
    (a value, or a function whose source is the answer); ``explanation`` (English, Chinese)
    follows the solution when it is shown. The tests prove each check with its solution and
    typical wrong answers (tests/test_exercises_*.py)."""
    id: str
    check: Callable[[Any], bool]
    solution: Any
    explanation: tuple[str, str] = ("", "")


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


def check(exercise_id: str, answer: Any) -> Verdict:
    """Check a learner's answer to exercise ``exercise_id``: prints the verdict and returns it
    (true when the answer passes)."""
    exercise = _exercise(exercise_id)
    if answer is None or still_a_stub(answer):      # nothing to run, on one process or on ranks
        print("… " + say(*NOT_SOLVED))
        return Verdict(False)
    try:
        return Verdict(exercise.check(answer))
    except NotImplementedError:
        print("… " + say(*NOT_SOLVED))
        return Verdict(False)


def still_a_stub(fn: Any) -> bool:
    """Is ``fn`` a function whose body (its docstring aside) is only ``raise NotImplementedError``,
    as a notebook stores an exercise before the learner writes it?"""
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


def solution(exercise_id: str) -> None:
    """Show the solution of an exercise (and why), only when asked."""
    exercise = _exercise(exercise_id)
    answer = exercise.solution
    shown = textwrap.dedent(inspect.getsource(answer)) if callable(answer) else repr(answer)
    print(say(f"Exercise {exercise_id}, a solution:", f"练习 {exercise_id} 的参考答案：") + "\n\n" + shown.rstrip())
    explanation = say(*exercise.explanation)
    if explanation:
        print("\n" + explanation)


# ------------------------------------------------------------------ verdicts
def verdict(ok: bool, right: tuple[str, str], wrong: tuple[str, str]) -> bool:
    """Print ✔ and the first message (English, Chinese) or ✘ and the second; return ``ok``."""
    print(("✔ " + say(*right)) if ok else ("✘ " + say(*wrong)))
    return ok


def check_number(answer: Any, expected: float, *, rel: float = 1e-6, hint: tuple[str, str] = ("", ""),
                 known: dict[float, tuple[str, str]] | None = None) -> bool:
    """Is ``answer`` a number within ``rel`` (relative) of ``expected``? When not, the hint that
    fits a typical wrong value (``known``: value → hint, matched within ``rel``) if it is one,
    else ``hint``."""
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return verdict(False, ("", ""), (f"{answer!r} is not a number. {hint[0]}", f"{answer!r} 不是数字。{hint[1]}"))
    hint = next((words for wrong, words in (known or {}).items() if math.isclose(value, wrong, rel_tol=rel)), hint)
    ok = math.isclose(value, expected, rel_tol=rel, abs_tol=1e-12)
    return verdict(ok, (f"{value:g} is right.", f"{value:g} 正确。"),
                   (f"{value:g} is not it. {hint[0]}", f"{value:g} 不对。{hint[1]}"))


@dataclass
class Case:
    """One case a learner's function is run on: a name the report shows, and its arguments."""
    name: str
    args: tuple


def first_failure(results: Sequence[tuple[Case, Any, Any, str | None]],
                  same: Callable[[Any, Any], bool]) -> tuple[Case, Any, Any, str | None] | None:
    """The first (case, expected, got, error) whose ``got`` is not ``same`` as ``expected``."""
    for case, expected, got, error in results:
        if error is not None or not same(got, expected):
            return case, expected, got, error
    return None


def report(results: Sequence[tuple[Case, Any, Any, str | None]], same: Callable[[Any, Any], bool],
           hint: tuple[str, str]) -> bool:
    """A test suite's verdict on a learner's function: all cases pass, or the first failing
    case with what was expected, what came back, and a hint."""
    failure = first_failure(results, same)
    if failure is None:
        names = ", ".join(case.name for case, *_ in results)
        return verdict(True, (f"all {len(results)} cases pass ({names}).", f"全部 {len(results)} 个用例通过（{names}）。"),
                       ("", ""))
    case, expected, got, error = failure
    if error is not None:
        return verdict(False, ("", ""), (f"case {case.name}: your function raised {error}. {hint[0]}",
                                         f"用例 {case.name}：你的函数抛出了 {error}。{hint[1]}"))
    return verdict(False, ("", ""), (f"case {case.name}: expected {_short(expected)}, got {_short(got)}. {hint[0]}",
                                     f"用例 {case.name}：应为 {_short(expected)}，实际得到 {_short(got)}。{hint[1]}"))


def _short(value: Any) -> str:
    text = repr(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) <= 120 else text[:117] + "..."


def run_cases(fn: Callable, reference: Callable, cases: Sequence[Case]) -> list[tuple[Case, Any, Any, str | None]]:
    """(case, expected, got, error) for each case, in one process; the learner's function gets
    its own copy of the arguments, so it cannot spoil the reference's."""
    import copy

    results = []
    for case in cases:
        expected = reference(*copy.deepcopy(case.args))
        try:
            got, error = fn(*copy.deepcopy(case.args)), None
        except NotImplementedError:
            raise
        except Exception as exc:  # the learner's bug, reported as a failing case
            got, error = None, f"{type(exc).__name__}: {exc}"
        results.append((case, expected, got, error))
    return results


# ---------------------------------------------------- learner code on ranks
@dataclass(frozen=True)
class Carried:
    """A function as it travels to spawned ranks: its source, its name, and how to import each
    global name it uses (module, attribute or None). A function of an importable module
    (a reference solution) travels as its module and name alone."""
    source: str | None
    name: str
    imports: tuple[tuple[str, str, str | None], ...] = ()
    module: str | None = None


def carry(fn: Callable) -> Carried:
    """Package a function defined in a notebook so that spawned ranks can define it again.

    Raises ValueError, in plain words, for what cannot travel: a lambda, a function that uses
    variables of an enclosing function (a closure), or one that calls other functions or
    reads values defined in the notebook."""
    if isinstance(fn, types.FunctionType) and fn.__module__ not in ("__main__", None) \
            and "<locals>" not in fn.__qualname__ and fn.__name__ != "<lambda>":
        return Carried(None, fn.__qualname__, module=fn.__module__)
    if not isinstance(fn, types.FunctionType) or fn.__name__ == "<lambda>":
        raise ValueError(say("write your answer as a function with def: a lambda's source cannot be sent to the ranks",
                             "请用 def 写成函数：lambda 的源代码无法发送到各个进程"))
    if fn.__closure__:
        names = ", ".join(fn.__code__.co_freevars)
        raise ValueError(say(f"{fn.__name__} uses {names} from an enclosing function (a closure); the ranks cannot "
                             "receive that. Define the function at the top level of the cell.",
                             f"{fn.__name__} 使用了外层函数的变量 {names}（闭包），无法发送到各个进程。"
                             "请在单元格的最外层定义这个函数。"))
    imports = []
    for name in sorted(set(fn.__code__.co_names) & set(fn.__globals__)):
        value = fn.__globals__[name]
        if isinstance(value, types.ModuleType):
            imports.append((name, value.__name__, None))
        elif getattr(value, "__module__", "__main__") not in ("__main__", None) and hasattr(value, "__qualname__"):
            imports.append((name, value.__module__, value.__qualname__))
        elif not hasattr(builtins, name):
            raise ValueError(say(f"{fn.__name__} uses {name}, which is defined elsewhere in your notebook; the ranks "
                                 f"do not have it. Define it inside {fn.__name__}, or pass it as an argument.",
                                 f"{fn.__name__} 用到了 {name}，它定义在笔记本的别处，各个进程里没有它。"
                                 f"请在 {fn.__name__} 内部定义，或作为参数传入。"))
    return Carried(textwrap.dedent(inspect.getsource(fn)), fn.__name__, tuple(imports))


def define_again(carried: Carried) -> Callable:
    """On a rank: the learner's function, defined from its source with the same imports."""
    if carried.module is not None:
        return getattr(importlib.import_module(carried.module), carried.name)
    namespace: dict[str, Any] = {}
    for name, module, attribute in carried.imports:
        value = importlib.import_module(module)
        for part in (attribute.split(".") if attribute else []):
            value = getattr(value, part)
        namespace[name] = value
    exec(compile(carried.source, f"<your {carried.name}>", "exec"), namespace)
    return namespace[carried.name]


def run_on_ranks(rank: int, world_size: int, carried: Carried, driver: str, cases: list) -> list:
    """A worker for :func:`nnpar_lite.distributed.launch`: define the learner's function on this
    rank and run the chapter's ``driver`` ("module:function") on each case; the driver returns
    (expected, got) for this rank, and errors in the learner's code become failing cases."""
    module, function = driver.split(":")
    drive = getattr(importlib.import_module(module), function)
    fn = define_again(carried)
    results = []
    for case in cases:
        try:
            results.append(drive(fn, rank, world_size, case) + (None,))
        except NotImplementedError:
            results.append(("unsolved", None, None))
        except Exception as exc:  # the learner's bug, reported as a failing case
            results.append((None, None, f"{type(exc).__name__}: {exc}"))
    return results


def check_on_ranks(fn: Callable, driver: str, cases_by_world: dict[int, list], *, same: Callable[[Any, Any], bool],
                   hint: tuple[str, str], timeout: float = 60.0) -> bool:
    """Run a learner's function on real ranks, for each world size and its cases, and report
    the first failing case (on any rank) like :func:`report`."""
    from ..distributed import WorkerError, launch

    try:
        carried = carry(fn)
    except ValueError as error:
        return verdict(False, ("", ""), (str(error), str(error)))
    results = []
    for world_size, cases in cases_by_world.items():      # stops at the first world size that fails
        try:
            per_rank = launch(run_on_ranks, world_size, carried, driver, cases, timeout=timeout)
        except WorkerError as error:
            reason = str(error).splitlines()[0]
            return verdict(False, ("", ""), (
                f"on {world_size} ranks: {reason}. A blocking send that waits for a receive which never comes "
                f"(a deadlock)? {hint[0]}", f"在 {world_size} 个进程上：{reason}。是否有阻塞的 send 在等待永远不会到来的"
                f" recv（死锁）？{hint[1]}"))
        for i, case in enumerate(cases):
            for rank, rank_results in enumerate(per_rank):
                expected, got, error = rank_results[i]
                if expected == "unsolved":
                    raise NotImplementedError
                results.append((Case(f"{case.name}, rank {rank} of {world_size}", ()), expected, got, error))
        if first_failure(results, same) is not None:
            break
    return report(results, same, hint)
