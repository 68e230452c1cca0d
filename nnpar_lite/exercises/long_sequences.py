"""Chapter 10's exercises: long sequences, context parallelism (ring attention, Ulysses) and
Megatron's sequence parallelism."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import costmodel
from ..context_parallel import block_attention, merge_partial, split_sequence
from .core import Case, Exercise, check_number, check_on_ranks, register, report, run_cases

ULYSSES = dict(seq_len=65_536, batch=1, hidden=4096, world_size=8, bytes_per_value=2)
ZIGZAG = dict(seq_len=4096, world_size=8)


def ulysses_megabytes(seq_len, batch, hidden, world_size, bytes_per_value) -> float:
    """What each rank sends per block under Ulysses, forward and backward, in MB (10⁶ bytes)."""
    return costmodel.sequence_parallel_bytes(seq_len, batch, hidden, world_size, "ulysses",
                                             bytes_per_value=bytes_per_value)["total"] / 1e6


def _ulysses_wrong_answers() -> dict[float, tuple[str, str]]:
    right = ulysses_megabytes(**ULYSSES)
    return {right / 2: ("That is the forward pass only: the backward pass runs the all-to-alls again, reversed.",
                        "这只是前向传播：反向传播会把这些全对全（all-to-all）反向再做一遍。"),
            right * ULYSSES["world_size"]: (
                "Each rank holds s/N positions: an all-to-all sends (N − 1)/N of *that*, not of the whole sequence.",
                "每个 rank 只持有 s/N 个位置：一次全对全发送的是这部分的 (N − 1)/N，而不是整条序列的。")}


register(Exercise(
    "10.1",
    lambda answer: check_number(answer, ulysses_megabytes(**ULYSSES), rel=1e-3, known=_ulysses_wrong_answers(), hint=(
        "Four tensors of the rank's b · (s/N) · h values cross an all-to-all forward (q, k and v to the head split, "
        "the output back) and four backward; of each, (N − 1)/N leaves the rank, 2 bytes a value.",
        "前向有四个张量（q、k、v 换到注意力头切分，输出再换回来）经过全对全，反向也有四个；每个张量有该 rank 的 "
        "b · (s/N) · h 个值，其中 (N − 1)/N 要发出去，每个值 2 字节。")),
    solution=round(ulysses_megabytes(**ULYSSES), 3),
    explanation=("8 · (N − 1)/N² · b s h · 2 bytes = 8 · 7/64 · 65,536 · 4,096 · 2 ≈ 469.8 MB. Ring attention sends "
                 "(6N − 4)/N · b s h · 2 ≈ 2,952.8 MB for the same block: six times as much, and Ulysses's share "
                 "keeps falling as N grows, while the ring's does not.",
                 "8 · (N − 1)/N² · b s h · 2 字节 = 8 · 7/64 · 65,536 · 4,096 · 2 ≈ 469.8 MB。同一个块用环形注意力要发送 "
                 "(6N − 4)/N · b s h · 2 ≈ 2,952.8 MB，约为六倍；而且 N 越大，Ulysses 的份额越小，环形注意力的却不会。")))


register(Exercise(
    "10.2",
    lambda answer: check_number(answer, costmodel.causal_ring_work(ZIGZAG["seq_len"], ZIGZAG["world_size"], "zigzag")[0],
                                known={
        costmodel.causal_ring_work(4096, 8, "contiguous")[-1]: (
            "That is the last rank of the contiguous split, the busiest one; the zigzag split evens the work out.",
            "这是连续切分中最后一个 rank 的工作量，也是最忙的；之字形切分会把工作量拉平。"),
        4096 ** 2 / 2 / 8: (
            "Close, but the ring computes each rank's diagonal block whole (c² scores, half of them masked).",
            "很接近，但环形注意力把每个 rank 的对角块整块算完（c² 个分数，其中一半被掩码）。")},
                                hint=("Each rank holds c = s/N positions: its own block on the diagonal (c² scores), and "
                                      "half of each of the N − 1 other blocks.",
                                      "每个 rank 持有 c = s/N 个位置：对角线上自己的块（c² 个分数），加上其余 N − 1 个块各一半。")),
    solution=costmodel.causal_ring_work(4096, 8, "zigzag")[0],
    explanation=("c = 4096/8 = 512; c² + (N − 1) · c²/2 = (N + 1)/2 · c² = 4.5 · 262,144 = 1,179,648 scores on every "
                 "rank. The contiguous split gives rank r (r + 1) · c²: 262,144 on rank 0 and 2,097,152 on rank 7.",
                 "c = 4096/8 = 512；c² + (N − 1) · c²/2 = (N + 1)/2 · c² = 4.5 · 262,144 = 1,179,648，每个 rank 都一样。"
                 "连续切分时 rank r 要算 (r + 1) · c²：rank 0 为 262,144，rank 7 为 2,097,152。")))


# ------------------------------------------------------------------ the online-softmax merge
def _partial_results(sizes: tuple[int, int], scale: float, seed: int, empty_first: bool = False) -> tuple:
    """Two partial results (out, lse) of the same queries over two blocks of keys of the given sizes."""
    g = torch.Generator().manual_seed(seed)
    q = scale * torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 3, sum(sizes), 5, generator=g, dtype=torch.float64) for _ in range(2))
    a, b = (block_attention(q, k[:, :, part], v[:, :, part], None, None, causal=False)
            for part in (slice(0, sizes[0]), slice(sizes[0], None)))
    if empty_first:
        a = (torch.zeros_like(a[0]), torch.full_like(a[1], float("-inf")))
    return (*a, *b)


MERGE_CASES = [Case("blocks of 3 and 4 keys", _partial_results((3, 4), 1.0, 0)),
               Case("blocks of 1 and 6 keys", _partial_results((1, 6), 1.0, 1)),
               Case("scores near ±1000 (e^1000 overflows)", _partial_results((4, 2), 400.0, 2)),
               Case("the first part still empty (lse = −∞)", _partial_results((2, 5), 1.0, 3, empty_first=True))]


def _same_pair(got, expected) -> bool:
    try:
        out, lse = got
        return (out.shape == expected[0].shape and lse.shape == expected[1].shape
                and bool(torch.allclose(out, expected[0], atol=1e-10)) and bool(torch.allclose(lse, expected[1], atol=1e-8)))
    except (TypeError, ValueError, AttributeError, RuntimeError):
        return False


def check_merge(fn) -> bool:
    """Your ``fn(out_a, lse_a, out_b, lse_b)`` must return (out, lse) over both blocks, checked
    against :func:`~nnpar_lite.context_parallel.merge_partial` on blocks you do not see."""
    return report(run_cases(fn, merge_partial, MERGE_CASES), same=_same_pair, hint=(
        "lse = log(e^lse_a + e^lse_b), computed as m + log(e^(lse_a − m) + e^(lse_b − m)) with m = max(lse_a, lse_b) "
        "(torch.logaddexp does it); out = e^(lse_a − lse) · out_a + e^(lse_b − lse) · out_b. Return both.",
        "lse = log(e^lse_a + e^lse_b)，按 m + log(e^(lse_a − m) + e^(lse_b − m)) 计算，m = max(lse_a, lse_b)"
        "（torch.logaddexp 就是这样做的）；out = e^(lse_a − lse) · out_a + e^(lse_b − lse) · out_b。两者都要返回。"))


register(Exercise("10.3", check_merge, solution=merge_partial, explanation=(
    "Each partial out is normalised over its own keys; e^(lse_x − lse) is the share of the softmax's mass its keys "
    "hold, so the weighted sum is the softmax over both. Computing in logs, after subtracting the larger lse, keeps "
    "every exponent ≤ 0.",
    "每个部分结果 out 只在自己的键上归一化；e^(lse_x − lse) 是这些键在整个 softmax 中所占的份额，所以加权和就是在两块上的 "
    "softmax。在对数域里先减去较大的 lse，所有指数都 ≤ 0，不会溢出。")))


# ------------------------------------------------------------------ the ring, on real processes
def ring_attention_forward(q, k, v):
    """Non-causal ring attention, forward only: attend to the K/V block in hand, merge, pass it on."""
    from nnpar_lite.collectives import pass_right
    from nnpar_lite.context_parallel import block_attention, merge_partial

    world = dist.get_world_size()
    out, lse = torch.zeros_like(q), torch.full_like(q[..., :1], float("-inf"))
    for step in range(world):
        out, lse = merge_partial(out, lse, *block_attention(q, k, v, None, None, causal=False))
        if step < world - 1:
            arriving_k, arriving_v = torch.empty_like(k), torch.empty_like(v)
            pass_right(k, arriving_k)
            pass_right(v, arriving_v)
            k, v = arriving_k, arriving_v
    return out


def ring_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """This rank's chunk of full attention (torch's fused kernel on the whole sequence) and what
    the learner's ``fn`` returns for this rank's chunks of q, k and v."""
    batch, heads, local, dim, seed = case.args
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, world_size * local, dim, generator=g, dtype=torch.float64) for _ in range(3))
    expected = split_sequence(F.scaled_dot_product_attention(q, k, v), rank, world_size)
    mine = [split_sequence(x, rank, world_size) for x in (q, k, v)]
    return expected, fn(*mine)


def _same_tensor(got, expected) -> bool:
    return isinstance(got, torch.Tensor) and got.shape == expected.shape and bool(torch.allclose(got, expected, atol=1e-10))


def check_ring_forward(fn) -> bool:
    """Your ``fn(q, k, v)``, run on every rank with this rank's chunk of the sequence, must return
    this rank's chunk of full (non-causal) attention: on 1 process and on 3."""
    cases = {1: [Case("1 head, 4 positions", (1, 1, 4, 3, 0))],
             3: [Case("2 heads, 3 positions per rank", (2, 2, 3, 4, 1)), Case("3 heads, 1 position per rank", (1, 3, 1, 5, 2))]}
    return check_on_ranks(fn, f"{__name__}:ring_driver", cases, same=_same_tensor, hint=(
        "N steps: attend to the K/V block in hand (block_attention), merge it into (out, lse) (merge_partial), then "
        "pass K and V to the right with pass_right and keep what arrives from the left. Start from out = 0, lse = −∞.",
        "共 N 步：对手中的 K/V 块做注意力（block_attention），并入 (out, lse)（merge_partial），再用 pass_right 把 K 和 V "
        "传给右边的邻居，换成从左边到来的块。初值 out = 0，lse = −∞。"), timeout=60)


register(Exercise("10.4", check_ring_forward, solution=ring_attention_forward, explanation=(
    "After N − 1 passes every rank has met every K/V block once, and the online softmax has merged them into the "
    "exact result. No rank ever held more than one block of K and V besides its own queries: memory s/N per rank.",
    "经过 N − 1 次传递，每个 rank 都恰好遇到每个 K/V 块一次，在线 softmax 把它们合并成精确结果。除了自己的查询，"
    "任何 rank 同时持有的 K、V 都不超过一块：每个 rank 的内存为 s/N。")))
