"""Chapter 00's exercises: how the workers' losses combine into the batch's loss (seed 3.1)."""

from __future__ import annotations

import math

from .core import Case, Exercise, check_number, register, report, run_cases

register(Exercise(
    "00.1",
    lambda answer: check_number(answer, (12 * 0.8 + 36 * 0.2) / 48, hint=(
        "Weight each worker's mean loss by its number of samples, then divide by all 48 samples.",
        "按样本数给每个计算单元的平均损失加权，再除以全部 48 个样本。")),
    solution=0.35,
    explanation=("(12 · 0.8 + 36 · 0.2) / 48 = (9.6 + 7.2) / 48 = 0.35. The article's plain mean, "
                 "(0.8 + 0.2) / 2 = 0.5, gives the 12 samples of worker 0 as much weight as the 36 of worker 1.",
                 "(12 · 0.8 + 36 · 0.2) / 48 = (9.6 + 7.2) / 48 = 0.35。文章的简单平均 (0.8 + 0.2) / 2 = 0.5 "
                 "让计算单元 0 的 12 个样本与计算单元 1 的 36 个样本权重相同。")))

register(Exercise(
    "00.2",
    lambda answer: check_number(answer, (1 / 2) / (6 / 60), hint=(
        "Read worker 0's shard size n₀ from the figure's title; compare the weight 1/2 with n₀/60.",
        "从图的标题读出计算单元 0 的分片大小 n₀；比较权重 1/2 与 n₀/60。")),
    solution=5,
    explanation=("At K = 2, skew = 1 the shards hold 6 and 54 samples. The plain mean gives worker 0's mean the "
                 "weight 1/2; in the mean over all 60 samples its 6 samples weigh 6/60 = 1/10: five times less.",
                 "K = 2、skew = 1 时两个分片分别有 6 和 54 个样本。简单平均给计算单元 0 的平均值权重 1/2；"
                 "而在全部 60 个样本的平均中，它的 6 个样本只占 6/60 = 1/10：相差五倍。")))


def weighted_shard_mean(shard_means, shard_sizes):
    """The mean loss over all samples from each shard's mean loss L_i and size n_i:
    L = Σ_i n_i L_i / Σ_i n_i."""
    total = sum(n * loss for n, loss in zip(shard_sizes, shard_means))
    return total / sum(shard_sizes)


CASES = [Case("K = 1", ([0.7], [5])),
         Case("two equal shards", ([0.2, 0.6], [10, 10])),
         Case("uneven sizes 10 and 30", ([0.9, 0.3], [10, 30])),
         Case("K = 4, sizes 1, 2, 3, 54", ([2.0, 1.0, 0.5, 0.25], [1, 2, 3, 54])),
         Case("K = 3, one shard of one sample", ([0.125, 4.0, 1.5], [7, 1, 12]))]


def same_number(got, expected) -> bool:
    """Is ``got`` a number (Python, numpy or a 0-d tensor) within 1e-9 of ``expected``?"""
    try:
        return math.isclose(float(got), expected, rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


def check_weighted_shard_mean(fn) -> bool:
    """Your ``fn(shard_means, shard_sizes)`` must return the mean loss over all samples;
    run on cases you do not see, K = 1 and uneven sizes among them."""
    return report(run_cases(fn, weighted_shard_mean, CASES),
                  same=same_number,
                  hint=("Multiply each shard's mean by its size, add them up, and divide by the total number of "
                        "samples Σ n_i (not by K).",
                        "把每个分片的平均损失乘以它的大小，求和，再除以样本总数 Σ n_i（而不是 K）。"))


register(Exercise("00.3", check_weighted_shard_mean, solution=weighted_shard_mean, explanation=(
    "The same as nl.average_losses(shard_means, weights=shard_sizes): a shard's mean stands for n_i samples.",
    "与 nl.average_losses(shard_means, weights=shard_sizes) 相同：一个分片的平均值代表 n_i 个样本。")))
