"""An exercise that asks for what a package function already does refuses a function that
calls it: the learner writes the formula, the check does not run the package's copy of it.

The names a function uses are read from its code (and the code of the notebook functions it
calls, which travel with it), so a call through any alias, ``nl.average_losses`` or
``from nnpar_lite import average_losses``, is seen."""

from __future__ import annotations

import types
from typing import Any, Sequence

from .core import verdict


def code_names(code: types.CodeType) -> set[str]:
    """The global and attribute names a function's code reads, its nested functions' included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_names(const)
    return names


def names_used(fn: Any, seen: set | None = None) -> set[str]:
    """Every name and attribute ``fn`` reads, with those of the functions of its own module (the
    notebook's) that it calls, followed through."""
    seen = set() if seen is None else seen
    if not isinstance(fn, types.FunctionType) or fn in seen:
        return set()
    seen.add(fn)
    names = code_names(fn.__code__)
    for name in sorted(names & set(fn.__globals__)):
        helper = fn.__globals__[name]
        if isinstance(helper, types.FunctionType) and helper.__module__ == fn.__module__:
            names |= names_used(helper, seen)
    return names


def written_without(fn: Any, forbidden: Sequence[str]) -> bool:
    """True when the learner's ``fn`` calls none of ``forbidden`` (the package functions that
    already compute the answer); otherwise the ✘ says which one it uses."""
    if getattr(fn, "__module__", "").split(".")[0] == "nnpar_lite":
        return True                 # the package's own function: the reference the check compares with
    used = sorted(set(forbidden) & names_used(fn))
    if used:
        listed = ", ".join(used)
        return verdict(False, ("", ""), (f"your function uses {listed}, which already computes the answer: this "
                                         "exercise asks you to write that part yourself.",
                                         f"你的函数用到了 {listed}，它已经能算出答案：本练习要你自己写出这一部分。"))
    return True
