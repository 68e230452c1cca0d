"""Chapter 09's compression runs: error feedback's effect on the running mean of compressed
averages, and K simulated workers training on the digits with each compressor (PowerSGD of
rank 1, 2, 4; top-k 1 % and 10 %), with and without error feedback, their bytes counted.

The compressors are in :mod:`nnpar_lite.compression` (and one simulated step of compressed SGD
in :mod:`nnpar_lite.compression`); here is only what runs them. Runs are in float64, so that
their accuracies come out the same on any CPU.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from ... import compression
from ...compression import compressed_sgd_step
from ...compression import PowerSGD, TopK, simulate_allreduce_
from ...data import digits_split
from ...models import evaluate, mlp
from ...util import one_thread


def error_feedback_curves(steps: int = 400, workers: int = 3, shapes: Sequence[tuple] = ((20, 30), (30,), (7, 5)),
                          seed: int = 0) -> dict:
    """K simulated workers average the same gradients (fixed, different per worker) step after
    step with PowerSGD rank 1 and top-k 10 %, with and without error feedback. For each: the
    error of the running mean of the outputs, ‖1/T Σ_t output_t − ḡ‖ / ‖ḡ‖, at every T."""
    gens = [torch.Generator().manual_seed(1000 * seed + k) for k in range(workers)]
    grads = [[torch.randn(*shape, generator=g, dtype=torch.float64) for shape in shapes] for g in gens]
    g_bar = [sum(w[i] for w in grads) / workers for i in range(len(shapes))]
    scale = float(torch.cat([g.reshape(-1) for g in g_bar]).norm())
    curves = {}
    with one_thread():
        for name, make in (("PowerSGD rank 1", lambda ef: PowerSGD(1, error_feedback=ef)),
                           ("top-k 10 %", lambda ef: TopK(0.1, error_feedback=ef))):
            for feedback in (True, False):
                compressors, total, errors = [make(feedback) for _ in range(workers)], [0.0 * g for g in g_bar], []
                for T in range(1, steps + 1):
                    outputs = [[g.clone() for g in w] for w in grads]
                    simulate_allreduce_(compressors, outputs)
                    total = [t + o for t, o in zip(total, outputs[0])]
                    gap = torch.cat([(t / T - g).reshape(-1) for t, g in zip(total, g_bar)])
                    errors.append(float(gap.norm()) / scale)
                curves[(name, feedback)] = errors
    return curves


COMPRESSORS = {"PowerSGD rank 1": ("PowerSGD", 1), "PowerSGD rank 2": ("PowerSGD", 2),
               "PowerSGD rank 4": ("PowerSGD", 4), "top-k 1 %": ("TopK", 0.01), "top-k 10 %": ("TopK", 0.1)}


def _compressor(name: str, error_feedback: bool):
    kind, amount = COMPRESSORS[name]
    return getattr(compression, kind)(amount, error_feedback=error_feedback)


@functools.lru_cache(maxsize=None)
def compression_run(name: str, error_feedback: bool = True, *, workers: int = 2, steps: int = 150,
                    batch: int = 64, lr: float = 0.2, hidden: int = 64, every: int = 15, seed: int = 0) -> dict:
    """K simulated workers train an MLP (64 → hidden → 10, float64) on the digits; each step's
    gradients are averaged by ``compression.simulate_allreduce_`` with the named compressor
    (``name="exact"``: the plain mean). Returns the bytes each worker sent per step and the test
    accuracy every ``every`` steps. Cached: the chapter's figure and its widget draw the same runs."""
    x, y, x_test, y_test = digits_split()
    x, x_test = x.double(), x_test.double()
    model = mlp((64, hidden, 10), seed=seed, dtype=torch.float64)
    compressors = None if name == "exact" else [_compressor(name, error_feedback) for _ in range(workers)]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    accuracy = [(0, evaluate(model, x_test, y_test)["accuracy"])]
    with one_thread():
        for step in range(steps):
            rows = order[(step * batch + torch.arange(batch)) % len(x)]
            compressed_sgd_step(model, [(x[r], y[r]) for r in rows.chunk(workers)], compressors, lr)
            if (step + 1) % every == 0:
                accuracy.append((step + 1, evaluate(model, x_test, y_test)["accuracy"]))
    dense = 8 * sum(p.numel() for p in model.parameters())
    return {"bytes per step": dense if compressors is None else compressors[0].bytes_sent / steps,
            "dense bytes per step": dense, "accuracy": accuracy}


def compression_runs(**settings) -> dict[tuple[str, bool], dict]:
    """Every compressor of the chapter, with and without error feedback, and the exact mean:
    {(name, error feedback): run}."""
    runs = {("exact", True): compression_run("exact", True, **settings)}
    for name in COMPRESSORS:
        for feedback in (True, False):
            runs[(name, feedback)] = compression_run(name, feedback, **settings)
    return runs
