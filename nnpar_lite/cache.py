"""How much of a tensor to work on at a time so that it is still in the CPU's cache when it is
read again: the size of this machine's last-level cache, read at run time, never a constant.

The formulas compute o = Σ_i c_i x_i as o = c_0 x_0, then o += c_i x_i: the output is read and
written once per worker, and read once more by the NaN/Inf check. Done a block at a time, the
block of o stays in cache for all of that while the K inputs stream past it from memory, so
memory sees each x_i once and o once: K + 1 passes instead of 2K + 1.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path


@functools.lru_cache(maxsize=1)
def last_level_cache_bytes() -> int | None:
    """The largest CPU cache this process can see (Linux: sysconf, else /sys); None if unknown."""
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            size = os.sysconf(name)
        except (ValueError, OSError, AttributeError):
            continue
        if size and size > 0:
            return int(size)
    sizes = [_parse_size(p.read_text()) for p in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size")]
    return max((s for s in sizes if s), default=None)


def _parse_size(text: str) -> int | None:
    text = text.strip().upper()
    scale = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}.get(text[-1:], 1)
    try:
        return int(text.rstrip("KMG")) * scale
    except ValueError:
        return None


def block_elements(num_inputs: int, element_size: int) -> int | None:
    """Elements per block: the output block and the blocks of the ``num_inputs`` inputs that
    stream past it share half the last-level cache (the other half is left to everything
    else that runs: other cores, the interpreter). None when the cache size is unknown."""
    cache = last_level_cache_bytes()
    if cache is None:
        return None
    return max(1024, cache // (2 * (num_inputs + 1) * element_size))


def blocks(numel: int, num_inputs: int, element_size: int) -> list[slice]:
    """Consecutive slices of range(numel), each :func:`block_elements` long (one when unknown)."""
    size = block_elements(num_inputs, element_size) or max(numel, 1)
    return [slice(start, min(start + size, numel)) for start in range(0, max(numel, 1), size)]


def blocks_of(out, inputs: list) -> list:
    """(a block of ``out``, the same block of each input), cache-sized, as torch tensors that share
    the arrays' memory (numpy arrays too, so one loop serves both). Tensors that are not all
    contiguous, or not on the CPU, come as one block: the whole of each."""
    import warnings

    import torch
    with warnings.catch_warnings():   # a read-only input array is only read
        warnings.simplefilter("ignore", UserWarning)
        o, xs = torch.as_tensor(out), [torch.as_tensor(x) for x in inputs]
    if o.device.type != "cpu" or not all(t.is_contiguous() for t in (o, *xs)):
        return [(o, xs)]
    o, xs = o.view(-1), [x.view(-1) for x in xs]
    return [(o[b], [x[b] for x in xs]) for b in blocks(o.numel(), len(xs), o.element_size())]
