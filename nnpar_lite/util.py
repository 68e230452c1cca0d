"""Small helpers the modules share: the number checks, near-equal parts, a difference, one thread."""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Iterable, Iterator


def whole_number(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool), minimum ≤ value (≤ maximum, if given);
    ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum \
            or (maximum is not None and value > maximum):
        bounds = f"≥ {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def real_number(name: str, value: Any, *, minimum: float | None = None, above: float | None = None,
                maximum: float | None = None, why: str = "") -> float:
    """``value`` as a float if it is a finite real number (not a bool) with value ≥ ``minimum``,
    value > ``above`` and value ≤ ``maximum`` (those given); ValueError naming it otherwise, with
    ``why`` (what the number is) after the bounds. The one check of a real number in the package:
    ``bucket_mb`` and ``curvature`` (> 0), a weight (≥ 0), a fraction (in (0, 1])."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or (minimum is not None and value < minimum) or (above is not None and value <= above) \
            or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {_described(minimum, above, maximum)}{why}, got {value!r}")
    return float(value)


def _described(minimum: float | None, above: float | None, maximum: float | None) -> str:
    """The bounds in words: "a positive number", "a finite number ≥ 0", "a number in (0, 1]"."""
    if above == 0 and minimum is None and maximum is None:
        return "a positive number"
    if maximum is None:
        return "a finite number" + (f" ≥ {minimum:g}" if minimum is not None else f" > {above:g}" if above is not None
                                    else "")
    low = f"[{minimum:g}" if minimum is not None else f"({above:g}" if above is not None else "(−∞"
    return f"a number in {low}, {maximum:g}]"


def positive_number(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite real number > 0 (not a bool); ValueError naming it."""
    return real_number(name, value, above=0)


def even_bounds(n: int, k: int) -> list[tuple[int, int]]:
    """[start, stop) of k consecutive parts of range(n) whose sizes differ by at most one,
    the larger ones first (as ``torch.tensor_split`` and ``numpy.array_split`` cut)."""
    n, k = whole_number("n", n, minimum=0), whole_number("k", k)
    base, extra = divmod(n, k)
    stops = [sum(base + (i < extra) for i in range(j + 1)) for j in range(k)]
    return list(zip([0] + stops[:-1], stops))


def max_abs_difference(a: Any, b: Any) -> float:
    """The largest |a − b| over two tensors, two modules' parameters, or two lists of tensors
    (0.0 for empty ones): how far apart two computations of the same thing ended."""
    import torch

    def tensors(x) -> Iterable:
        if isinstance(x, torch.nn.Module):
            return list(x.parameters())
        return [x] if isinstance(x, torch.Tensor) else list(x.values() if isinstance(x, dict) else x)

    pairs = list(zip(tensors(a), tensors(b), strict=True))
    with torch.no_grad():
        return max((float((p.double() - q.double()).abs().max()) for p, q in pairs if p.numel()), default=0.0)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run a block on one torch thread, then restore the setting. The chapters' small models
    (products of a few hundred rows) gain nothing from more threads, and on a busy machine a
    team of threads waiting for each other ran them tens of times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# The names ``util.counting(dist, name, counter)`` counted, as collectives.count_communication logs them.
_COUNTED_AS = {"isend": "send", "send": "send", "all_reduce": "all_reduce", "broadcast": "broadcast"}


def counting(owner: Any, name: str, counter: dict):
    """The earlier form of :func:`nnpar_lite.collectives.counting`, kept for code written before it:
    ``counting(dist, "isend", counter)`` adds the elements and bytes of every send this process
    starts to ``counter``; ``counting(dist, "all_reduce", counter)`` those of every all-reduce."""
    from .collectives import counting as counting_collectives   # util sits below collectives

    if name not in _COUNTED_AS:
        raise ValueError(f"counting knows {sorted(_COUNTED_AS)} of torch.distributed, got {name!r}")
    return counting_collectives(_COUNTED_AS[name], counter)


def interface(fn: Any, exercise: str) -> str:
    """The source of ``fn`` up to the end of its docstring, its body left out (``...``): what a
    chapter shows of a function whose body is the answer to its exercise ``exercise``."""
    import ast
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(fn))
    definition = ast.parse(source).body[0]
    first = definition.body[0] if isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        raise ValueError(f"{fn.__qualname__} has no docstring to show in place of its body")
    head = source.splitlines()[:first.end_lineno]
    return "\n".join(head + [" " * first.col_offset + f"...  # the body: exercise {exercise}'s answer"])
