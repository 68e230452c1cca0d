"""An exercise that asks for what a package function already does refuses a function that
calls it: the learner writes the formula, the check does not run the package's copy of it.

The names a function uses are read from its source (and the sources of the notebook functions
it calls, which travel with it), so a call through any alias, ``nl.average_losses`` or
``from nnpar_lite import average_losses``, is seen."""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from typing import Any, Sequence

from .core import verdict


def names_used(fn: Any, seen: set | None = None) -> set[str]:
    """Every name and attribute ``fn``'s source reads, with those of the functions of its own
    module (the notebook's) that it calls, followed through."""
    seen = set() if seen is None else seen
    if not isinstance(fn, types.FunctionType) or fn in seen:
        return set()
    seen.add(fn)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return set()
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for name in list(names):
        helper = fn.__globals__.get(name)
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
