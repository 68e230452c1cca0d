"""Comparing a learner's result with the expected one, and saying where they first differ:
the checks every chapter's exercises share (re-exported by :mod:`.core`)."""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np


def as_number(answer: Any) -> float | None:
    """``answer`` as a float (a Python, numpy or 0-d torch number, or a numeric string), else None."""
    if isinstance(answer, bool):
        return None
    try:
        value = float(answer)
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if math.isfinite(value) else None


def same_number(got: Any, expected: float, rel: float = 1e-9) -> bool:
    """Is ``got`` a number (Python, numpy or a 0-d tensor) within ``rel`` of ``expected``?"""
    value = as_number(got)
    return value is not None and math.isclose(value, float(expected), rel_tol=rel, abs_tol=1e-12)


def as_array(value: Any) -> np.ndarray | None:
    """A tensor, an array or a (nested) list of numbers as a float64 array; None otherwise."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return None
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array


def same_values(got: Any, expected: Any, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
    """Do ``got`` and ``expected`` hold the same numbers, in the same shape, within the tolerance?
    Tuples and lists of tensors or arrays are compared part by part."""
    if isinstance(expected, (tuple, list)) and expected and as_array(expected) is None:
        return isinstance(got, (tuple, list)) and len(got) == len(expected) and all(
            same_values(g, e, rtol, atol) for g, e in zip(got, expected))
    g, e = as_array(got), as_array(expected)
    return g is not None and e is not None and g.shape == e.shape and bool(np.allclose(g, e, rtol=rtol, atol=atol))


def same_sequence(got: Any, expected: Sequence) -> bool:
    """Is ``got`` the same sequence of items as ``expected`` (tuples and lists alike, numbers as ints)?"""
    def plain(item):
        if isinstance(item, (tuple, list)):
            return tuple(plain(i) for i in item)
        return int(item) if isinstance(item, numbers.Integral) or (hasattr(item, "__index__")) else item
    try:
        return [plain(i) for i in got] == [plain(i) for i in expected]
    except (TypeError, ValueError):
        return False


def difference(expected: Any, got: Any) -> tuple[str, str]:
    """Where ``got`` first differs from ``expected``, as a good test names it: the index (or part)
    and both values there, or a type, shape or length that differs (English, Chinese)."""
    if got is None:
        return ("expected a result, got None (does your function return it?)", "应有结果，实际得到 None（函数返回结果了吗？）")
    if isinstance(expected, (tuple, list)) and expected and as_array(expected) is None:
        return _sequence_difference(expected, got)
    e, g = as_array(expected), as_array(got)
    if e is None or g is None:
        return (f"expected {_short(expected)}, got {_short(got)}", f"应为 {_short(expected)}，实际得到 {_short(got)}")
    if e.shape != g.shape:
        if e.ndim == g.ndim == 1 and max(len(_short(expected)), len(_short(got))) < 80:
            return (f"expected {_short(expected)}, got {_short(got)}", f"应为 {_short(expected)}，实际得到 {_short(got)}")
        return (f"expected shape {e.shape}, got shape {g.shape}", f"形状应为 {e.shape}，实际为 {g.shape}")
    if e.ndim == 0:
        return (f"expected {e.item():.10g}, got {g.item():.10g}", f"应为 {e.item():.10g}，实际得到 {g.item():.10g}")
    off = ~np.isclose(g, e, rtol=1e-7, atol=1e-10)
    index = np.argwhere(off)[0] if off.any() else np.unravel_index(np.argmax(np.abs(g - e)), e.shape)
    at = tuple(int(i) for i in index) if e.ndim > 1 else int(index[0])
    count = f"{int(off.sum())} of {e.size}"
    return (f"first difference at index {at}: expected {e[tuple(np.atleast_1d(index))]:.10g}, got "
            f"{g[tuple(np.atleast_1d(index))]:.10g} ({count} values differ)",
            f"第一处差异在下标 {at}：应为 {e[tuple(np.atleast_1d(index))]:.10g}，实际得到 "
            f"{g[tuple(np.atleast_1d(index))]:.10g}（{e.size} 个值中有 {int(off.sum())} 个不同）")


def _sequence_difference(expected: Sequence, got: Any) -> tuple[str, str]:
    """The first position where two sequences differ, or their lengths."""
    if not isinstance(got, (tuple, list, range)) and not hasattr(got, "__len__"):
        return (f"expected a sequence of {len(expected)} items, got {_short(got)}",
                f"应为含 {len(expected)} 项的序列，实际得到 {_short(got)}")
    got = list(got)
    for i, (e, g) in enumerate(zip(expected, got)):
        numeric = as_array(e) is not None and not isinstance(e, tuple)
        if numeric and not same_values(g, e) and np.ndim(as_array(e)) > 0:
            inner = difference(e, g)
            return (f"item {i}: {inner[0]}", f"第 {i} 项：{inner[1]}")
        if not (same_values(g, e) if numeric else same_sequence([g], [e])):
            return (f"first difference at position {i}: expected {_short(e)}, got {_short(g)}",
                    f"第一处差异在位置 {i}：应为 {_short(e)}，实际得到 {_short(g)}")
    return (f"expected {len(expected)} items, got {len(got)}; the first {min(len(expected), len(got))} agree",
            f"应有 {len(expected)} 项，实际 {len(got)} 项；前 {min(len(expected), len(got))} 项一致")


def _short(value: Any) -> str:
    text = repr(value.tolist() if hasattr(value, "tolist") else list(value) if isinstance(value, range) else value)
    return text if len(text) <= 80 else text[:77] + "..."


