"""Context parallelism: one sequence split among N ranks, its attention computed as if whole.

Every layer of a transformer but attention treats each position alone, so a rank that holds
s/N positions of every sequence computes them alone. Attention is the exception: each query
needs every key and value of the sequence (under the causal mask, every earlier one). Two
ways to give it them:

* **ring attention** (Li et al. 2021, "Sequence Parallelism", ACL 2023; Liu, Zaharia & Abbeel
  2023, "Ring Attention with Blockwise Transformers", ICLR 2024): the ranks pass their K/V
  blocks round a ring, N − 1 times; each rank attends its queries to each block as it passes,
  and merges the partial results by the online softmax (Milakov & Gimelshein 2018; FlashAttention,
  Dao et al., NeurIPS 2022). No rank ever holds the whole sequence's K and V, nor an s × s score
  matrix. In the backward pass the gradients dK, dV travel round with their blocks and arrive
  home after N steps.
* **Ulysses** (Jacobs et al. 2023, "DeepSpeed Ulysses"): one all-to-all turns the sequence
  split into a head split (each rank gets the whole sequence for H/N heads), attention runs as
  usual, and a second all-to-all turns the result back.

The layouts: rank r holds chunk r of N (``contiguous``), or chunks r and 2N − 1 − r of 2N
(``zigzag``, so that under the causal mask every rank has the same work; Llama 3's context
parallelism, Dubey et al. 2024, section 3.3.2). Within a rank the positions ascend.

Both functions take q, k, v of shape (batch, heads, local_seq, head_dim), the same local_seq
on every rank, and return this rank's output chunk; autograd differentiates both.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .collectives import all_to_all_along, pass_right, rank_and_size
from .gpt import lm_loss
from .util import whole_number

LAYOUTS = ("contiguous", "zigzag")


# ============================================================ layouts
def local_length(seq_len: int, world_size: int, layout: str = "contiguous") -> int:
    """s/N, the positions each rank holds; s must divide by N (by 2N for the zigzag's two chunks)."""
    whole_number("seq_len", seq_len)
    whole_number("world_size", world_size)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    pieces = world_size * (2 if layout == "zigzag" else 1)
    if seq_len % pieces:
        raise ValueError(f"a sequence of {seq_len} positions does not cut into {pieces} equal chunks "
                         f"({layout} layout over {world_size} ranks)")
    return seq_len // world_size


def chunk_positions(rank: int, world_size: int, seq_len: int, layout: str = "contiguous") -> torch.Tensor:
    """The global positions rank r holds, ascending.

    contiguous: [r·s/N, (r + 1)·s/N), chunk r of N;
    zigzag: chunks r and 2N − 1 − r of 2N chunks of s/2N (an early chunk and its mirror)."""
    local = local_length(seq_len, world_size, layout)
    if layout == "contiguous":
        return torch.arange(rank * local, (rank + 1) * local)
    half, mirror = local // 2, 2 * world_size - 1 - rank
    return torch.cat([torch.arange(rank * half, (rank + 1) * half), torch.arange(mirror * half, (mirror + 1) * half)])


def split_sequence(x: torch.Tensor, rank: int, world_size: int, *, layout: str = "contiguous",
                   dim: int = 2) -> torch.Tensor:
    """Rank r's part of a whole sequence ``x`` (the positions :func:`chunk_positions` names, along ``dim``)."""
    return x.index_select(dim, chunk_positions(rank, world_size, x.shape[dim], layout).to(x.device))


def join_sequence(parts: list[torch.Tensor], *, layout: str = "contiguous", dim: int = 2) -> torch.Tensor:
    """The whole sequence from every rank's part, rank 0's first: :func:`split_sequence` undone."""
    world, seq_len = len(parts), sum(p.shape[dim] for p in parts)
    order = torch.cat([chunk_positions(r, world, seq_len, layout) for r in range(world)])
    return torch.cat(parts, dim).index_select(dim, torch.argsort(order).to(parts[0].device))


# ============================================================ one block of keys
def scaled_scores(q: torch.Tensor, k: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
                  causal: bool) -> torch.Tensor:
    """S = Q Kᵀ / √d, and −∞ where the key comes after the query (k_pos > q_pos) under the causal mask."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(k_pos.to(q.device)[None, :] > q_pos.to(q.device)[:, None], float("-inf"))
    return scores


def block_attention(q, k, v, q_pos, k_pos, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of the queries to one block of keys, as a partial result (out, lse):

        out = softmax(S) V over this block only,   lse = log Σ_j exp(S_ij)   (one per query, keepdim)

    Two partial results over disjoint blocks merge into the result over both (:func:`merge_partial`)."""
    scores = scaled_scores(q, k, q_pos, k_pos, causal)
    lse = scores.logsumexp(-1, keepdim=True)
    return torch.exp(scores - lse) @ v, lse


def merge_partial(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor,
                  lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The online softmax: two partial results over disjoint sets of keys → the result over both.

        lse = log(e^lse_a + e^lse_b) = m + log(e^(lse_a − m) + e^(lse_b − m)),  m = max(lse_a, lse_b)
        out = e^(lse_a − lse) · out_a + e^(lse_b − lse) · out_b

    Each out_x is normalised over its own keys; e^(lse_x − lse) is the share of the total
    softmax mass those keys hold. Subtracting the maximum keeps every exponent ≤ 0, so nothing
    overflows however large the scores (FlashAttention, Dao et al. 2022; Milakov & Gimelshein 2018).
    A part with lse = −∞ (no key yet) adds nothing."""
    lse = torch.logaddexp(lse_a, lse_b)
    return torch.exp(lse_a - lse) * out_a + torch.exp(lse_b - lse) * out_b, lse


def block_gradients(q, k, v, grad_out, lse, delta, q_pos, k_pos, causal: bool):
    """dQ, dK, dV of one block of keys, from the final lse (no softmax kept from the forward pass):

        P = exp(S − lse),  dV = Pᵀ dO,  dS = P ∘ (dO Vᵀ − Δ),  Δ = rowsum(dO ∘ O),
        dQ = dS K / √d,  dK = dSᵀ Q / √d            (FlashAttention-2's backward, Dao 2023)"""
    p = torch.exp(scaled_scores(q, k, q_pos, k_pos, causal) - lse)
    ds = p * (grad_out @ v.transpose(-2, -1) - delta)
    scale = 1.0 / math.sqrt(q.shape[-1])
    return ds @ k * scale, ds.transpose(-2, -1) @ q * scale, p.transpose(-2, -1) @ grad_out


def active_rectangle(q_pos: torch.Tensor, k_pos: torch.Tensor, causal: bool) -> tuple[int, int]:
    """(first row, columns): the part of a block with a score to compute. Under the causal mask
    a query sees the keys at or before it, so only queries at or after the block's first key
    (a suffix, positions ascending) and keys at or before the last query (a prefix) take part:
    rows [first row, end), columns [0, columns). An empty rectangle: the block lies in the future."""
    if not causal:
        return 0, len(k_pos)
    return int((q_pos < k_pos[0]).sum()), int((k_pos <= q_pos[-1]).sum())


# ============================================================ ring attention
def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, group=None,
                   layout: str = "contiguous") -> torch.Tensor:
    """softmax(Q Kᵀ / √d (+ causal mask)) V for this rank's queries against the whole sequence's
    keys, which pass round the ring block by block (see the module's docstring). q, k, v:
    (batch, heads, local_seq, head_dim), rank r's part of the sequence in ``layout``."""
    _check_qkv(q, k, v, "ring_attention")
    _, world = rank_and_size(group)
    local_length(world * q.shape[2], world, layout)
    return _RingAttention.apply(q, k, v, bool(causal), layout, group)


def _block_plan(rank: int, world: int, local: int, step: int, causal: bool, layout: str):
    """At ``step`` rank r holds the K/V block of rank (r − step) mod N: its positions, this
    rank's query positions, and the rectangle of the block to compute."""
    q_pos = chunk_positions(rank, world, world * local, layout)
    k_pos = chunk_positions((rank - step) % world, world, world * local, layout)
    rows, cols = active_rectangle(q_pos, k_pos, causal)
    return q_pos[rows:], k_pos[:cols], rows, cols


def ring_schedule(seq_len: int, world_size: int, layout: str = "contiguous", causal: bool = True) -> list[list[dict]]:
    """The plan the ring follows, as plain lists: for each step, for each rank, the rank whose
    K/V block it holds (``source``) and the query and key positions of the rectangle it computes
    (empty where the whole block lies in the future). For figures and for counting the work."""
    local = local_length(seq_len, world_size, layout)
    return [[{"source": (rank - step) % world_size, "queries": q_pos.tolist(), "keys": k_pos.tolist()}
             for rank in range(world_size)
             for q_pos, k_pos, _, _ in [_block_plan(rank, world_size, local, step, causal, layout)]]
            for step in range(world_size)]


def ring_work(seq_len: int, world_size: int, layout: str = "contiguous", causal: bool = True) -> list[int]:
    """The scores each rank computes in :func:`ring_attention`, counted on the plan the ring
    itself follows (:func:`ring_schedule`: the rectangle of each block, step by step)."""
    schedule = ring_schedule(seq_len, world_size, layout, causal)
    return [sum(len(step[rank]["queries"]) * len(step[rank]["keys"]) for step in schedule)
            for rank in range(world_size)]


def _rotate(block: torch.Tensor, group) -> torch.Tensor:
    """Send ``block`` to the right neighbour, return the one from the left."""
    arriving = torch.empty_like(block)
    pass_right(block, arriving, group=group, phase="ring attention")
    return arriving


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, layout, group):
        rank, world = rank_and_size(group)
        b, h, t, d = q.shape       # out laid out (batch, seq, heads, dim), as torch's fused kernel lays it out:
        out = q.new_zeros(b, t, h, d).transpose(1, 2)   # joining the heads after is then a view, not a copy
        lse = torch.full_like(q[..., :1], float("-inf"))
        kv = torch.stack([k, v])                                    # one message per step
        for step in range(world):
            q_pos, k_pos, rows, cols = _block_plan(rank, world, q.shape[2], step, causal, layout)
            if len(q_pos) and len(k_pos):
                part = block_attention(q[:, :, rows:], kv[0, :, :, :cols], kv[1, :, :, :cols], q_pos, k_pos, causal)
                out[:, :, rows:], lse[:, :, rows:] = merge_partial(out[:, :, rows:], lse[:, :, rows:], *part)
            if step < world - 1:
                kv = _rotate(kv, group)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.layout, ctx.group = causal, layout, group
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        rank, world = rank_and_size(ctx.group)
        delta = (grad_out * out).sum(-1, keepdim=True)
        kv, dq = torch.stack([k, v]), torch.zeros_like(q)
        dkv = torch.zeros_like(kv)                                  # the gradients of the block in hand
        for step in range(world):
            q_pos, k_pos, rows, cols = _block_plan(rank, world, q.shape[2], step, ctx.causal, ctx.layout)
            if len(q_pos) and len(k_pos):
                dq_part, dk_part, dv_part = block_gradients(
                    q[:, :, rows:], kv[0, :, :, :cols], kv[1, :, :, :cols], grad_out[:, :, rows:],
                    lse[:, :, rows:], delta[:, :, rows:], q_pos, k_pos, ctx.causal)
                dq[:, :, rows:] += dq_part
                dkv[0, :, :, :cols] += dk_part
                dkv[1, :, :, :cols] += dv_part
            if step < world - 1:
                kv = _rotate(kv, ctx.group)
            if world > 1:
                dkv = _rotate(dkv, ctx.group)                       # after N passes, home with every rank's share
        return dq, dkv[0], dkv[1], None, None, None


# ============================================================ Ulysses
def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, group=None,
                      layout: str = "contiguous") -> torch.Tensor:
    """The same result by two all-to-alls (DeepSpeed Ulysses): q, k and v go from a sequence
    split (every head, s/N positions) to a head split (H/N heads, all s positions), attention
    runs on whole sequences, and the output goes back. The heads must divide among the ranks."""
    _check_qkv(q, k, v, "ulysses_attention")
    _, world = rank_and_size(group)
    if q.shape[1] % world:
        raise ValueError(f"ulysses_attention: {q.shape[1]} heads do not divide among {world} ranks; the all-to-all "
                         f"gives every rank whole heads (H/N of them). Use ring attention, or a head count that "
                         f"divides by {world}")
    seq_len = world * q.shape[2]
    local_length(seq_len, world, layout)
    qkv = all_to_all_along(torch.stack([q, k, v]), 2, 3, group=group)     # one all-to-all for all three
    if layout == "contiguous":
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=causal)
    else:                                   # the positions arrive rank by rank: put them in order, and back
        order = torch.cat([chunk_positions(r, world, seq_len, layout) for r in range(world)]).to(q.device)
        qkv = qkv.index_select(3, torch.argsort(order))
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=causal).index_select(2, order)
    return all_to_all_along(out, 2, 1, group=group)


# ============================================================ a GPT whose sequences are split
METHODS = {"ring": ring_attention, "ulysses": ulysses_attention}


def use_context_parallel(model: torch.nn.Module, *, method: str = "ring", group=None,
                         layout: str = "contiguous") -> torch.nn.Module:
    """Swap the attention core of every block of a :class:`nnpar_lite.gpt.GPT` (or of one
    :class:`~nnpar_lite.gpt.Block`) for causal ring or Ulysses attention over ``group``. The
    weights stay whole on every rank: only the sequence is split."""
    if method not in METHODS or layout not in LAYOUTS:
        raise ValueError(f"method must be one of {sorted(METHODS)} and layout one of {LAYOUTS}, got {method!r} "
                         f"and {layout!r}")
    attend = METHODS[method]
    for module in model.modules():
        if hasattr(module, "core") and hasattr(module, "c_attn"):
            module.core = functools.partial(attend, causal=True, group=group, layout=layout)
    return model


def context_parallel_loss(model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor, *, group=None,
                          layout: str = "contiguous") -> torch.Tensor:
    """This rank's language-model loss: its part of every sequence (dim 1), at its positions,
    averaged over its tokens. Every rank holds as many tokens, so the mean of the ranks' losses
    is the whole batch's loss, and the mean of their gradients its gradient."""
    rank, world = rank_and_size(group)
    positions = chunk_positions(rank, world, idx.shape[1], layout).to(idx.device)
    logits = model(split_sequence(idx, rank, world, layout=layout, dim=1), positions)
    return lm_loss(logits, split_sequence(targets, rank, world, layout=layout, dim=1))


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, name: str) -> None:
    for label, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"{name}: {label} must be a 4-D tensor (batch, heads, local_seq, head_dim), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not q.shape == k.shape == v.shape or not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"{name}: q, k and v must have one shape and dtype, got {tuple(q.shape)} {q.dtype}, "
                         f"{tuple(k.shape)} {k.dtype}, {tuple(v.shape)} {v.dtype}")
