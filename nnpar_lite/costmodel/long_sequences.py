"""What long sequences cost (chapter 10): a GPT block's activations, and the activations and
bytes per rank when N ranks share each sequence (Megatron sequence parallelism, ring
attention, Ulysses); the work of causal ring attention per rank."""

from __future__ import annotations

from ..util import whole_number


# s: sequence length, b: batch, h: hidden width (n_embd), a: heads, N: ranks sharing one
# sequence, v: bytes per value. Per rank and per transformer block (a "layer").
SEQUENCE_METHODS = ("megatron-sp", "ring", "ulysses")


def _sizes(seq_len, batch, hidden, heads, world_size) -> tuple[int, int, int, int, int]:
    return tuple(whole_number(name, value) for name, value in (
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
