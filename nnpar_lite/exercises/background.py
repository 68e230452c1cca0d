"""Chapter 01's exercises: the three ways of parallelising, the cost of a training step,
and Amdahl's law (seed 1, 2)."""

from __future__ import annotations

from .core import Case, Exercise, check_number, register, report, run_cases, verdict
from .start_here import same_number

WAYS = {
    "a": ("that is pipeline parallelism: a different group of layers on each worker.",
          "那是流水线并行：每个计算单元持有不同的一组层。"),
    "b": ("that is data parallelism: whole samples are split, not the inside of each sample.",
          "那是数据并行：切分的是整个样本，而不是每个样本的内部。"),
    "c": ("", ""),
    "d": ("that is tensor parallelism: each worker holds a slice of every weight matrix.",
          "那是张量并行：每个计算单元持有每个权重矩阵的一部分。"),
}


def check_spatial_parallelism(answer) -> bool:
    """A letter, a to d."""
    letter = str(answer).strip().lower().strip("(). ")
    if letter not in WAYS:
        return verdict(False, ("", ""), (f"{answer!r} is not one of the letters a, b, c, d.",
                                         f"{answer!r} 不是 a、b、c、d 中的一个字母。"))
    wrong = WAYS[letter]
    return verdict(letter == "c", (f"{letter} is right.", f"{letter} 正确。"),
                   (f"{letter}: {wrong[0]} Spatial parallelism cuts each sample's data.",
                    f"{letter}：{wrong[1]} 空间并行切分的是每个样本内部的数据。"))


register(Exercise("01.1", check_spatial_parallelism, solution="c", explanation=(
    "Each worker holds the whole model (the weights are replicated) and one tile of every sample; neighbours "
    "exchange the border rows a convolution needs (the halo), and the weight gradients are all-reduced as in "
    "data parallelism (Dryden et al. 2019). Chapter 06.",
    "每个计算单元持有完整的模型（权重是复制的）和每个样本的一块；相邻的计算单元交换卷积所需的边界行（光晕），"
    "权重的梯度像数据并行那样做全归约（Dryden 等，2019）。见第 06 章。")))

register(Exercise(
    "01.2",
    lambda answer: check_number(answer, 6 * 10_000_000 * 256, rel=1e-3, hint=(
        "Count the backward pass too: about 2 operations per parameter and sample forward, 4 backward.",
        "别忘了反向传播：每个参数、每个样本前向约 2 次运算，反向约 4 次。")),
    solution=1.536e10,
    explanation=("6 · 10,000,000 · 256 = 1.536 × 10¹⁰ operations: 2 per parameter and sample in the forward "
                 "pass (a multiply and an add), 4 in the backward pass (the gradients of the inputs and of the weights).",
                 "6 · 10,000,000 · 256 = 1.536 × 10¹⁰ 次运算：前向传播每个参数、每个样本 2 次（一次乘、一次加），"
                 "反向传播 4 次（输入的梯度与权重的梯度）。")))

register(Exercise(
    "01.3",
    lambda answer: check_number(answer, 19, rel=0, hint=(
        "Set f = 0.95 and find where the Amdahl curve crosses S = 10, then solve 1 / ((1 − f) + f/p) = 10 for p "
        "on paper; 20 is the curve's limit 1/(1 − f), which no p reaches.",
        "设 f = 0.95，找出 Amdahl 曲线穿过 S = 10 的位置，再在纸上解 1 / ((1 − f) + f/p) = 10 求 p；"
        "20 是曲线的极限 1/(1 − f)，任何 p 都达不到。")),
    solution=19,
    explanation=("1 / (0.05 + 0.95/p) = 10 needs 0.95/p = 0.05, so p = 19: nineteen workers for half of "
                 "Amdahl's limit of 20. (Computed in floating point, S(19) comes out a hair below 10.)",
                 "1 / (0.05 + 0.95/p) = 10 要求 0.95/p = 0.05，即 p = 19：要达到 Amdahl 极限 20 的一半，需要十九个"
                 "计算单元。（用浮点数计算时，S(19) 会比 10 略小一点。）")))


def parallel_fraction(speedup, workers):
    """Amdahl's law solved for f: S = 1 / ((1 − f) + f/p) gives f = (1 − 1/S) / (1 − 1/p)."""
    return (1 - 1 / speedup) / (1 - 1 / workers)


CASES = [Case("S = 1.5 on 2 workers", (1.5, 2)),
         Case("S = 3 on 4 workers", (3.0, 4)),
         Case("S = 10 on 19 workers", (10.0, 19)),
         Case("no speed-up, S = 1 on 8 workers", (1.0, 8)),
         Case("perfect, S = 64 on 64 workers", (64.0, 64)),
         Case("S = 1.8 on 3 workers", (1.8, 3))]


def check_parallel_fraction(fn) -> bool:
    """Your ``fn(speedup, workers)`` must return the parallel fraction f that Amdahl's law
    needs for that speed-up on that many workers; run on cases you do not see."""
    return report(run_cases(fn, parallel_fraction, CASES), same=same_number, hint=(
        "Start from 1/S = (1 − f) + f/p and solve for f; check that S = 1 gives f = 0 and S = p gives f = 1.",
        "从 1/S = (1 − f) + f/p 出发解出 f；验证 S = 1 时 f = 0，S = p 时 f = 1。"))


register(Exercise("01.4", check_parallel_fraction, solution=parallel_fraction, explanation=(
    "1/S = 1 − f (1 − 1/p), so f = (1 − 1/S) / (1 − 1/p). A speed-up measured on only two workers fixes f "
    "poorly: a small error in S moves f a lot.",
    "1/S = 1 − f (1 − 1/p)，所以 f = (1 − 1/S) / (1 − 1/p)。只在两个计算单元上测得的加速比很难准确确定 f："
    "S 的微小误差会让 f 变化很大。")))
