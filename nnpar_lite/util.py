"""Small helpers the modules share: the number checks, near-equal parts, a difference, one thread."""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Iterable, Iterator


def whole_number(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (not a bool) ≥ ``minimum``; ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def real_number(name: str, value: Any, *, minimum: float = 0.0, maximum: float = math.inf,
                above: bool = False) -> float:
    """``value`` as a float if it is a finite real number (not a bool) ≥ ``minimum`` (> it when
    ``above``) and ≤ ``maximum``; ValueError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < minimum or (above and value == minimum) or value > maximum:
        bound = f"between {minimum:g} and {maximum:g}" if maximum < math.inf else \
            f"{'>' if above else '≥'} {minimum:g}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


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


@contextlib.contextmanager
def counting(owner: Any, name: str, counter: dict) -> Iterator[dict]:
    """Within the block, every call of ``owner.name`` (say ``dist.isend``) adds its first
    argument's elements and bytes to ``counter``: how the chapters count what a collective
    sends, without touching the code that calls it."""
    original = getattr(owner, name)

    def counted(tensor, *args, **kwargs):
        counter["elements"] = counter.get("elements", 0) + tensor.numel()
        counter["bytes"] = counter.get("bytes", 0) + tensor.numel() * tensor.element_size()
        return original(tensor, *args, **kwargs)

    setattr(owner, name, counted)
    try:
        yield counter
    finally:
        setattr(owner, name, original)
