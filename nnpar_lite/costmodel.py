"""Cost formulas: communication (the alpha-beta model) and pipeline schedules.

alpha-beta model (Hockney 1994; Thakur et al. 2005): sending n bytes between
two processes takes α + n·β, α the latency, β the time per byte (1/bandwidth).
Every formula here returns seconds (or a fraction), given α, β and sizes;
chapter 06 measures α and β on the learner's machine.
"""

from __future__ import annotations

import numbers


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
    return int(value)


def bubble_fraction(num_stages: int, num_microbatches: int) -> float:
    """The idle share of a GPipe (or 1F1B) pipeline step: (p − 1) / (m + p − 1).

    With p stages and m micro-batches each stage works m time slots of the
    m + p − 1 that the step lasts (Huang et al. 2019, GPipe).
    """
    p, m = _positive_int("num_stages", num_stages), _positive_int("num_microbatches", num_microbatches)
    return (p - 1) / (m + p - 1)


def pipeline_step_time(num_stages: int, num_microbatches: int, forward_time: float, backward_time: float) -> float:
    """Duration of one GPipe or 1F1B step with equal stages: (m + p − 1)(t_f + t_b)."""
    p, m = _positive_int("num_stages", num_stages), _positive_int("num_microbatches", num_microbatches)
    return (m + p - 1) * (forward_time + backward_time)


def peak_activations(num_stages: int, num_microbatches: int, stage: int, schedule: str) -> int:
    """Micro-batches whose activations stage ``stage`` holds at its peak.

    GPipe runs all m forwards before any backward: m. 1F1B starts backwards as
    soon as it can: at most p − stage (Narayanan et al. 2019, PipeDream-Flush).
    """
    p, m = _positive_int("num_stages", num_stages), _positive_int("num_microbatches", num_microbatches)
    if not 0 <= stage < p:
        raise ValueError(f"stage must be in 0..{p - 1}, got {stage}")
    if schedule == "gpipe":
        return m
    if schedule == "1f1b":
        return min(p - stage, m)
    raise ValueError(f"schedule must be 'gpipe' or '1f1b', got {schedule!r}")


def ring_allreduce_time(nbytes: float, world_size: int, alpha: float, beta: float) -> float:
    """All-reduce of n bytes over p processes by the ring: 2(p − 1) α + 2 (p − 1)/p · n β.

    2(p − 1) steps (reduce-scatter, then all-gather), each sending a chunk of n/p
    bytes to the next process (Patarasuk & Yuan 2009).
    """
    p = _positive_int("world_size", world_size)
    if nbytes < 0 or alpha < 0 or beta < 0:
        raise ValueError("nbytes, alpha and beta must be ≥ 0")
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes * beta
