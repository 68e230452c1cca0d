"""Chapter 01's measurements (seed 1.3, 2.1, 2.4, 2.5): how a training step's time grows with
the model, how a matrix product speeds up over threads, and a two-stage pipeline across devices
checked against the unsplit model. A timing is the fastest of a few repeats after one warm-up
run: other programs on the machine can only add time, never remove it."""

from __future__ import annotations

import copy
import os
import statistics
import time
from typing import Sequence

import torch
import torch.nn.functional as F

from ..devices import synchronize
from ..models import mlp, parameter_count
from ..pipeline import run_on_devices
from ..util import max_abs_difference, whole_number

SECONDS_PER_YEAR = 365.25 * 24 * 3600
GPT3_TRAINING_FLOPS = 3.14e23     # GPT-3 175B, total training compute (Brown et al. 2020, table D.1)


def step_seconds(width: int, batch: int = 128, repeats: int = 5) -> tuple[float, int]:
    """Seconds of one training step (forward, loss, backward) of an MLP
    512 → width → width → 10 on a random batch, and the MLP's parameter count."""
    model = mlp((512, width, width, 10))
    x, y = torch.randn(batch, 512), torch.randint(0, 10, (batch,))
    times = []
    for _ in range(repeats + 1):                   # the first run warms up and is dropped
        start = time.perf_counter()
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        times.append(time.perf_counter() - start)
    return min(times[1:]), parameter_count(model)


def step_flops(parameters: int, batch: int) -> float:
    """Seed 1.3: a training step costs about 6 · parameters · batch floating-point operations
    (2 per parameter and sample forward, 4 backward; Kaplan et al. 2020)."""
    return 6.0 * parameters * batch


def step_timings(widths: Sequence[int] = (128, 256, 512, 1024, 2048), batch: int = 128) -> list[dict]:
    """One row per width: parameters, operations per step, seconds per step, FLOP/s."""
    step_seconds(widths[0], batch, repeats=1)      # torch's first step starts its thread pool: not timed
    rows = []
    for width in widths:
        seconds, parameters = step_seconds(width, batch)
        flops = step_flops(parameters, batch)
        rows.append({"width": width, "parameters": parameters, "flops": flops, "seconds": seconds,
                     "flop/s": flops / seconds})
    return rows


def training_rate(rows: Sequence[dict]) -> float:
    """The machine's training rate in FLOP/s: the median over the three largest models
    (small ones are dominated by overheads, not arithmetic)."""
    return statistics.median(row["flop/s"] for row in rows[-3:])


def years_to_train(total_flops: float, flops_per_second: float) -> float:
    """Time to do ``total_flops`` at a sustained rate: total / rate, in years."""
    return total_flops / flops_per_second / SECONDS_PER_YEAR


def usable_cores() -> int:
    """The cores this process may run on (fewer than the machine's under taskset or a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def matmul_seconds(n: int = 1024, *, threads: int | None = None, device: str = "cpu", repeats: int = 3) -> float:
    """Seconds of an n×n float32 matrix product (2n³ operations) on ``device``; on the
    CPU with ``threads`` threads (torch's setting is restored afterwards). A GPU runs
    asynchronously, so the clock stops only after :func:`synchronize`."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(whole_number("threads", threads))
    try:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        a @ b                                       # warm-up
        synchronize(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            synchronize(device)
            times.append(time.perf_counter() - start)
        return min(times)
    finally:
        torch.set_num_threads(before)


def thread_speedups(n: int = 1024) -> dict[int, float]:
    """Speed-up S_p = t_1 / t_p of a matrix product on 1, 2 and all usable cores' threads."""
    counts = sorted({1, min(2, usable_cores()), usable_cores()})
    seconds = {p: matmul_seconds(n, threads=p) for p in counts}
    return {p: seconds[1] / t for p, t in seconds.items()}


def heterogeneous_gap(devices: Sequence[str], batch: int = 12, seed: int = 0) -> float:
    """Seed 2.5: a two-stage MLP with stage s on ``devices[s]`` (the CPU and a GPU, or two CPU
    stages), activations crossing between them; the largest difference between its gradients
    and the unsplit model's on the CPU, in float64."""
    model = mlp((64, 32, 10), seed=seed, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 64, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    reference = copy.deepcopy(model)
    F.cross_entropy(reference(x), y).backward()    # the unsplit model, on the whole batch
    split = run_on_devices(model, devices, x, y)
    return max_abs_difference(split, [p.grad for p in reference.parameters()])
