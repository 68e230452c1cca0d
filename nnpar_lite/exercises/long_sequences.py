"""Chapter 10's exercises: long sequences, context parallelism (ring attention, Ulysses) and
Megatron's sequence parallelism.

10.1 what Ulysses sends · 10.2 the zigzag's work · 10.3 the online-softmax merge · 10.4 ring
attention's forward pass, run on real ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import costmodel
from ..context_parallel import block_attention, merge_partial, split_sequence
from .core import Case, Exercise, Probe, number_exercise, register, report, run_cases, same_values
from .own_work import written_without
from .ranks import check_on_ranks


# ------------------------------------------------------------------ 10.1: what Ulysses sends
def sent_megabytes(seq_len, batch, hidden, world_size, bytes_per_value, method="ulysses", part="total") -> float:
    """MB (10⁶ bytes) one rank sends per block when N ranks share each sequence, forward and
    backward together (``part="forward"``: the forward pass alone): costmodel.sequence_parallel_bytes."""
    sent = costmodel.sequence_parallel_bytes(seq_len, batch, hidden, world_size, method,
                                             bytes_per_value=bytes_per_value)
    return sent[part] / 1e6


number_exercise(
    "10.1", stated={"seq_len": 65_536, "batch": 1, "hidden": 4096, "world_size": 8, "bytes_per_value": 2},
    answer=sent_megabytes, rel=1e-3,
    wrong=[(lambda **stated: sent_megabytes(**stated, part="forward"),
            ("That is the forward pass only: the backward pass runs the all-to-alls again, reversed.",
             "这只是前向传播：反向传播会把这些全对全（all-to-all）反向再做一遍。")),
           (lambda seq_len, world_size, **rest: sent_megabytes(seq_len * world_size, world_size=world_size, **rest),
            ("Each rank holds s/N positions: an all-to-all sends (N − 1)/N of *that*, not of the whole sequence.",
             "每个 rank 只持有 s/N 个位置：一次全对全发送的是这部分的 (N − 1)/N，而不是整条序列的。")),
           (lambda world_size, **rest: sent_megabytes(world_size=world_size, **rest) * world_size / (world_size - 1),
            ("An all-to-all keeps 1/N of each tensor on its own rank: only (N − 1)/N of it is sent.",
             "一次全对全会把每个张量的 1/N 留在本 rank：只有 (N − 1)/N 被发送出去。")),
           (lambda **stated: sent_megabytes(**stated, method="ring"),
            ("That is what ring attention sends for this block, K and V passed round the ring; Ulysses sends far "
             "less.", "这是环形注意力对这个块发送的量（K 和 V 沿环传递）；Ulysses 发送的要少得多。")),
           (lambda **stated: sent_megabytes(**stated, method="megatron-sp"),
            ("That is Megatron's sequence parallelism, which gathers and scatters the whole block's activations.",
             "这是 Megatron 序列并行的发送量，它对整个块的激活值做全收集和归约散射。")),
           (lambda **stated: sent_megabytes(**stated) * 1e6 / 2 ** 20,
            ("That is in MiB (2²⁰ bytes); the question asks for MB, 10⁶ bytes.",
             "这是以 MiB（2²⁰ 字节）为单位的；题目问的是 MB，即 10⁶ 字节。"))],
    hint=("Ulysses swaps the sequence split for a head split and back: count the tensors that cross an all-to-all "
          "in the forward pass and in the backward pass, how many values of each this rank holds, and what share of "
          "them leaves the rank.",
          "Ulysses 先把序列切分换成注意力头切分，再换回来：数一数前向和反向中各有几个张量经过全对全，本 rank 持有每个"
          "张量的多少个值，其中又有多大比例要发出去。"),
    explanation=("Four tensors of the rank's b · (s/N) · h values cross an all-to-all forward (q, k and v to the head "
                 "split, the output back) and four backward, (N − 1)/N of each leaving the rank: 8 · (N − 1)/N² · "
                 "b s h · {bytes_per_value} bytes with s = {seq_len}, h = {hidden}, N = {world_size}, b = {batch}: "
                 "{answer} MB. Ring attention sends (6N − 4)/N · b s h values for the same block, more than six "
                 "times as much, and Ulysses's share keeps falling as N grows, while the ring's does not.",
                 "前向有四个张量（q、k、v 换到注意力头切分，输出再换回来）经过全对全，反向也有四个，每个张量有该 rank 的 "
                 "b · (s/N) · h 个值，其中 (N − 1)/N 要发出去：8 · (N − 1)/N² · b s h · {bytes_per_value} 字节，"
                 "s = {seq_len}，h = {hidden}，N = {world_size}，b = {batch}，即 {answer} MB。同一个块用环形注意力要发送 "
                 "(6N − 4)/N · b s h 个值，是它的六倍多；而且 N 越大，Ulysses 的份额越小，环形注意力的却不会。"))


# ------------------------------------------------------------------ 10.2: the zigzag's work
def scores_on_rank(seq_len, world_size, layout="zigzag", rank=0) -> float:
    """Attention scores rank ``rank`` computes in causal ring attention: costmodel.causal_ring_work."""
    return costmodel.causal_ring_work(seq_len, world_size, layout)[rank]


number_exercise(
    "10.2", stated={"seq_len": 4096, "world_size": 8}, answer=scores_on_rank, rel=0,
    wrong=[(lambda seq_len, world_size: scores_on_rank(seq_len, world_size, "contiguous", -1),
            ("That is the last rank of the contiguous split, the busiest one (as much as without the mask); the "
             "zigzag split evens the work out.",
             "这是连续切分中最后一个 rank 的工作量，也是最忙的（与不加掩码时一样多）；之字形切分会把工作量拉平。")),
           (lambda seq_len, world_size: scores_on_rank(seq_len, world_size) - (seq_len / world_size) ** 2 / 2,
            ("Close, but the ring computes each rank's diagonal block whole (c² scores, half of them masked).",
             "很接近，但环形注意力把每个 rank 的对角块整块算完（c² 个分数，其中一半被掩码）。")),
           (lambda seq_len, world_size: scores_on_rank(seq_len, world_size) - (seq_len / world_size) ** 2 / 4,
            ("The ring computes its own block in one causal call, all c² scores of it, even the quarter that lies "
             "wholly in the future under the zigzag.",
             "环形注意力对自己的块做一次因果计算，算出全部 c² 个分数，即使在之字形切分下其中四分之一完全位于未来。")),
           (lambda seq_len, world_size: seq_len * (seq_len + 1) / 2 / world_size,
            ("That counts only the pairs the mask keeps, shared evenly; the ring computes every block it does not "
             "skip whole, masked scores included.",
             "这只数了掩码保留的配对，再平均分给各个 rank；环形注意力对没有跳过的块整块计算，被掩码的分数也算在内。")),
           (lambda seq_len, world_size: scores_on_rank(seq_len, world_size, "contiguous", 0),
            ("That is one block, c² scores: the first rank of the contiguous split, which sees only its own "
             "positions. Under the zigzag every rank also attends to parts of the other blocks.",
             "这是一个块，c² 个分数：连续切分中第一个 rank 的工作量，它只看得到自己的位置。在之字形切分下，"
             "每个 rank 还要对其他块的一部分做注意力。"))],
    hint=("Write c = s/N for the positions of one rank. The zigzag gives each rank two of 2N chunks, one early and "
          "one late; count, block by block, how many of the c × c scores between its queries and another rank's "
          "keys lie in the past, and remember how the ring treats its own diagonal block.",
          "记 c = s/N 为一个 rank 的位置数。之字形切分给每个 rank 分配 2N 个小块中的两个，一早一晚；逐块数一数它的查询与"
          "另一个 rank 的键之间的 c × c 个分数中有多少落在过去，并想想环形注意力如何处理自己的对角块。"),
    explanation=("c = {seq_len}/{world_size}; c² + (N − 1) · c²/2 = (N + 1)/2 · c² = {answer} scores on every rank: "
                 "its diagonal block whole, half of each other one. The contiguous split gives rank r (r + 1) · c², "
                 "so its last rank works N times as much as its first.",
                 "c = {seq_len}/{world_size}；c² + (N − 1) · c²/2 = (N + 1)/2 · c² = {answer}，每个 rank 都一样："
                 "自己的对角块整块算，其余每块算一半。连续切分时 rank r 要算 (r + 1) · c²，最后一个 rank 的工作量是"
                 "第一个的 N 倍。"))


# ------------------------------------------------------------------ 10.3: the online-softmax merge
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


MERGE_CASES = [Case(("blocks of 3 and 4 keys", "3 个键和 4 个键的两块"), _partial_results((3, 4), 1.0, 0)),
               Case(("blocks of 1 and 6 keys", "1 个键和 6 个键的两块"), _partial_results((1, 6), 1.0, 1)),
               Case(("scores near ±1000 (e^1000 overflows)", "分数接近 ±1000（e^1000 会溢出）"),
                    _partial_results((4, 2), 400.0, 2)),
               Case(("the first part still empty (lse = −∞)", "第一部分仍为空（lse = −∞）"),
                    _partial_results((2, 5), 1.0, 3, empty_first=True))]


def _same_pair(got, expected) -> bool:
    """(out, lse) as expected: out within 10⁻¹⁰, lse within 10⁻⁸ (it is near 1000 in one case)."""
    try:
        out, lse = got
        return (out.shape == expected[0].shape and lse.shape == expected[1].shape
                and bool(torch.allclose(out, expected[0], atol=1e-10))
                and bool(torch.allclose(lse, expected[1], atol=1e-8)))
    except (TypeError, ValueError, AttributeError, RuntimeError):
        return False


def _not_finite(expected, got, facts) -> bool:
    return any(not torch.isfinite(part).all() for part in got)


MERGE_PROBES = (
    Probe(lambda expected, got, facts: not isinstance(got, (tuple, list)) or len(got) != 2,
          ("Return both, as a pair (out, lse): the next merge needs the lse of what is merged so far.",
           "两者都要返回，写成一对 (out, lse)：下一次合并需要已合并部分的 lse。")),
    Probe(_not_finite, ("Your result holds inf or nan: e^lse overflows when the scores are large. Subtract the "
                        "larger lse before exponentiating (torch.logaddexp does it for the lse).",
                        "你的结果里有 inf 或 nan：分数很大时 e^lse 会溢出。先减去较大的 lse 再取指数"
                        "（lse 可以用 torch.logaddexp 计算）。")),
    Probe(lambda expected, got, facts: same_values(got[0], (facts["args"][0] + facts["args"][2]) / 2),
          ("Your out is the plain mean of the two parts, as if both blocks held as much of the softmax's mass: "
           "weigh each part by its share, e^(lse_x − lse).",
           "你的 out 是两部分的简单平均，好像两块键在 softmax 中所占的份额一样大：应按各自的份额 e^(lse_x − lse) 加权。")),
    Probe(lambda expected, got, facts: same_values(got[0], expected[0]) and not same_values(got[1], expected[1]),
          ("Your out is right but your lse is not the log of both blocks' denominators together: the next merge "
           "would weigh the blocks wrongly.",
           "你的 out 是对的，但 lse 不是两块分母之和的对数：下一次合并会把各块的权重算错。")),
)


def check_merge(fn) -> bool:
    """Your ``fn(out_a, lse_a, out_b, lse_b)`` must return (out, lse) over both blocks, checked
    against :func:`~nnpar_lite.context_parallel.merge_partial` on blocks you do not see."""
    return written_without(fn, ("merge_partial", "ring_attention")) and \
        report(run_cases(fn, merge_partial, MERGE_CASES), same=_same_pair, probes=MERGE_PROBES)


register(Exercise("10.3", check_merge, solution=merge_partial, hint=(
    "Each out_x is normalised over its own keys, and e^lse_x is its block's softmax denominator. What is the "
    "denominator of both blocks together, and what share of it does each block hold? Compute in logs, so that no "
    "exponent is large.",
    "每个 out_x 只在自己的键上归一化，e^lse_x 是它那一块的 softmax 分母。两块合起来的分母是多少？每一块占其中多大的份额？"
    "在对数域里计算，让任何指数都不会很大。"), explanation=(
    "lse = log(e^lse_a + e^lse_b), computed as torch.logaddexp does, m + log(e^(lse_a − m) + e^(lse_b − m)) with "
    "m = max(lse_a, lse_b); out = e^(lse_a − lse) · out_a + e^(lse_b − lse) · out_b. Each partial out is normalised "
    "over its own keys; e^(lse_x − lse) is the share of the softmax's mass its keys hold, so the weighted sum is the "
    "softmax over both. Every exponent is ≤ 0, so nothing overflows, and a part with lse = −∞ adds nothing.",
    "lse = log(e^lse_a + e^lse_b)，像 torch.logaddexp 那样按 m + log(e^(lse_a − m) + e^(lse_b − m)) 计算，"
    "m = max(lse_a, lse_b)；out = e^(lse_a − lse) · out_a + e^(lse_b − lse) · out_b。每个部分结果 out 只在自己的键上"
    "归一化；e^(lse_x − lse) 是这些键在整个 softmax 中所占的份额，所以加权和就是在两块上的 softmax。所有指数都 ≤ 0，"
    "不会溢出；lse = −∞ 的部分什么也不加。")))


# ------------------------------------------------------------------ 10.4: the ring, on real processes
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


def _slips(q_mine, k, v, world_size: int) -> dict:
    """What the common slips return on this rank: attention over one K/V block alone (by rank), the
    plain mean of the blocks' outputs, every block merged but one (by the rank it missed)."""
    blocks = [block_attention(q_mine, split_sequence(k, j, world_size), split_sequence(v, j, world_size),
                              None, None, causal=False) for j in range(world_size)]

    def merged(parts):
        out, lse = torch.zeros_like(q_mine), torch.full_like(q_mine[..., :1], float("-inf"))
        for part in parts:
            out, lse = merge_partial(out, lse, *part)
        return out

    return {"one block": [out for out, _ in blocks], "averaged": sum(out for out, _ in blocks) / world_size,
            "all but": [merged(blocks[:j] + blocks[j + 1:]) for j in range(world_size)]}


def ring_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """This rank's chunk of full attention (torch's fused kernel on the whole sequence), what the
    learner's ``fn`` returns for this rank's chunks of q, k and v, and what the common slips give."""
    batch, heads, local, dim, seed = case.args
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, world_size * local, dim, generator=g, dtype=torch.float64) for _ in range(3))
    expected = split_sequence(F.scaled_dot_product_attention(q, k, v), rank, world_size)
    facts = {**_slips(split_sequence(q, rank, world_size), k, v, world_size),
             "causal": split_sequence(F.scaled_dot_product_attention(q, k, v, is_causal=True), rank, world_size)}
    mine = [split_sequence(x, rank, world_size) for x in (q, k, v)]
    return expected, fn(*mine), facts


def _same_tensor(got, expected) -> bool:
    return isinstance(got, torch.Tensor) and got.shape == expected.shape and \
        bool(torch.allclose(got, expected, atol=1e-10))


def _slip_block(name: str, own: bool | None = None):
    """A probe's test: is ``got`` what the slip ``name`` gives with block j (this rank's own, another's,
    or, with ``own=None``, any)? Then {"block": j}."""
    def test(expected, got, facts):
        for j, slip in enumerate(facts[name]):
            mine = own is None or (j == facts["rank"]) == own
            if mine and not _same_tensor(slip, expected) and _same_tensor(got, slip):
                return {"block": j}
        return False
    return test


RING_PROBES = (
    Probe(_slip_block("one block", own=True),
          ("Your result is attention over this rank's own K/V block only: K and V must travel round the ring, "
           "N − 1 passes, so that every rank meets every block.",
           "你的结果只是对本 rank 自己的 K/V 块做的注意力：K 和 V 必须沿环传递 N − 1 次，每个 rank 才能遇到每一块。")),
    Probe(_slip_block("one block", own=False),
          ("Your result is attention over rank {block}'s K/V block alone: each step replaced the running result "
           "instead of merging into it. Keep both the out and the lse that the merge returns.",
           "你的结果只是对 rank {block} 的 K/V 块做的注意力：每一步都替换了累计结果，而不是并入其中。"
           "合并返回的 out 和 lse 都要保留。")),
    Probe(lambda expected, got, facts: _same_tensor(got, facts["averaged"]) and not _same_tensor(expected,
                                                                                                  facts["averaged"]),
          ("Your result is the plain mean of the {world_size} blocks' outputs: merge them by the online softmax, "
           "which weighs each block by its share of the softmax's mass.",
           "你的结果是 {world_size} 个块输出的简单平均：应该用在线 softmax 合并，它按每块在 softmax 中所占的份额加权。")),
    Probe(_slip_block("all but"),
          ("Your result misses rank {block}'s K/V block: N blocks need N attends and N − 1 passes, one attend before "
           "each pass and one after the last.",
           "你的结果漏掉了 rank {block} 的 K/V 块：N 个块需要 N 次注意力和 N − 1 次传递，每次传递之前做一次注意力，"
           "最后一次传递之后再做一次。")),
    Probe(lambda expected, got, facts: _same_tensor(got, facts["causal"]) and not _same_tensor(expected,
                                                                                                facts["causal"]),
          ("That is causal attention; this exercise wants it without the mask (causal=False).",
           "这是因果注意力；本练习要的是不带掩码的（causal=False）。")),
)


def check_ring_forward(fn) -> bool:
    """Your ``fn(q, k, v)``, run on every rank with this rank's chunk of the sequence, must return
    this rank's chunk of full (non-causal) attention: on 1 process and on 3."""
    cases = {1: [Case(("1 head, 4 positions", "1 个头，4 个位置"), (1, 1, 4, 3, 0))],
             3: [Case(("2 heads, 3 positions per rank", "2 个头，每个 rank 3 个位置"), (2, 2, 3, 4, 1)),
                 Case(("3 heads, 1 position per rank", "3 个头，每个 rank 1 个位置"), (1, 3, 1, 5, 2))]}
    return check_on_ranks(fn, f"{__name__}:ring_driver", cases, same=_same_tensor, probes=RING_PROBES, timeout=60)


register(Exercise("10.4", check_ring_forward, solution=ring_attention_forward, hint=(
    "Each rank starts with its own K/V block and an empty result (out = 0, lse = −∞). How many blocks must each rank "
    "meet, how many times must the blocks move for that, and what do you do with each block's partial result?",
    "每个 rank 从自己的 K/V 块和一个空结果（out = 0，lse = −∞）开始。每个 rank 要遇到多少块？为此这些块要移动几次？"
    "每一块的部分结果又该怎么处理？"), explanation=(
    "N steps: attend to the K/V block in hand (block_attention), merge it into (out, lse) (merge_partial), then, "
    "except after the last step, pass K and V to the right with pass_right and keep what arrives from the left. "
    "After N − 1 passes every rank has met every K/V block once, and the online softmax has merged them into the "
    "exact result. No rank ever held more than one block of K and V besides its own queries: memory s/N per rank.",
    "共 N 步：对手中的 K/V 块做注意力（block_attention），并入 (out, lse)（merge_partial），然后（最后一步除外）用 "
    "pass_right 把 K 和 V 传给右边的邻居，换成从左边到来的块。经过 N − 1 次传递，每个 rank 都恰好遇到每个 K/V 块一次，"
    "在线 softmax 把它们合并成精确结果。除了自己的查询，任何 rank 同时持有的 K、V 都不超过一块：每个 rank 的内存为 s/N。")))
