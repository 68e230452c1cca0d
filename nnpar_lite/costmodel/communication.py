"""What communication costs: the alpha-beta model of the collectives (ring, tree, parameter
server), its fit to measured times, and the bytes a rank sends when replicas average gradients,
models or ZeRO's shards.

alpha-beta model (Hockney 1994; Thakur et al. 2005): sending n bytes between two processes
takes α + n·β, α the latency, β the time per byte (1/bandwidth). (Chapter 04's α, the Dirichlet
concentration, is another α.) Chapter 07 measures α and β on the learner's machine
(:mod:`nnpar_lite.experiments.scaling`).
"""

from __future__ import annotations

import numpy as np

from ..util import real_number, whole_number


def ring_allreduce_time(nbytes: float, world_size: int, alpha: float, beta: float) -> float:
    """All-reduce of n bytes over p processes by the ring: 2(p − 1) α + 2 (p − 1)/p · n β.

    2(p − 1) steps (reduce-scatter, then all-gather), each sending a chunk of n/p
    bytes to the next process (Patarasuk & Yuan 2009).
    """
    p = whole_number("world_size", world_size)
    nbytes, alpha, beta = (real_number(name, value, minimum=0) for name, value in
                           (("nbytes", nbytes), ("alpha", alpha), ("beta", beta)))
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes * beta


def tree_allreduce_time(nbytes: float, world_size: int, alpha: float, beta: float) -> float:
    """Reduce to a root along a binomial tree, then broadcast back: 2 ⌈log₂ p⌉ (α + n β).

    Fewer latency terms than the ring for many processes, but unpipelined, the whole
    message crosses every level: good for small messages, poor for large ones. Pipelined
    trees cut the message into chunks that flow down the levels one after another (NCCL's
    double binary tree: a bandwidth term of about 2 n β, like the ring's).
    """
    p = whole_number("world_size", world_size)
    levels = (p - 1).bit_length()  # ⌈log₂ p⌉
    return 2 * levels * (alpha + nbytes * beta)


def parameter_server_time(nbytes: float, world_size: int, alpha: float, beta: float, servers: int = 1) -> float:
    """p − 1 workers push their n bytes and pull the result: 2 (p − 1)(α + n β / S).

    With one server its link carries 2 (p − 1) n bytes in turn: a *single* server does not
    scale. Li et al. (OSDI 2014) shard the parameters over S servers, each holding n / S of
    them, so each link carries 1/S of the traffic (BytePS, OSDI 2020, sizes S to the workers).
    """
    p, s = whole_number("world_size", world_size), whole_number("servers", servers)
    return 2 * (p - 1) * (alpha + nbytes / s * beta)


ALLREDUCE_TIMES = {"ring": ring_allreduce_time, "tree": tree_allreduce_time,
                   "parameter server": parameter_server_time}


def fit_alpha_beta(nbytes, seconds, world_size: int = 2) -> tuple[float, float]:
    """α and β of the ring model from measured all-reduce times, by least squares on the
    *relative* error (each point weighted by 1/t, so small messages count as much as large).

    The ring predicts t = 2(p − 1) α + 2 (p − 1)/p · n β: a straight line in n.
    """
    n, t = np.asarray(nbytes, dtype=float), np.asarray(seconds, dtype=float)
    if n.shape != t.shape or n.ndim != 1 or len(n) < 2:
        raise ValueError("need at least two (nbytes, seconds) pairs of equal length")
    if np.any(t <= 0) or np.any(n < 0):
        raise ValueError("times must be positive and sizes non-negative")
    p = whole_number("world_size", world_size)
    if p < 2:
        raise ValueError("an all-reduce over one process costs nothing: need world_size ≥ 2")
    design = np.stack([np.full_like(n, 2 * (p - 1)), 2 * (p - 1) / p * n], axis=1) / t[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    return float(alpha), float(beta)


def communication_per_epoch(num_parameters: int, num_workers: int, local_steps: int, *,
                            steps_per_epoch: int = 1, bytes_per_value: int = 4) -> dict[str, float]:
    """What one worker sends per epoch when the models are averaged every H local steps by a
    ring all-reduce: rounds = steps_per_epoch / H, each sending 2 (K − 1)/K · P values."""
    rounds = steps_per_epoch / whole_number("local_steps", local_steps)
    k = whole_number("num_workers", num_workers)
    per_round = 2 * (k - 1) / k * num_parameters * bytes_per_value
    return {"rounds": rounds, "bytes": rounds * per_round}


def zero_communication(num_params: float, world_size: int, zero_stage: int) -> float:
    """Elements each of N ranks sends in one training step of a Ψ-parameter model (ring
    collectives): 2 (N − 1)/N · Ψ for data parallelism and ZeRO-1/2 (a reduce-scatter and an
    all-gather, or one all-reduce), 3 (N − 1)/N · Ψ for ZeRO-3, which all-gathers the weights
    again before the backward pass (Rajbhandari et al. 2020, section 7)."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    n = whole_number("world_size", world_size)
    return (3 if zero_stage == 3 else 2) * (n - 1) / n * num_params


def ring_allreduce_bytes(nbytes: float, world_size: int) -> float:
    """Bytes one rank sends in a ring all-reduce of n bytes over p ranks: 2 (p − 1)/p · n
    (the β term of :func:`ring_allreduce_time`)."""
    p = whole_number("world_size", world_size)
    return 2 * (p - 1) / p * nbytes
