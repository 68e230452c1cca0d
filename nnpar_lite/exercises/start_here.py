"""Chapter 00's exercises: how the workers' losses combine into the batch's loss (seed 3.1).

00.1 the loss of 48 samples (the weighted mean) · 00.2 how much too much weight the plain mean
gives, read off the widget · 00.3 the weighted mean, written as a function.
"""

from __future__ import annotations

from ..experiments.start_here import loss_averages
from ..formulas import average_losses
from .core import Case, Exercise, Probe, number_exercise, register, report, run_cases, same_number
from .own_work import written_without

number_exercise(
    "00.1", stated={"L0": 0.8, "n0": 12, "L1": 0.2, "n1": 36},
    answer=lambda L0, n0, L1, n1: float(average_losses([L0, L1], weights=[n0, n1])),
    wrong=[(lambda L0, n0, L1, n1: (L0 + L1) / 2,
            ("That is the article's plain mean: it gives the 12 samples of worker 0 as much weight as the 36 of "
             "worker 1.", "这是文章的简单平均：它让计算单元 0 的 12 个样本与计算单元 1 的 36 个样本权重相同。")),
           (lambda L0, n0, L1, n1: (n0 * L0 + n1 * L1) / 2,
            ("The weights are right, the division is not: divide by the number of samples, not of workers.",
             "权重对了，除数不对：要除以样本数，而不是计算单元数。")),
           (lambda L0, n0, L1, n1: n0 * L0 + n1 * L1,
            ("That is the total loss of the batch; its mean divides it by the samples.",
             "这是整个批量的总损失；平均值还要除以样本数。")),
           (lambda L0, n0, L1, n1: (n1 * L0 + n0 * L1) / (n0 + n1),
            ("Each worker's mean got the other's sample count.", "每个计算单元的平均值配上了另一个的样本数。"))],
    hint=("A worker's mean loss stands for all of its samples: rebuild each worker's total loss, add the totals, "
          "and divide by the number of samples.",
          "计算单元的平均损失代表它的全部样本：先还原每个计算单元的总损失，相加，再除以样本数。"),
    explanation=("({n0} · {L0} + {n1} · {L1}) / ({n0} + {n1}) = {answer}. The article's plain mean, "
                 "({L0} + {L1}) / 2, gives the {n0} samples of worker 0 as much weight as the {n1} of worker 1.",
                 "({n0} · {L0} + {n1} · {L1}) / ({n0} + {n1}) = {answer}。文章的简单平均 ({L0} + {L1}) / 2 "
                 "让计算单元 0 的 {n0} 个样本与计算单元 1 的 {n1} 个样本权重相同。"))


def widget_shard_sizes(K: int, skew: float, N: int) -> list[int]:
    """The shard sizes chapter 00's widget shows in its title at these settings (its own split)."""
    return loss_averages(K, skew, N)["sizes"]


number_exercise(
    "00.2", stated={"K": 2, "skew": 1, "N": 60},
    answer=lambda K, skew, N: (1 / K) / (widget_shard_sizes(K, skew, N)[0] / N),
    wrong=[(lambda K, skew, N: (1 / K) / (widget_shard_sizes(K, skew, N)[1] / N),
            ("That is worker 1's factor, the large shard, which the plain mean under-weights; the question is "
             "about worker 0.", "这是计算单元 1（大分片）的倍数，简单平均低估了它；题目问的是计算单元 0。")),
           (lambda K, skew, N: (widget_shard_sizes(K, skew, N)[0] / N) / (1 / K),
            ("The fraction is upside down: the plain mean's weight over the true one.",
             "分数颠倒了：应是简单平均中的权重除以真正的权重。")),
           (lambda K, skew, N: widget_shard_sizes(K, skew, N)[1] / widget_shard_sizes(K, skew, N)[0],
            ("That is the ratio of the two shard sizes; compare the two weights of worker 0's mean instead.",
             "这是两个分片大小之比；要比较的是计算单元 0 的平均值的两个权重。"))],
    hint=("Read worker 0's shard size n₀ from the figure's title at K = 2, skew = 1; the plain mean gives its "
          "mean loss the weight 1/2, the mean over all 60 samples n₀/60. Divide the first by the second.",
          "在 K = 2、skew = 1 时从图的标题读出计算单元 0 的分片大小 n₀；简单平均给它的平均损失的权重是 1/2，"
          "全部 60 个样本的平均给的是 n₀/60。用前者除以后者。"),
    explanation=("At K = {K}, skew = {skew} the widget's shards hold n₀ = 60/(2 · {answer}) samples and the rest. "
                 "The plain mean gives worker 0's mean the weight 1/2; in the mean over all {N} samples its n₀ "
                 "samples weigh n₀/{N}: the plain mean over-weights it {answer} times.",
                 "K = {K}、skew = {skew} 时，控件的分片中计算单元 0 有 n₀ = 60/(2 · {answer}) 个样本，其余归另一个。"
                 "简单平均给计算单元 0 的平均值权重 1/2；在全部 {N} 个样本的平均中，它的 n₀ 个样本只占 n₀/{N}："
                 "简单平均把它高估了 {answer} 倍。"))


def weighted_shard_mean(shard_means, shard_sizes):
    """The mean loss over all samples from each shard's mean loss L_i and size n_i:
    L = Σ_i n_i L_i / Σ_i n_i."""
    total = sum(n * loss for n, loss in zip(shard_sizes, shard_means))
    return total / sum(shard_sizes)


CASES = [Case(("two equal shards", "两个大小相同的分片"), ([0.2, 0.6], [10, 10])),
         Case(("uneven sizes 10 and 30", "大小不等的 10 和 30"), ([0.9, 0.3], [10, 30])),
         Case(("K = 4, sizes 1, 2, 3, 54", "K = 4，大小 1、2、3、54"), ([2.0, 1.0, 0.5, 0.25], [1, 2, 3, 54])),
         Case(("K = 3, one shard of one sample", "K = 3，有一个分片只有一个样本"), ([0.125, 4.0, 1.5], [7, 1, 12])),
         Case(("K = 1", "K = 1"), ([0.7], [5]))]

PLAIN_MEAN = Probe(lambda expected, got, facts: same_number(got, sum(facts["args"][0]) / len(facts["args"][0])),
                   ("That is the plain mean of the shard means, right only for equal shards.",
                    "这是各分片平均值的简单平均，只有分片大小相同时才对。"))
BY_WORKERS = Probe(lambda expected, got, facts: same_number(got, expected * sum(facts["args"][1])
                                                            / len(facts["args"][1])),
                   ("The sum is right; divide it by the number of samples Σ n_i, not of workers.",
                    "分子对了；要除以样本总数 Σ n_i，而不是计算单元数。"))
TOTAL = Probe(lambda expected, got, facts: same_number(got, expected * sum(facts["args"][1])),
              ("That is the total loss over all samples; the mean divides it by their number.",
               "这是全部样本的总损失；平均值还要除以样本数。"))


def check_weighted_shard_mean(fn) -> bool:
    """Your ``fn(shard_means, shard_sizes)`` must return the mean loss over all samples;
    run on cases you do not see, K = 1 and uneven sizes among them."""
    return written_without(fn, ("average_losses", "weighted_sum", "coefficients")) and \
        report(run_cases(fn, weighted_shard_mean, CASES), same=same_number, probes=(PLAIN_MEAN, BY_WORKERS, TOTAL))


register(Exercise("00.3", check_weighted_shard_mean, solution=weighted_shard_mean, hint=(
    "A shard's mean stands for n_i samples, so its total loss is n_i · L_i. Add the totals and divide by the "
    "number of samples; check your function by hand on two equal shards, where it must give the plain mean.",
    "一个分片的平均值代表 n_i 个样本，它的总损失是 n_i · L_i。把总损失相加，再除以样本数；"
    "用两个大小相同的分片手算验证：这时结果应等于简单平均。"), explanation=(
    "The same as nl.average_losses(shard_means, weights=shard_sizes): a shard's mean stands for n_i samples.",
    "与 nl.average_losses(shard_means, weights=shard_sizes) 相同：一个分片的平均值代表 n_i 个样本。")))
