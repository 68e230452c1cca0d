"""Chapter 03's exercises: data parallelism (seed 3.1).

03.1 a sum-reduced loss under DDP (recall) · 03.2 what a ring all-reduce sends (recall) ·
03.3 whether the shards' skew changes a sum-reduced gradient (the chapter's widget) · 03.4 a
ring all-reduce over send and recv, run on real ranks against ``dist.all_reduce``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..costmodel import ring_allreduce_time
from ..data_parallel import ring_allreduce
from ..experiments.data_parallel import gradient_comparison
from .core import Case, Exercise, number_exercise, register
from .own_work import written_without
from .ranks import AVERAGED_NOT_SUMMED, NOT_IN_PLACE, check_on_ranks, wrong_chunk

number_exercise(
    "03.1", stated={"K": 4, "n": 32, "N": 128}, answer=lambda K, n, N: N / K,
    wrong=[(lambda K, n, N: N, ("That is the sum over all samples; DDP averages the ranks' gradients, which divides "
                                "it by K.", "这是全部样本上的求和；DDP 对各进程的梯度求平均，还要除以 K。")),
           (lambda K, n, N: K, ("Each rank's gradient is a sum over its own samples, not over the ranks.",
                                "每个进程的梯度是它自己样本上的求和，而不是对进程求和。")),
           (lambda K, n, N: 1, ("1 is the factor of mean losses; these are sums over each rank's samples.",
                                "1 是平均损失的倍数；这里是每个进程样本上的求和。"))],
    hint=("Write one rank's gradient as n times the mean gradient of its samples; then average the K ranks' gradients, "
          "as DDP does, and compare with the mean gradient of all N samples.",
          "把一个进程的梯度写成 n 乘以它的样本的平均梯度；再像 DDP 那样对 K 个进程的梯度求平均，"
          "与全部 N 个样本的平均梯度比较。"),
    explanation=("Each rank's gradient is the sum over its {n} samples, {n} times its mean gradient; the average of "
                 "{K} such gradients is {answer} times the mean gradient of all {N} samples (N / K).",
                 "每个进程的梯度是其 {n} 个样本的求和，等于平均梯度的 {n} 倍；{K} 个这样的梯度取平均，"
                 "得到全部 {N} 个样本平均梯度的 {answer} 倍（N / K）。"))

number_exercise(
    "03.2", stated={"n": 1e6, "p": 4}, answer=lambda n, p: ring_allreduce_time(n, p, alpha=0.0, beta=1.0),
    wrong=[(lambda n, p: 2 * n, ("2n is the limit for many ranks: with p ranks each sends one chunk of n/p elements "
                                 "in each of 2 (p − 1) steps, a little less.",
                                 "2n 是进程很多时的极限：p 个进程时，每个进程在 2 (p − 1) 步中每步发送一个 n/p 个元素的块，"
                                 "比 2n 略少。")),
           (lambda n, p: (p - 1) / p * n, ("That is one phase; the all-gather sends as much again.",
                                           "这只是一个阶段；全收集还要再发送同样多。")),
           (lambda n, p: 2 * (p - 1) * n, ("Each step sends one chunk of n/p elements, not the whole tensor.",
                                           "每一步只发送一个 n/p 个元素的块，而不是整个张量。"))],
    hint=("Two phases, reduce-scatter and all-gather, of p − 1 steps each; in every step each rank sends one chunk "
          "of n/p elements.", "两个阶段（归约散射、全收集），各 p − 1 步；每一步每个进程发送一个 n/p 个元素的块。"),
    explanation=("2 phases × (p − 1) steps × n/p elements = 2 (p − 1)/p · n = {answer} for n = {n}, p = {p}: nearly "
                 "2n whatever p.",
                 "2 个阶段 × (p − 1) 步 × n/p 个元素 = 2 (p − 1)/p · n，n = {n}、p = {p} 时为 {answer}："
                 "与 p 几乎无关，约为 2n。"))

number_exercise(
    "03.3", stated={"K": 5, "skew": 0.8},
    answer=lambda K, skew: gradient_comparison(K, skew, "sum", weighted=False)["scale"],
    wrong=[(lambda K, skew: K * gradient_comparison(K, skew, "sum", weighted=False)["scale"],
            ("That is the sum over all the samples; the plain mean over the workers divides it by K.",
             "这是全部样本上的求和；对计算单元取简单平均还要再除以 K。")),
           (lambda K, skew: 1.0, ("1 is the scale with mean losses; these losses are sums over each shard.",
                                  "1 是使用平均损失时的尺度；这里的损失是每个分片上的求和。")),
           (lambda K, skew: K, ("That is the number of workers; the scale counts samples.", "这是计算单元数；尺度数的是样本。"))],
    hint=("Add up the K workers' sum-reduced gradients: whatever the shard sizes, that is the sum over all the "
          "widget's samples. Then the plain mean divides by K.",
          "把 K 个计算单元的求和损失梯度加起来：无论分片大小如何，结果都是控件全部样本上的求和。然后简单平均再除以 K。"),
    explanation=("Σ_k Σ_(j in shard k) ∇ℓ_j = Σ_j ∇ℓ_j = N ∇L whatever the shard sizes; the plain mean over K = {K} "
                 "workers divides by K: N/K ∇L = {answer} ∇L for the widget's N samples. The skew moves samples "
                 "between workers, not out of the sum. With mean losses it is the other way round: the skew matters, "
                 "the scale does not.",
                 "Σ_k Σ_(j∈分片 k) ∇ℓ_j = Σ_j ∇ℓ_j = N ∇L，与分片大小无关；对 K = {K} 个计算单元取简单平均即除以 K："
                 "对控件的 N 个样本，N/K ∇L = {answer} ∇L。偏斜只是在计算单元之间移动样本，不会把样本移出总和。"
                 "用平均损失时正好相反：偏斜有影响，尺度没有。"))


def ring_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """Run a learner's all-reduce on this rank's tensor of the case's length, and
    ``dist.all_reduce`` on a copy: (expected, got, what the tensor held before)."""
    (numel,) = case.args
    x = torch.randn(numel, generator=torch.Generator().manual_seed(1000 * rank + numel), dtype=torch.float64)
    before, expected = x.clone(), x.clone()
    dist.all_reduce(expected)
    fn(x)
    return expected, x, {"input": before}


# what 03.4's ring replaces: torch's collectives and the package's rings (send, recv and isend only)
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor",
               "broadcast", "all_to_all", "all_to_all_single", "ring_allreduce", "ring_reduce_scatter",
               "ring_all_gather", "allreduce_gradients", "all_reduce_mean_")

RING_CHUNK = wrong_chunk((
    "Of the {world_size} chunks (cut as torch.tensor_split cuts), chunk {right} holds the sum and chunk {wrong} does "
    "not: after the reduce-scatter each rank holds one finished chunk; the all-gather's p − 1 steps pass them round.",
    "在 {world_size} 个块中（按 torch.tensor_split 的切法），块 {right} 是总和，块 {wrong} 不是：归约散射之后每个进程"
    "只有一个完成的块；全收集的 p − 1 步把它们传遍整个环。"))


def check_ring_allreduce(fn) -> bool:
    """Your ``fn(tensor)`` must sum ``tensor`` over all ranks in place, with send and recv only;
    run on 1 to 3 ranks, on lengths that do not divide by the number of ranks."""
    cases = {k: [Case((f"length {n}", f"长度 {n}"), (n,)) for n in (1001, k + 1, 1, 0)] for k in (2, 1, 3)}
    return written_without(fn, COLLECTIVES) and check_on_ranks(fn, f"{__name__}:ring_driver", cases,
                                                               probes=(AVERAGED_NOT_SUMMED, NOT_IN_PLACE, RING_CHUNK))


register(Exercise("03.4", check_ring_allreduce, solution=ring_allreduce, hint=(
    "Cut the tensor into p chunks with torch.tensor_split (sizes may differ by one); in step s of the reduce-scatter, "
    "rank r sends chunk (r − s) mod p to the right with dist.isend and adds the chunk that arrives from the left "
    "with dist.recv; then p − 1 all-gather steps copy the finished chunks round.",
    "用 torch.tensor_split 把张量切成 p 块（大小可以相差一）；归约散射的第 s 步，进程 r 用 dist.isend 把块 "
    "(r − s) mod p 发给右邻居，并用 dist.recv 收下左邻居发来的块、加到自己那一块上；然后 p − 1 步全收集把完成的块"
    "复制到整个环。"), explanation=(
    "The package's ring_allreduce: isend to the right, recv from the left, so that no rank waits for a neighbour "
    "that is itself waiting; chunks of length 0 are neither sent nor received.",
    "即本包的 ring_allreduce：向右 isend、从左 recv，这样不会有进程等待同样在等待的邻居；长度为 0 的块既不发送也不接收。")))
