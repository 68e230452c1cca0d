"""What one rank of chapter 12's dp × tp × pp mesh holds and sends, exactly, and how long its
step takes to first order."""

from __future__ import annotations

from typing import Sequence

from ..util import whole_number


# Exact counts for chapter 12's tiny GPT (nnpar_lite.gpt), one rank of the mesh: what it holds
# and what it sends per training step, in float32 (4 bytes a value). The whole-model
# calculator (memory.training_memory) spreads everything evenly over t · p ranks; these say
# which rank holds what (embeddings on the first stage, the head on the last, LayerNorms
# and row-parallel biases replicated on every tp rank).


def gpt_rank_tensors(vocab_size: int, block_size: int, n_layer: int, n_embd: int, *, tp: int = 1, pp: int = 1,
                     stage: int = 0, tied: bool = True) -> dict[str, int]:
    """{parameter name: elements} of one rank of the mesh: stage ``stage`` of ``pp``, every
    block's matrices split over ``tp`` ranks (Megatron: q/k/v and c_fc by output rows,
    both c_proj by input columns, their biases whole; LayerNorms whole). Stage 0 holds wte
    and wpe, the last stage ln_f and lm_head (a copy of wte when tied and pp > 1)."""
    h, t, p = n_embd, whole_number("tp", tp), whole_number("pp", pp)
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
    size = -(-numel // whole_number("world_size", world_size))
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
    b, s, h, t = batch, seq, n_embd, whole_number("tp", tp)
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
    n, p, m = (whole_number(name, v) for name, v in
               (("world_size", world_size), ("num_stages", num_stages), ("num_microbatches", num_microbatches)))
    running = min(n, whole_number("cores", cores)) if cores is not None else n
    return compute_one / running * (m + p - 1) / m + alpha * message_steps + beta * bytes_sent
