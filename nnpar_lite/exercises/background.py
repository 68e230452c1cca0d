"""Chapter 01's exercises: the three ways of parallelising, the cost of a training step,
and Amdahl's law (seed 1, 2).

01.1 what crosses in spatial parallelism (recall) · 01.2 the operations of one step ·
01.3 half of Amdahl's limit, on the widget's curve · 01.4 Amdahl's law solved for f, a function.
"""

from __future__ import annotations

from ..costmodel import amdahl_speedup
from ..experiments.background import step_flops
from .core import Case, Exercise, Probe, number_exercise, register, report, run_cases, same_number, verdict

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
                    f"{letter}：{wrong[1]}空间并行切分的是每个样本内部的数据。"))


register(Exercise("01.1", check_spatial_parallelism, solution="c", hint=(
    "Spatial parallelism cuts the data inside each sample (an image into tiles), not the model and not the batch. "
    "What must a tile's worker receive to convolve its border pixels?",
    "空间并行切分的是每个样本内部的数据（把一张图像切成块），既不切模型，也不切批量。"
    "处理一个块的计算单元要卷积它边缘的像素，需要收到什么？"), explanation=(
    "Each worker holds the whole model (the weights are replicated) and one tile of every sample; neighbours "
    "exchange the border rows a convolution needs (the halo), and the weight gradients are all-reduced as in "
    "data parallelism (Dryden et al. 2019). Chapter 06.",
    "每个计算单元持有完整的模型（权重是复制的）和每个样本的一块；相邻的计算单元交换卷积所需的边界行（光晕），"
    "权重的梯度像数据并行那样做全归约（Dryden 等，2019）。见第 06 章。")))

number_exercise(
    "01.2", stated={"P": 1e7, "B": 256}, answer=lambda P, B: step_flops(P, B), rel=1e-3,
    wrong=[(lambda P, B: 2 * P * B, ("That is the forward pass alone; the backward pass costs twice as much.",
                                     "这只是前向传播；反向传播的开销是它的两倍。")),
           (lambda P, B: 4 * P * B, ("The backward pass computes two gradients, each as costly as the forward pass.",
                                     "反向传播要算两个梯度，每个都与前向传播一样费。")),
           (lambda P, B: 6 * P, ("That is one sample; the batch holds 256.", "这是一个样本的量；批量有 256 个样本。"))],
    hint=("Count per parameter and per sample: the forward pass does one multiply and one add; the backward pass "
          "computes the gradient of the inputs and that of the weights, each costing as much as the forward pass.",
          "按每个参数、每个样本计数：前向传播做一次乘法和一次加法；反向传播要算输入的梯度和权重的梯度，"
          "各与前向传播一样费。"),
    explanation=("6 · {P} · {B} = {answer} operations: 2 per parameter and sample in the forward pass (a multiply "
                 "and an add), 4 in the backward pass (the gradients of the inputs and of the weights).",
                 "6 · {P} · {B} = {answer} 次运算：前向传播每个参数、每个样本 2 次（一次乘、一次加），"
                 "反向传播 4 次（输入的梯度与权重的梯度）。"))


def workers_for(f: float, S: float) -> int:
    """The fewest workers p at which Amdahl's S(p) = 1 / ((1 − f) + f/p) reaches S (up to the
    rounding of the floating-point S(p))."""
    return next(p for p in range(1, 1_000_000) if amdahl_speedup(f, p) >= S * (1 - 1e-12))


number_exercise(
    "01.3", stated={"f": 0.95, "S": 10}, answer=workers_for, rel=0,
    wrong=[(lambda f, S: 1 / (1 - f), ("That is the curve's limit 1/(1 − f), which no p reaches.",
                                       "那是曲线的极限 1/(1 − f)，任何 p 都达不到。")),
           (lambda f, S: S, ("S = p holds only when nothing is serial (f = 1).", "只有完全没有串行部分（f = 1）时才有 S = p。")),
           (lambda f, S: (S - 1 + f) / f, ("That solves Gustafson's law, not Amdahl's.",
                                           "这解的是 Gustafson 定律，不是 Amdahl 定律。"))],
    hint=("Set f = 0.95 and find where the Amdahl curve crosses S = 10; then solve 1 / ((1 − f) + f/p) = 10 for p on "
          "paper.", "设 f = 0.95，找出 Amdahl 曲线穿过 S = 10 的位置；再在纸上解 1 / ((1 − f) + f/p) = 10 求 p。"),
    explanation=("1 / ((1 − {f}) + {f}/p) = {S} needs {f}/p = 1/{S} − (1 − {f}), so p = {answer}: that many workers "
                 "for half of Amdahl's limit. (Computed in floating point, S({answer}) may come out a hair below {S}.)",
                 "1 / ((1 − {f}) + {f}/p) = {S} 要求 {f}/p = 1/{S} − (1 − {f})，即 p = {answer}：要达到 Amdahl 极限的"
                 "一半，需要这么多计算单元。（用浮点数计算时，S({answer}) 可能比 {S} 略小一点。）"))


def parallel_fraction(speedup, workers):
    """Amdahl's law solved for f: S = 1 / ((1 − f) + f/p) gives f = (1 − 1/S) / (1 − 1/p)."""
    return (1 - 1 / speedup) / (1 - 1 / workers)


CASES = [Case(("S = 1.5 on 2 workers", "2 个计算单元上 S = 1.5"), (1.5, 2)),
         Case(("S = 3 on 4 workers", "4 个计算单元上 S = 3"), (3.0, 4)),
         Case(("S = 10 on 19 workers", "19 个计算单元上 S = 10"), (10.0, 19)),
         Case(("no speed-up, S = 1 on 8 workers", "没有加速：8 个计算单元上 S = 1"), (1.0, 8)),
         Case(("perfect, S = 64 on 64 workers", "理想情形：64 个计算单元上 S = 64"), (64.0, 64)),
         Case(("S = 1.8 on 3 workers", "3 个计算单元上 S = 1.8"), (1.8, 3))]

EFFICIENCY = Probe(lambda expected, got, facts: same_number(got, facts["args"][0] / facts["args"][1]),
                   ("That is the parallel efficiency S/p, not Amdahl's fraction f.",
                    "这是并行效率 S/p，不是 Amdahl 定律中的比例 f。"))
NO_WORKERS = Probe(lambda expected, got, facts: same_number(got, 1 - 1 / facts["args"][0]),
                   ("1 − 1/S is f only for infinitely many workers: keep the f/p term.",
                    "1 − 1/S 只在无穷多个计算单元时等于 f：保留 f/p 这一项。"))


def check_parallel_fraction(fn) -> bool:
    """Your ``fn(speedup, workers)`` must return the parallel fraction f that Amdahl's law
    needs for that speed-up on that many workers; run on cases you do not see."""
    return report(run_cases(fn, parallel_fraction, CASES), same=same_number, probes=(EFFICIENCY, NO_WORKERS))


register(Exercise("01.4", check_parallel_fraction, solution=parallel_fraction, hint=(
    "Start from 1/S = (1 − f) + f/p and solve for f; check that S = 1 gives f = 0 and S = p gives f = 1.",
    "从 1/S = (1 − f) + f/p 出发解出 f；验证 S = 1 时 f = 0，S = p 时 f = 1。"), explanation=(
    "1/S = 1 − f (1 − 1/p), so f = (1 − 1/S) / (1 − 1/p). A speed-up measured on only two workers fixes f "
    "poorly: a small error in S moves f a lot.",
    "1/S = 1 − f (1 − 1/p)，所以 f = (1 − 1/S) / (1 − 1/p)。只在两个计算单元上测得的加速比很难准确确定 f："
    "S 的微小误差会让 f 变化很大。")))
