"""A learner's function run on real ranks: carried to spawned processes, run case by case
against the package's reference, its common bugs told apart by probes, a deadlock named.

A function defined in a notebook lives in ``__main__``, which spawned processes cannot
import, so its source travels to the ranks and is defined there again (:func:`carry`),
together with the functions and plain constants it uses from the notebook and the modules it
imports; what cannot travel is refused in plain words. On each rank a watchdog gives every
case :data:`HANG_AFTER` seconds: a rank that makes no progress (a blocking ``send`` that waits
for a ``recv`` that never comes, a collective that not every rank calls) leaves a note and
stops, so that the check names the case within seconds.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import json
import os
import tempfile
import textwrap
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..language import say
from .compare import as_array, same_values
from .core import Case, Probe, Result, first_failure, report, verdict
from .own_work import code_names

HANG_AFTER = 10.0   # seconds a case may run on a rank before it counts as a deadlock
PLAIN = (int, float, complex, str, bool, type(None))


# ---------------------------------------------------- carrying a function
@dataclass(frozen=True)
class Carried:
    """A function as it travels to spawned ranks: its source and name, the notebook functions
    it calls (their sources), the plain constants it reads (name, value), and how to import
    each module or package name it uses (name, module, attribute or None). A function of an
    importable module (a reference solution) travels as its module and name alone."""
    source: str | None
    name: str
    imports: tuple[tuple[str, str, str | None], ...] = ()
    module: str | None = None
    helpers: tuple[str, ...] = ()
    constants: tuple[tuple[str, Any], ...] = ()


def _importable(fn: Any) -> bool:
    return isinstance(fn, types.FunctionType) and fn.__module__ not in ("__main__", None) \
        and "<locals>" not in fn.__qualname__ and fn.__name__ != "<lambda>"


def _refuse_untravelled(fn: Any) -> None:
    """ValueError, in plain words, for a function whose source cannot be defined again elsewhere."""
    if not isinstance(fn, types.FunctionType) or fn.__name__ == "<lambda>":
        raise ValueError(say("write your answer as a function with def: a lambda's source cannot be sent to the ranks",
                             "请用 def 写成函数：lambda 的源代码无法发送到各个进程"))
    if fn.__closure__:
        names = ", ".join(fn.__code__.co_freevars)
        raise ValueError(say(f"{fn.__name__} uses {names} from an enclosing function (a closure); the ranks cannot "
                             "receive that. Define the function at the top level of the cell.",
                             f"{fn.__name__} 使用了外层函数的变量 {names}（闭包），无法发送到各个进程。"
                             "请在单元格的最外层定义这个函数。"))


def carry(fn: Callable) -> Carried:
    """Package a function defined in a notebook so that spawned ranks can define it again, with
    the notebook functions it calls and the plain constants (numbers, strings, tuples of them)
    it reads. Raises ValueError, in plain words, for what cannot travel: a lambda, a closure, or
    a value defined in the notebook that is not a plain constant (a tensor, a model)."""
    if _importable(fn):
        return Carried(None, fn.__qualname__, module=fn.__module__)
    imports, helpers, constants = {}, {}, {}
    pending, seen = [fn], set()
    while pending:
        current = pending.pop()
        _refuse_untravelled(current)
        seen.add(current.__name__)
        for name in sorted(code_names(current.__code__) & set(current.__globals__)):
            value = current.__globals__[name]
            if isinstance(value, types.ModuleType):
                imports[name] = (name, value.__name__, None)
            elif getattr(value, "__module__", "__main__") not in ("__main__", None) and hasattr(value, "__qualname__"):
                imports[name] = (name, value.__module__, value.__qualname__)
            elif isinstance(value, types.FunctionType):
                if name not in seen:
                    pending.append(value)
                    helpers[name] = value
            elif _plain(value):
                constants[name] = value
            elif not hasattr(builtins, name):
                raise ValueError(say(
                    f"{current.__name__} uses {name}, a {type(value).__name__} defined elsewhere in your notebook; "
                    f"the ranks do not have it. Make it inside {current.__name__}, or pass it as an argument.",
                    f"{current.__name__} 用到了 {name}（{type(value).__name__}），它定义在笔记本的别处，各个进程里"
                    f"没有它。请在 {current.__name__} 内部创建它，或作为参数传入。"))
    sources = tuple(textwrap.dedent(inspect.getsource(h)) for h in helpers.values())
    return Carried(textwrap.dedent(inspect.getsource(fn)), fn.__name__, tuple(imports.values()),
                   helpers=sources, constants=tuple(constants.items()))


def _plain(value: Any) -> bool:
    """A number, a string, or a tuple of them: a constant that travels by value."""
    return isinstance(value, PLAIN) or (isinstance(value, tuple) and all(_plain(v) for v in value))


def define_again(carried: Carried) -> Callable:
    """On a rank: the learner's function, defined from its source with the same imports,
    helper functions and constants."""
    if carried.module is not None:
        return getattr(importlib.import_module(carried.module), carried.name)
    namespace: dict[str, Any] = {}
    for name, module, attribute in carried.imports:
        value = importlib.import_module(module)
        for part in (attribute.split(".") if attribute else []):
            value = getattr(value, part)
        namespace[name] = value
    namespace.update(carried.constants)
    for source in carried.helpers + (carried.source,):
        exec(compile(source, f"<your {carried.name}>", "exec"), namespace)
    return namespace[carried.name]


# ---------------------------------------------------- running it on ranks
def _watchdog(folder: str, rank: int, case: Case) -> threading.Timer:
    """After HANG_AFTER seconds in ``case``, note the case and stop this rank: the launcher then
    finds it gone at once, instead of waiting for its own, longer timeout."""
    def give_up():
        Path(folder, f"hung-{rank}.json").write_text(json.dumps({"case": case.name, "rank": rank, "at": time.time()}))
        os._exit(3)

    timer = threading.Timer(HANG_AFTER, give_up)
    timer.daemon = True
    timer.start()
    return timer


def run_on_ranks(rank: int, world_size: int, carried: Carried, driver: str, cases: list, folder: str) -> list:
    """A worker for :func:`nnpar_lite.distributed.launch`: define the learner's function on this
    rank and run the chapter's ``driver`` ("module:function") on each case. The driver returns
    (expected, got) or (expected, got, facts) for this rank. An error in the learner's code is
    noted in ``folder`` and ends this rank's run (the other ranks would wait for it)."""
    module, function = driver.split(":")
    drive = getattr(importlib.import_module(module), function)
    fn = define_again(carried)
    results = []
    for case in cases:
        timer = _watchdog(folder, rank, case)
        try:
            outcome = drive(fn, rank, world_size, case)
        except NotImplementedError:
            return ["unsolved"]
        except Exception as exc:  # the learner's bug, reported with its case
            Path(folder, f"raised-{rank}.json").write_text(json.dumps(
                {"case": case.name, "rank": rank, "error": f"{type(exc).__name__}: {exc}", "at": time.time()}))
            return results
        finally:
            timer.cancel()
        expected, got, *facts = outcome
        results.append((expected, got, facts[0] if facts else {}))
    return results


def _notes(folder: str, kind: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob(f"{kind}-*.json"))]


def _stopped(folder: str, world_size: int, error: Exception) -> tuple[str, str]:
    """Why a launch stopped: the learner's error on a rank, a deadlock, or the launcher's reason.
    Whichever came first is the cause: a rank that raised leaves the others waiting (they then
    time out), and a rank stopped for waiting leaves its peers with a closed connection."""
    notes = sorted(_notes(folder, "raised") + _notes(folder, "hung"), key=lambda note: note["at"])
    if notes and "error" in notes[0]:
        note = notes[0]
        english, chinese = note["case"]             # the case's name, both editions (a list, as JSON keeps it)
        return (f"case {english}, rank {note['rank']} of {world_size}: your function raised {note['error']}",
                f"用例 {chinese}，{world_size} 个进程中的 rank {note['rank']}：你的函数抛出了 {note['error']}")
    if notes:
        hung = [n for n in notes if "error" not in n]
        note, waiting = hung[0], [str(r) for r in sorted(n["rank"] for n in hung)]
        english, chinese = note["case"]
        return (f"case {english} on {world_size} ranks: rank {' and '.join(waiting)} still waited after "
                f"{HANG_AFTER:g} s: a deadlock. Does every send meet a recv on the other side, in an order that lets "
                "both go on "
                "(a blocking send first on every rank waits for ever), and does every rank call every collective?",
                f"用例 {chinese}，{world_size} 个进程：rank {'、'.join(waiting)} 等了 {HANG_AFTER:g} 秒"
                "仍未完成，发生了死锁。"
                "每个 send 在另一端都有对应的 recv 吗？顺序能否让双方都继续（所有 rank 都先做阻塞 send 就会永远等待）？"
                "每个 rank 都调用了每一个集合通信吗？")
    reason = str(error).splitlines()[0]
    return (f"on {world_size} ranks: {reason}", f"在 {world_size} 个进程上：{reason}")


def on_rank(case: Case, rank: int, world_size: int) -> Case:
    """The case as one rank saw it: its name says which rank of how many."""
    english, chinese = case.name
    return Case((f"{english}, rank {rank} of {world_size}", f"{chinese}，{world_size} 个进程中的 rank {rank}"), case.args)


def check_on_ranks(fn: Callable, driver: str, cases_by_world: dict[int, list], *,
                   same: Callable[[Any, Any], bool] = same_values, probes: tuple[Probe, ...] = (),
                   timeout: float | None = None) -> bool:
    """Run a learner's function on real ranks, for each world size and its cases, and report the
    first failing case (on any rank) like :func:`~nnpar_lite.exercises.core.report`, with the
    message of the first probe that recognises its bug; a learner's exception or a deadlock is
    named with its case and rank."""
    from ..distributed import WorkerError, launch

    try:
        carried = carry(fn)
    except ValueError as error:
        return verdict(False, ("", ""), (str(error), str(error)))
    results: list[Result] = []
    passed = say("; ".join(f"{', '.join(c.name[0] for c in cases)} on {w} rank{'s' * (w > 1)}"
                           for w, cases in cases_by_world.items()),
                 "；".join(f"{w} 个进程上：{'、'.join(c.name[1] for c in cases)}" for w, cases in cases_by_world.items()))
    for world_size, cases in cases_by_world.items():      # stops at the first world size that fails
        with tempfile.TemporaryDirectory(prefix="nnpar-exercise-") as folder:
            try:
                per_rank = launch(run_on_ranks, world_size, carried, driver, cases, folder,
                                  timeout=timeout or HANG_AFTER * (len(cases) + 1) + 30)
            except WorkerError as error:
                return verdict(False, ("", ""), _stopped(folder, world_size, error))
            if _notes(folder, "raised"):
                return verdict(False, ("", ""), _stopped(folder, world_size, RuntimeError()))
        if any(r == ["unsolved"] for r in per_rank):
            raise NotImplementedError
        for i, case in enumerate(cases):
            for rank, (expected, got, facts) in enumerate(r[i] for r in per_rank):
                results.append(Result(on_rank(case, rank, world_size), expected, got,
                                      None, {**facts, "rank": rank, "world_size": world_size}))
        if first_failure(results, same) is not None:
            break
    return report(results, same, probes, passed)


# ---------------------------------------------------- probes for the common bugs
def _scaled(expected: Any, factor: float) -> Any:
    return as_array(expected) * factor


AVERAGED_NOT_SUMMED = Probe(
    lambda expected, got, facts: facts["world_size"] > 1 and same_values(
        got, _scaled(expected, 1 / facts["world_size"]), rtol=1e-7, atol=1e-10),
    ("Your result is the average over the {world_size} ranks; this one wants their sum: do not divide.",
     "你的结果是 {world_size} 个进程的平均值；这里要的是它们的和：不要除。"))

SUMMED_NOT_AVERAGED = Probe(
    lambda expected, got, facts: facts["world_size"] > 1 and same_values(
        got, _scaled(expected, facts["world_size"]), rtol=1e-7, atol=1e-10),
    ("Your result is {world_size} times too large: the sum over the ranks, where the average belongs. "
     "Divide by the number of ranks.",
     "你的结果大了 {world_size} 倍：这是各进程的和，而应该是平均值。请除以进程数。"))

NOT_IN_PLACE = Probe(
    lambda expected, got, facts: "input" in facts and same_values(got, facts["input"], rtol=0, atol=0)
    and not same_values(expected, facts["input"]),
    ("The tensor you were given is unchanged: write the result into it in place (t.copy_(...), t += ...). "
     "t = ... only rebinds a local name, and a tensor you return is not the caller's.",
     "传入的张量没有变：请把结果原地写进去（t.copy_(...)、t += ...）。t = ... 只是让局部变量指向别处，"
     "返回的新张量也不是调用者手里的那个。"))


def _chunks_apart(expected: Any, got: Any, facts: dict) -> dict | bool:
    """Which of the world_size chunks (as torch.tensor_split cuts) are right and which are wrong,
    when some are each."""
    e, g, parts = as_array(expected), as_array(got), facts["world_size"]
    if parts < 2 or e is None or g is None or e.shape != g.shape or e.ndim != 1:
        return False
    import numpy as np

    ok = [bool(np.allclose(a, b, rtol=1e-7, atol=1e-10))
          for a, b in zip(np.array_split(e, parts), np.array_split(g, parts))]
    sizes = [len(c) for c in np.array_split(e, parts)]
    right = [str(i) for i, good in enumerate(ok) if good and sizes[i]]
    wrong = [str(i) for i, good in enumerate(ok) if not good]
    return bool(right and wrong) and {"right": ", ".join(right), "wrong": ", ".join(wrong)}


def wrong_chunk(message: tuple[str, str] = (
        "Of the {world_size} chunks (cut as torch.tensor_split cuts), chunk {right} is right and chunk {wrong} is "
        "not: follow which chunk each step sends, and which one it adds to or overwrites.",
        "在 {world_size} 个块中（按 torch.tensor_split 的切法），块 {right} 正确，块 {wrong} 不对："
        "逐步跟踪每一步发送哪一块、加到或覆盖哪一块。")) -> Probe:
    """A probe for a result right in some chunks and wrong in others; ``message`` may name
    ``{right}``, ``{wrong}`` and ``{world_size}``."""
    return Probe(_chunks_apart, message)
