"""Chapter 03's exercises: data parallelism (seed 3.1).

03.1 a sum-reduced loss under DDP (recall) · 03.2 what a ring all-reduce sends (recall) ·
03.3 whether the shards' skew changes a sum-reduced gradient (the chapter's widget) · 03.4 a
ring all-reduce over send and recv, run on real ranks against ``dist.all_reduce``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..data_parallel import ring_allreduce
from .core import Case, Exercise, check_number, check_on_ranks, register

register(Exercise(
    "03.1",
    lambda answer: check_number(answer, 128 / 4, hint=(
        "DDP averages the 4 ranks' gradients, and each is a sum over its own samples, not a mean.",
        "DDP 对 4 个进程的梯度求平均，而每个梯度是其自身样本上的求和，而不是平均。")),
    solution=32,
    explanation=("Each rank's gradient is the sum over its 32 samples, 32 times its mean gradient; the "
                 "average of 4 such gradients is 32 times the mean gradient of all 128 samples (N / K).",
                 "每个进程的梯度是其 32 个样本的求和，等于平均梯度的 32 倍；4 个这样的梯度取平均，"
                 "得到全部 128 个样本平均梯度的 32 倍（N / K）。")))

register(Exercise(
    "03.2",
    lambda answer: check_number(answer, 2 * 3 / 4 * 1_000_000, hint=(
        "Two phases (reduce-scatter, all-gather) of p − 1 steps; each step sends one chunk of n / p elements.",
        "两个阶段（归约散射、全收集），各 p − 1 步；每步发送一个 n / p 个元素的块。")),
    solution=1_500_000,
    explanation=("2 phases × 3 steps × 250,000 elements = 1,500,000 = 2 (p − 1)/p · n, nearly 2n whatever p.",
                 "2 个阶段 × 3 步 × 250,000 个元素 = 1,500,000 = 2 (p − 1)/p · n，与 p 几乎无关，约为 2n。")))


def check_sum_loss_scale(answer) -> bool:
    """The scale of the K = 5 workers' gradient on the widget's 120 samples, sum loss, plain mean."""
    return check_number(answer, 120 / 5, known={
        120.0: ("That is the sum over all samples; the plain mean over the workers divides it by K.",
                "这是全部样本上的求和；对工作者取简单平均还要再除以 K。"),
        1.0: ("1 is the scale with mean losses; these losses are sums over each shard.",
              "1 是使用平均损失时的尺度；这里的损失是每个分片上的求和。")},
        hint=("Add up the K workers' sum-reduced gradients: whatever the shard sizes, that is the sum over all 120 "
         "samples; then the plain mean divides by K.",
         "把 K 个工作者的求和损失梯度加起来：无论分片大小如何，结果都是全部 120 个样本上的求和；然后简单平均再除以 K。"))


register(Exercise("03.3", check_sum_loss_scale, solution=24, explanation=(
    "Σ_k Σ_(j in shard k) ∇ℓ_j = Σ_j ∇ℓ_j = N ∇L whatever the shard sizes; the plain mean over K workers divides "
    "by K: N/K ∇L = 120/5 ∇L = 24 ∇L. The skew moves samples between workers, not out of the sum. With mean "
    "losses it is the other way round: the skew matters, the scale does not.",
    "Σ_k Σ_(j∈分片 k) ∇ℓ_j = Σ_j ∇ℓ_j = N ∇L，与分片大小无关；对 K 个工作者取简单平均即除以 K："
    "N/K ∇L = 120/5 ∇L = 24 ∇L。偏斜只是在工作者之间移动样本，不会把样本移出总和。"
    "用平均损失时正好相反：偏斜有影响，尺度没有。")))


def ring_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """Run a learner's all-reduce on this rank's tensor of the case's length, and
    ``dist.all_reduce`` on a copy: (expected, got)."""
    (numel,) = case.args
    x = torch.randn(numel, generator=torch.Generator().manual_seed(1000 * rank + numel), dtype=torch.float64)
    expected = x.clone()
    dist.all_reduce(expected)
    fn(x)
    return expected, x


def check_ring_allreduce(fn) -> bool:
    """Your ``fn(tensor)`` must sum ``tensor`` over all ranks in place, with send and recv only;
    run on 1 to 3 ranks, on lengths that do not divide by the number of ranks."""
    cases = {k: [Case(f"length {n}", (n,)) for n in (0, 1, k + 1, 1001)] for k in (2, 1, 3)}
    return check_on_ranks(fn, f"{__name__}:ring_driver", cases, same=lambda got, expected: got is not None
                          and got.shape == expected.shape and bool(torch.allclose(got, expected, atol=1e-12)),
                          hint=("Cut the tensor into p chunks with torch.tensor_split (sizes may differ by one); "
                                "in step s of the reduce-scatter, rank r sends chunk (r − s) mod p to the right and "
                                "adds the chunk that arrives from the left; then p − 1 all-gather steps.",
                                "用 torch.tensor_split 把张量切成 p 块（大小可以相差一）；归约散射的第 s 步，进程 r 把块 "
                                "(r − s) mod p 发给右邻居，并把从左邻居收到的块加上去；然后做 p − 1 步全收集。"),
                          timeout=45)


register(Exercise("03.4", check_ring_allreduce, solution=ring_allreduce, explanation=(
    "The package's ring_allreduce: isend to the right, recv from the left, so that no rank waits for a neighbour "
    "that is itself waiting; chunks of length 0 are neither sent nor received.",
    "即本包的 ring_allreduce：向右 isend、从左 recv，这样不会有进程等待同样在等待的邻居；长度为 0 的块既不发送也不接收。")))
