"""Cost formulas, and nothing else: communication (the alpha-beta model), pipeline
schedules, parallel laws, heterogeneous workers and training memory.

alpha-beta model (Hockney 1994; Thakur et al. 2005): sending n bytes between two
processes takes α + n·β, α the latency, β the time per byte (1/bandwidth). (Chapter 04's
α, the Dirichlet concentration, is another α.) Every formula returns seconds, bytes or a
fraction from the sizes given; the chapters measure α and β on the learner's machine
(:mod:`nnpar_lite.experiments.scaling`).
"""

from __future__ import annotations

from typing import Sequence

from .util import whole_number as _positive_int


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

    GPipe runs all m forwards before any backward: m. One-forward-one-backward with a
    flush at the end of the step (1F1B: Narayanan et al., ICML 2021, "Memory-Efficient
    Pipeline-Parallel DNN Training", PipeDream-Flush; Megatron-LM at scale, SC21) starts
    backwards as soon as it can: at most p − stage, so stage 0 holds the most, min(p, m).
    (PipeDream itself, SOSP 2019, is asynchronous 1F1B with weight stashing and has no flush.)
    Without activation recomputation: GPipe's paper recomputes each stage's forward during
    backward and keeps only the micro-batches' stage inputs, which this count leaves out.
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


# ------------------------------------------------------------- collectives
def tree_allreduce_time(nbytes: float, world_size: int, alpha: float, beta: float) -> float:
    """Reduce to a root along a binomial tree, then broadcast back: 2 ⌈log₂ p⌉ (α + n β).

    Fewer latency terms than the ring for many processes, but unpipelined, the whole
    message crosses every level: good for small messages, poor for large ones. Pipelined
    trees cut the message into chunks that flow down the levels one after another (NCCL's
    double binary tree: a bandwidth term of about 2 n β, like the ring's).
    """
    p = _positive_int("world_size", world_size)
    levels = (p - 1).bit_length()  # ⌈log₂ p⌉
    return 2 * levels * (alpha + nbytes * beta)


def parameter_server_time(nbytes: float, world_size: int, alpha: float, beta: float, servers: int = 1) -> float:
    """p − 1 workers push their n bytes and pull the result: 2 (p − 1)(α + n β / S).

    With one server its link carries 2 (p − 1) n bytes in turn: a *single* server does not
    scale. Li et al. (OSDI 2014) shard the parameters over S servers, each holding n / S of
    them, so each link carries 1/S of the traffic (BytePS, OSDI 2020, sizes S to the workers).
    """
    p, s = _positive_int("world_size", world_size), _positive_int("servers", servers)
    return 2 * (p - 1) * (alpha + nbytes / s * beta)


ALLREDUCE_TIMES = {"ring": ring_allreduce_time, "tree": tree_allreduce_time,
                   "parameter server": parameter_server_time}


def fit_alpha_beta(nbytes, seconds, world_size: int = 2) -> tuple[float, float]:
    """α and β of the ring model from measured all-reduce times, by least squares on the
    *relative* error (each point weighted by 1/t, so small messages count as much as large).

    The ring predicts t = 2(p − 1) α + 2 (p − 1)/p · n β: a straight line in n.
    """
    import numpy as np

    n, t = np.asarray(nbytes, dtype=float), np.asarray(seconds, dtype=float)
    if n.shape != t.shape or n.ndim != 1 or len(n) < 2:
        raise ValueError("need at least two (nbytes, seconds) pairs of equal length")
    if np.any(t <= 0) or np.any(n < 0):
        raise ValueError("times must be positive and sizes non-negative")
    p = _positive_int("world_size", world_size)
    if p < 2:
        raise ValueError("an all-reduce over one process costs nothing: need world_size ≥ 2")
    design = np.stack([np.full_like(n, 2 * (p - 1)), 2 * (p - 1) / p * n], axis=1) / t[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    return float(alpha), float(beta)


# ------------------------------------------------------------- data parallel
def overlap_hides_communication(compute_backward: float, communication: float) -> bool:
    """Data parallelism with buckets launched during the backward pass (as DDP does) hides
    the all-reduce when it takes no longer than the backward computation after the first
    bucket is ready; to first order, when communication ≤ backward time."""
    return communication <= compute_backward


def data_parallel_step_time(compute: float, communication: float, *, overlap: bool = False) -> float:
    """One data-parallel step: compute, then communicate (``overlap=False``, as
    ``allreduce_gradients`` after backward does), or both at once (``overlap=True``,
    DDP's buckets during backward at best): compute + comm, or max(compute, comm)."""
    return max(compute, communication) if overlap else compute + communication


def scaling_efficiency(time_one: float, time_p: float, world_size: int) -> float:
    """Strong scaling efficiency: speed-up / p = t₁ / (p · t_p)."""
    return time_one / (_positive_int("world_size", world_size) * time_p)


# --------------------------------------------------------- parallel laws
def amdahl_speedup(parallel_fraction: float, workers: float) -> float:
    """Amdahl 1967, a fixed problem: S = 1 / ((1 − f) + f / p)."""
    _check_fraction(parallel_fraction)
    return 1.0 / ((1 - parallel_fraction) + parallel_fraction / workers)


def gustafson_speedup(parallel_fraction: float, workers: float) -> float:
    """Gustafson 1988, the problem grows with p (fixed time): S = (1 − f) + f p."""
    _check_fraction(parallel_fraction)
    return (1 - parallel_fraction) + parallel_fraction * workers


def _check_fraction(f: float) -> None:
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"parallel_fraction must be between 0 and 1, got {f}")


# ------------------------------------------------------------ heterogeneous
def heterogeneous_step(speeds: Sequence[float], sizes: Sequence[int]) -> dict:
    """Synchronous data parallelism with workers of different speeds (samples per second):
    each computes its shard in n_i / s_i, and the step waits for the slowest. Returns each
    worker's compute time, the step time and the idle share of the workers' time."""
    if len(speeds) != len(sizes) or any(s <= 0 for s in speeds):
        raise ValueError("give one positive speed per shard")
    compute = [n / s for n, s in zip(sizes, speeds)]
    step = max(compute)
    return {"compute": compute, "step": step, "idle": 1 - sum(compute) / (len(compute) * step)}


def communication_per_epoch(num_parameters: int, num_workers: int, local_steps: int, *,
                            steps_per_epoch: int = 1, bytes_per_value: int = 4) -> dict[str, float]:
    """What one worker sends per epoch when the models are averaged every H local steps by a
    ring all-reduce: rounds = steps_per_epoch / H, each sending 2 (K − 1)/K · P values."""
    rounds = steps_per_epoch / _positive_int("local_steps", local_steps)
    k = _positive_int("num_workers", num_workers)
    per_round = 2 * (k - 1) / k * num_parameters * bytes_per_value
    return {"rounds": rounds, "bytes": rounds * per_round}


# ------------------------------------------------------------------ memory
# Bytes per parameter of (weights, gradients, optimizer state). "mixed" is the ZeRO paper's
# mixed-precision training (Rajbhandari et al., SC 2020): fp16 weights and gradients, and an
# fp32 master copy of the weights beside the optimizer's fp32 state: 2Ψ + 2Ψ + KΨ, K = 12
# for Adam (master weights, momentum, variance).
PRECISIONS = {
    ("fp32", "sgd"): (4, 4, 0), ("fp32", "sgd-momentum"): (4, 4, 4), ("fp32", "adam"): (4, 4, 8),
    ("mixed", "sgd"): (2, 2, 4), ("mixed", "sgd-momentum"): (2, 2, 8), ("mixed", "adam"): (2, 2, 12),
}
# Without sequence parallelism, Megatron's tensor parallelism leaves about 10 s·b·h of a
# transformer layer's 34 s·b·h activation bytes replicated on every device (layer norms,
# dropout, residuals; Korthikanti et al. 2022, eq. 2 against eq. 1, attention scores aside).
REPLICATED_ACTIVATIONS = 10 / 34


def model_state_bytes(num_params: float, *, precision: str = "fp32", optimizer: str = "adam",
                      num_tensors: int = 0) -> dict[str, float]:
    """Bytes of weights, gradients and optimizer state of one unsplit copy: the *model states*
    (activations are extra). PyTorch's Adam adds a 4-byte step counter per parameter tensor."""
    if (precision, optimizer) not in PRECISIONS:
        raise ValueError(f"precision and optimizer must be one of {sorted(PRECISIONS)}, got {(precision, optimizer)}")
    weight, gradient, state = PRECISIONS[precision, optimizer]
    return {"parameters": weight * num_params, "gradients": gradient * num_params,
            "optimizer state": state * num_params + (4 * num_tensors if optimizer == "adam" else 0)}


def training_memory(num_params: float, *, precision: str = "fp32", optimizer: str = "adam", num_tensors: int = 0,
                    activation_bytes: float = 0.0, zero_stage: int = 0, data_parallel: int = 1,
                    tensor_parallel: int = 1, pipeline_parallel: int = 1, num_microbatches: int = 1,
                    schedule: str = "gpipe", sequence_parallel: bool = False) -> dict[str, float]:
    """Bytes per device for training a model of ``num_params`` parameters (Ψ).

    Model states (:func:`model_state_bytes`): tensor (t) and pipeline (p) parallelism split
    all three; ZeRO (Rajbhandari et al. 2020) shards them over the d data-parallel replicas,
    stage 1 the optimizer state, 2 also the gradients, 3 also the weights. ``activation_bytes``
    are those of the whole global batch on one unsplit replica, none recomputed: d replicas
    each see 1/d of the batch; p stages each keep their layers' share (to first order), and of
    the ``num_microbatches`` m a stage holds at its peak all m under ``schedule`` "gpipe" and
    min(p, m) under "1f1b" (stage 0, the fullest: :func:`peak_activations`); t devices split
    all but the replicated share unless ``sequence_parallel`` splits that too.
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    d, t = _positive_int("data_parallel", data_parallel), _positive_int("tensor_parallel", tensor_parallel)
    p, m = _positive_int("pipeline_parallel", pipeline_parallel), _positive_int("num_microbatches", num_microbatches)
    states = model_state_bytes(num_params, precision=precision, optimizer=optimizer, num_tensors=num_tensors)
    sharded_from = {"parameters": 3, "gradients": 2, "optimizer state": 1}
    memory = {part: b / (t * p) / (d if zero_stage >= sharded_from[part] else 1) for part, b in states.items()}
    replicated = 0.0 if sequence_parallel or t == 1 else REPLICATED_ACTIVATIONS
    held = peak_activations(p, m, 0, schedule) / m                  # share of the m micro-batches held at once
    memory["activations"] = activation_bytes / (d * p) * held * (replicated + (1 - replicated) / t)
    memory["total"] = sum(memory.values())
    return memory
