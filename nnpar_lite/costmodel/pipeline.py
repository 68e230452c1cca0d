"""What a pipeline costs: the bubble, the step's length, and the activations a stage holds
under GPipe and 1F1B (chapter 05)."""

from __future__ import annotations

from ..util import whole_number


def bubble_fraction(num_stages: int, num_microbatches: int) -> float:
    """The idle share of a GPipe (or 1F1B) pipeline step: (p − 1) / (m + p − 1).

    With p stages and m micro-batches each stage works m time slots of the
    m + p − 1 that the step lasts (Huang et al. 2019, GPipe).
    """
    p, m = whole_number("num_stages", num_stages), whole_number("num_microbatches", num_microbatches)
    return (p - 1) / (m + p - 1)


def pipeline_step_time(num_stages: int, num_microbatches: int, forward_time: float, backward_time: float) -> float:
    """Duration of one GPipe or 1F1B step with equal stages: (m + p − 1)(t_f + t_b)."""
    p, m = whole_number("num_stages", num_stages), whole_number("num_microbatches", num_microbatches)
    return (m + p - 1) * (forward_time + backward_time)


def peak_activations(num_stages: int, num_microbatches: int, stage: int, schedule: str) -> int:
    """Micro-batches whose activations stage ``stage`` holds at its peak.

    GPipe runs all m forwards before any backward: m. One-forward-one-backward with a
    flush at the end of the step (1F1B: Narayanan et al., ICML 2021, "Memory-Efficient
    Pipeline-Parallel DNN Training", PipeDream-Flush; Megatron-LM at scale, SC21) starts
    backwards as soon as it can: at most p − stage, so stage 0 holds the most, min(p, m).
    (PipeDream itself, SOSP 2019, is asynchronous 1F1B with weight stashing and has no flush.)
    Without activation recomputation: GPipe's paper recomputes each stage's forward during
    backward and keeps only the micro-batches' stage inputs, which this count leaves out.
    """
    p, m = whole_number("num_stages", num_stages), whole_number("num_microbatches", num_microbatches)
    whole_number("stage", stage, minimum=0, maximum=p - 1)
    if schedule == "gpipe":
        return m
    if schedule == "1f1b":
        return min(p - stage, m)
    raise ValueError(f"schedule must be 'gpipe' or '1f1b', got {schedule!r}")
