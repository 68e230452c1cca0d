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


# ------------------------------------------------------------- long sequences (chapter 10)
# s: sequence length, b: batch, h: hidden width (n_embd), a: heads, N: ranks sharing one
# sequence, v: bytes per value. Per rank and per transformer block (a "layer").
SEQUENCE_METHODS = ("megatron-sp", "ring", "ulysses")


def _sizes(seq_len, batch, hidden, heads, world_size) -> tuple[int, int, int, int, int]:
    return tuple(_positive_int(name, value) for name, value in (
        ("seq_len", seq_len), ("batch", batch), ("hidden", hidden), ("heads", heads), ("world_size", world_size)))


def gpt_block_activations(seq_len: int, batch: int, hidden: int, heads: int, *, bytes_per_value: int = 4,
                          fused_attention: bool = True) -> float:
    """Bytes one block of the workbook's GPT (:mod:`nnpar_lite.gpt`) keeps for its backward pass:

        v · b · s · (16 h + a + 4)                      with a fused attention kernel
        + v · a · s² · b                                without it (the softmax's s × s per head)

    16 h: the block's input and ln_1's output (2 h), q, k, v (3 h), attention's output (h; joining
    the heads is a view of it), the residual sum and ln_2's output (2 h), the MLP's 4h-wide
    input and output of GELU (8 h); a: one log-sum-exp per head and position; 4: each LayerNorm's
    mean and 1/σ. (Korthikanti et al. 2022 count s b h (34 + 5 a s / h) bytes for GPT-3's layer
    in 16-bit with dropout; the s² term is what fused kernels and ring attention never store.)"""
    s, b, h, a, _ = _sizes(seq_len, batch, hidden, heads, 1)
    return bytes_per_value * (b * s * (16 * h + a + 4) + (0 if fused_attention else a * s * s * b))


def sequence_parallel_activations(seq_len: int, batch: int, hidden: int, heads: int, world_size: int,
                                  method: str, *, bytes_per_value: int = 4) -> float:
    """Bytes per rank a block keeps when N ranks share each sequence (fused attention):

        ring         v b s (16 h + a + 4) / N     every tensor holds s/N positions
        ulysses      v b s (17 h + a + 4) / N     attention's output exists twice: head-split, for its
                                                  backward, and sequence-split after the all-to-all
        megatron-sp  v b s (16 h + a + 4) / N     the column-parallel layers keep their chunk of the
                                                  input and all-gather it again in backward (Korthikanti
                                                  et al. 2022, 4.2.2), as :func:`training_memory` books"""
    s, b, h, a, n = _sizes(seq_len, batch, hidden, heads, world_size)
    per_position = {"ring": 16 * h + a + 4, "ulysses": 17 * h + a + 4, "megatron-sp": 16 * h + a + 4}.get(method)
    if per_position is None:
        raise ValueError(f"method must be one of {SEQUENCE_METHODS}, got {method!r}")
    return bytes_per_value * b * s * per_position / n


def sequence_parallel_bytes(seq_len: int, batch: int, hidden: int, world_size: int, method: str, *,
                            bytes_per_value: int = 4) -> dict[str, float]:
    """Bytes one rank sends per block, forward and backward, when N ranks share each sequence:

        ring         forward: K and V blocks pass N − 1 times            2 (N − 1) · v b s h / N
                     backward: K, V again N − 1 times, dK, dV N times    (2 (N − 1) + 2 N) · v b s h / N
        ulysses      forward: q, k, v to the head split, the output      4 (N − 1)/N · v b s h / N
                     back: four tensors of the rank's s/N positions
                     cross an all-to-all, (N − 1)/N of each sent;
                     backward: the same, reversed                        4 (N − 1)/N · v b s h / N
        megatron-sp  forward: 2 all-gathers and 2 reduce-scatters        4 (N − 1)/N · v b s h
                     of the block's b s h activations;
                     backward: each one's reverse, and the 2 inputs
                     gathered again                                      6 (N − 1)/N · v b s h

    (Liu et al. 2023; Jacobs et al. 2023, section 3.2; Korthikanti et al. 2022, section 4.2.2.)"""
    s, b, h, _, n = _sizes(seq_len, batch, hidden, 1, world_size)
    whole = bytes_per_value * b * s * h
    passes = {"ring": (2 * (n - 1) / n, (2 * (n - 1) + 2 * n * (n > 1)) / n),
              "ulysses": (4 * (n - 1) / n / n, 4 * (n - 1) / n / n),
              "megatron-sp": (4 * (n - 1) / n, 6 * (n - 1) / n)}
    if method not in passes:
        raise ValueError(f"method must be one of {SEQUENCE_METHODS}, got {method!r}")
    forward, backward = (whole * share for share in passes[method])
    return {"forward": forward, "backward": backward, "total": forward + backward}


def causal_ring_work(seq_len: int, world_size: int, layout: str = "contiguous") -> list[float]:
    """Attention scores each rank computes in causal ring attention, skipping the parts of a
    block that lie wholly in the future, with c = s / N positions per rank:

        contiguous   rank r: (r + 1) · c²       the last rank works N times as much as the first
        zigzag       every rank: (N + 1)/2 · c²  its diagonal block whole, half of each other one"""
    s, _, _, _, n = _sizes(seq_len, 1, 1, 1, world_size)
    c = s / n
    if layout == "contiguous":
        return [(r + 1) * c * c for r in range(n)]
    if layout == "zigzag":
        return [(n + 1) / 2 * c * c for _ in range(n)]
    raise ValueError(f"layout must be 'contiguous' or 'zigzag', got {layout!r}")


# ------------------------------------------------- mixture of experts (chapter 11)
# A layer of E experts, each a two-layer MLP d → h → d, behind a gate (a d × E matrix); each
# token goes to k of the experts. Fedus et al. (Switch Transformer, JMLR 2022) and Lepikhin
# et al. (GShard, ICLR 2021) for capacity; expert parallelism puts E/N experts on each of N ranks.
def expert_capacity(tokens: int, top_k: int, num_experts: int, capacity_factor: float) -> int:
    """C = ⌈capacity_factor · T · k / E⌉: the most tokens one expert takes from a batch of T
    tokens (Switch Transformer, eq. 3, with k choices per token). The product is rounded to 9
    decimals before the ceiling, so that 1.1 · 1000 · 2 / 8 gives 275, not 276."""
    t, k = _positive_int("tokens", tokens, minimum=0), _positive_int("top_k", top_k)
    e = _positive_int("num_experts", num_experts)
    if isinstance(capacity_factor, bool) or not isinstance(capacity_factor, (int, float)) or not capacity_factor > 0 \
            or capacity_factor == float("inf"):
        raise ValueError(f"capacity_factor must be a finite number > 0, got {capacity_factor!r}")
    import math
    return math.ceil(round(capacity_factor * t * k / e, 9))


def moe_parameters(d_model: int, d_hidden: int, num_experts: int) -> int:
    """Weights of a MoE layer: the gate's d·E, and E experts of 2·d·h + h + d (two matrices,
    two biases). E times one MLP's, plus the gate."""
    d, h, e = (_positive_int(n, v) for n, v in (("d_model", d_model), ("d_hidden", d_hidden), ("num_experts", num_experts)))
    return d * e + e * (2 * d * h + h + d)


def moe_active_parameters(d_model: int, d_hidden: int, num_experts: int, top_k: int) -> int:
    """Weights one token multiplies by: the whole gate (d·E) and k of the E experts. The
    compute per token, about 2 operations per weight, follows k, not E."""
    d, h, e = (_positive_int(n, v) for n, v in (("d_model", d_model), ("d_hidden", d_hidden), ("num_experts", num_experts)))
    if not 1 <= _positive_int("top_k", top_k) <= e:
        raise ValueError(f"top_k must be between 1 and num_experts = {e}, got {top_k}")
    return d * e + top_k * (2 * d * h + h + d)


def expert_all_to_all_bytes(tokens: int, top_k: int, d_model: int, world_size: int,
                            bytes_per_element: int = 4) -> float:
    """Bytes one rank sends in one all-to-all of expert parallelism when the routing is
    balanced and nothing is dropped: each of its T tokens goes to k experts, a fraction
    (N − 1)/N of them on other ranks, d numbers each:

        T · k · (N − 1)/N · d · bytes

    The dispatch sends this, the combine sends as much back; backward repeats both."""
    t, k = _positive_int("tokens", tokens, minimum=0), _positive_int("top_k", top_k)
    d, n = _positive_int("d_model", d_model), _positive_int("world_size", world_size)
    return t * k * (n - 1) / n * d * _positive_int("bytes_per_element", bytes_per_element)


# The memory calculator's choices: the model sizes (billions of parameters) and device counts
# its sliders offer, and the ways of splitting it compares. Chapter 07's widget draws them;
# the exercises that ask what the widget shows read them here.
MODEL_BILLIONS = (0.1, 0.3, 1, 3, 7, 13, 30, 70, 175, 405, 1000)
DEVICE_COUNTS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)


def memory_layouts(devices: int, *, activations: bool = False) -> dict[str, dict]:
    """The ways of splitting a model over ``devices`` devices that the memory figure compares,
    as keyword arguments of :func:`training_memory`."""
    layouts = {
        "1 device": dict(),
        f"data ×{devices}": dict(data_parallel=devices),
        f"ZeRO-1 ×{devices}": dict(data_parallel=devices, zero_stage=1),
        f"ZeRO-2 ×{devices}": dict(data_parallel=devices, zero_stage=2),
        f"ZeRO-3 ×{devices}": dict(data_parallel=devices, zero_stage=3),
        f"tensor ×{devices}": dict(tensor_parallel=devices),
    }
    if activations:
        layouts[f"tensor ×{devices}, sequence parallel"] = dict(tensor_parallel=devices, sequence_parallel=True)
    if devices >= 4:
        layouts[f"tensor ×2, pipeline ×2, ZeRO-1 ×{devices // 4}"] = dict(
            tensor_parallel=2, pipeline_parallel=2, data_parallel=devices // 4, zero_stage=1)
    return layouts


def memory_by_layout(num_params: float, devices: int, precision: str = "fp32",
                     activation_bytes: float = 0.0) -> dict[str, dict]:
    """:func:`training_memory` with Adam under each of :func:`memory_layouts`: the bars of the
    memory figure, by their labels."""
    return {name: training_memory(num_params, precision=precision, optimizer="adam",
                                  activation_bytes=activation_bytes, **kw)
            for name, kw in memory_layouts(devices, activations=activation_bytes > 0).items()}


def zero_communication(num_params: float, world_size: int, zero_stage: int) -> float:
    """Elements each of N ranks sends in one training step of a Ψ-parameter model (ring
    collectives): 2 (N − 1)/N · Ψ for data parallelism and ZeRO-1/2 (a reduce-scatter and an
    all-gather, or one all-reduce), 3 (N − 1)/N · Ψ for ZeRO-3, which all-gathers the weights
    again before the backward pass (Rajbhandari et al. 2020, section 7)."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    n = _positive_int("world_size", world_size)
    return (3 if zero_stage == 3 else 2) * (n - 1) / n * num_params


# ------------------------------------------- the capstone: a GPT on a dp × tp × pp mesh
# Exact counts for chapter 12's tiny GPT (nnpar_lite.gpt), one rank of the mesh: what it holds
# and what it sends per training step, in float32 (4 bytes a value). The whole-model
# calculator above (training_memory) spreads everything evenly over t · p ranks; these say
# which rank holds what (embeddings on the first stage, the head on the last, LayerNorms
# and row-parallel biases replicated on every tp rank).
def ring_allreduce_bytes(nbytes: float, world_size: int) -> float:
    """Bytes one rank sends in a ring all-reduce of n bytes over p ranks: 2 (p − 1)/p · n
    (the β term of :func:`ring_allreduce_time`)."""
    p = _positive_int("world_size", world_size)
    return 2 * (p - 1) / p * nbytes


def gpt_rank_tensors(vocab_size: int, block_size: int, n_layer: int, n_embd: int, *, tp: int = 1, pp: int = 1,
                     stage: int = 0, tied: bool = True) -> dict[str, int]:
    """{parameter name: elements} of one rank of the mesh: stage ``stage`` of ``pp``, every
    block's matrices split over ``tp`` ranks (Megatron: q/k/v and c_fc by output rows,
    both c_proj by input columns, their biases whole; LayerNorms whole). Stage 0 holds wte
    and wpe, the last stage ln_f and lm_head (a copy of wte when tied and pp > 1)."""
    h, t, p = n_embd, _positive_int("tp", tp), _positive_int("pp", pp)
    if n_layer % p or h % t or not 0 <= stage < p:
        raise ValueError(f"need n_layer = {n_layer} divisible by pp = {p}, n_embd = {h} by tp = {t}, "
                         f"and stage in 0 … {p - 1}, got stage {stage}")
    tensors = {"wte.weight": vocab_size * h, "wpe.weight": block_size * h} if stage == 0 else {}
    for i in range(stage * n_layer // p, (stage + 1) * n_layer // p):
        block = {"ln_1.weight": h, "ln_1.bias": h, "attn.c_attn.weight": 3 * h * h // t, "attn.c_attn.bias": 3 * h // t,
                 "attn.c_proj.weight": h * h // t, "attn.c_proj.bias": h, "ln_2.weight": h, "ln_2.bias": h,
                 "mlp.c_fc.weight": 4 * h * h // t, "mlp.c_fc.bias": 4 * h // t, "mlp.c_proj.weight": 4 * h * h // t,
                 "mlp.c_proj.bias": h}
        tensors.update({f"blocks.{i}.{name}": n for name, n in block.items()})
    if stage == p - 1:
        tensors.update({"ln_f.weight": h, "ln_f.bias": h})
        if not tied or p > 1:
            tensors["lm_head.weight"] = vocab_size * h
    return tensors


def zero_chunk_elements(numel: int, rank: int, world_size: int) -> int:
    """Elements of a tensor of n elements that rank r of N keeps under ZeRO: chunk r of
    S = ⌈n / N⌉, clipped to the tensor, min(S, max(0, n − r·S))."""
    size = -(-numel // _positive_int("world_size", world_size))
    return min(size, max(0, numel - rank * size))


def adam_state_bytes(numels: Sequence[int], bytes_per_value: int = 4) -> int:
    """Adam's or AdamW's state for tensors of these sizes: two moments per element and one
    4-byte step counter per (non-empty) tensor."""
    return sum(2 * n * bytes_per_value + 4 for n in numels if n)


def gpt_block_activation_values(batch: int, seq: int, n_embd: int, n_head: int, tp: int = 1) -> int:
    """Values one GPT block saves for its backward pass, one micro-batch of b sequences of
    length s, width h, a heads, on one of t tensor-parallel ranks:

        4 b s h  +  4 b s  +  12 b s h / t  +  a b s / t

    whole on every rank: the inputs and outputs of the two LayerNorms (4 b s h) and their
    means and reciprocal standard deviations (4 b s); split by t: q, k and v (3), the
    attention's output (1), the MLP's 4h-wide input to GELU (4) and its output (4), and the
    attention kernel's log-sum-exp per head and position (a b s / t). With t = 1 it is
    chapter 10's :func:`gpt_block_activations` in values: b s (16 h + a + 4)."""
    b, s, h, t = batch, seq, n_embd, _positive_int("tp", tp)
    return 4 * b * s * h + 4 * b * s + 12 * b * s * h // t + n_head * b * s // t


def gpt_head_activation_values(batch: int, seq: int, n_embd: int, vocab_size: int) -> int:
    """Values the last stage's head saves for backward: ln_f's input, output, mean and
    reciprocal standard deviation (2 b s h + 2 b s), the log-softmax of the logits (b s V),
    and the loss's one total weight."""
    return 2 * batch * seq * n_embd + 2 * batch * seq + batch * seq * vocab_size + 1


def mesh_step_time(compute_one: float, *, world_size: int, num_stages: int, num_microbatches: int,
                   message_steps: float, bytes_sent: float, alpha: float, beta: float,
                   cores: int | None = None) -> float:
    """One training step on a dp × tp × pp mesh, to first order, for the rank that waits longest:

        t = c₁ / min(N, cores) · (m + p − 1) / m  +  α · k  +  β · n

    c₁ is one process's step on the whole batch: N ranks share its work, but no more than
    ``cores`` run at once on one machine; the pipeline stretches each stage's share over
    m + p − 1 slots instead of m (the bubble, :func:`bubble_fraction`). k counts the rank's
    message steps (a ring all-reduce over q ranks takes 2 (q − 1), a send one) and n its bytes
    sent (:func:`ring_allreduce_time`'s α and β). Nothing overlaps: an upper estimate."""
    n, p, m = (_positive_int(name, v) for name, v in
               (("world_size", world_size), ("num_stages", num_stages), ("num_microbatches", num_microbatches)))
    running = min(n, _positive_int("cores", cores)) if cores is not None else n
    return compute_one / running * (m + p - 1) / m + alpha * message_steps + beta * bytes_sent
