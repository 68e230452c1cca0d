"""Chapter 05's exercises: splitting the model, pipeline and tensor (seed 3.3)."""

from __future__ import annotations

from ..pipeline import one_f_one_b_schedule
from .core import Case, Exercise, check_number, register, report, run_cases

register(Exercise(
    "05.1",
    lambda answer: check_number(answer, 28, hint=(
        "The bubble is (p − 1)/(m + p − 1) = 3/(m + 3); find the smallest whole m that makes it less than 0.1.",
        "气泡比例为 (p − 1)/(m + p − 1) = 3/(m + 3)；求使它小于 0.1 的最小整数 m。")),
    solution=28,
    explanation=("3/(m + 3) < 0.1 ⟺ m + 3 > 30 ⟺ m > 27, so m = 28 (bubble 3/31 ≈ 9.7 %; m = 27 gives exactly 10 %).",
                 "3/(m + 3) < 0.1 ⟺ m + 3 > 30 ⟺ m > 27，所以 m = 28（气泡 3/31 ≈ 9.7 %；m = 27 恰好是 10 %）。")))

register(Exercise(
    "05.2",
    lambda answer: check_number(answer, 3, hint=(
        "Under 1F1B stage s runs p − 1 − s warm-up forwards, then one more forward before its first backward. "
        "Stages are numbered from 0; count how many forwards are done and not yet backwarded at that moment.",
        "在 1F1B 中，阶段 s 先做 p − 1 − s 次预热前向，再做一次前向后才做第一次反向。阶段从 0 开始编号；"
        "数一数那一刻已完成前向、尚未反向的微批次有多少个。")),
    solution=3,
    explanation=("min(p − s, m) = min(4 − 1, 8) = 3: two warm-up forwards, one more, then it alternates, so it "
                 "never holds more than 3. Under GPipe the same stage holds all m = 8.",
                 "min(p − s, m) = min(4 − 1, 8) = 3：两次预热前向，再一次前向，之后交替进行，所以最多只持有 3 个。"
                 "在 GPipe 中同一阶段要持有全部 m = 8 个。")))

register(Exercise(
    "05.3",
    lambda answer: check_number(answer, 2048 * 1024 * 4, hint=(
        "g sums the partial outputs of the row-parallel layer: each worker's partial output has the full output's "
        "shape (tokens × h), not a 1/t slice of it, and not the 4h-wide hidden activation, which stays split.",
        "g 对行并行层的部分输出求和：每个计算单元的部分输出与完整输出形状相同（词元数 × h），不是它的 1/t，"
        "也不是保持切分的 4h 宽隐藏激活。")),
    solution=2048 * 1024 * 4,
    explanation=("2,048 tokens × 1,024 features × 4 bytes = 8,388,608 bytes (8 MiB) per worker, per MLP, per "
                 "forward pass, whatever t; the backward pass's f all-reduces as much again. Splitting over more "
                 "workers shrinks the compute, not this message: tensor parallelism wants fast links.",
                 "2,048 个词元 × 1,024 个特征 × 4 字节 = 8,388,608 字节（8 MiB），每个计算单元、每个 MLP、每次前向"
                 "都如此，与 t 无关；反向传播中的 f 再全归约同样多。切给更多计算单元只减少计算，不减少这条消息："
                 "张量并行需要快速互连。")))


def one_stage_1f1b(num_stages, num_microbatches, stage):
    """The order of stage ``stage``'s operations under 1F1B with a flush: ("F", i) and ("B", i)."""
    warmup = min(num_stages - 1 - stage, num_microbatches)
    order = [("F", i) for i in range(warmup)]
    next_forward = warmup
    for i in range(num_microbatches):
        if next_forward < num_microbatches:         # steady state: one forward, then one backward
            order.append(("F", next_forward))
            next_forward += 1
        order.append(("B", i))                       # after the last forward: the remaining backwards
    return order


ORDER_CASES = [Case(f"p = {p}, m = {m}, stage {s}", (p, m, s)) for p, m, s in
               [(1, 1, 0), (1, 5, 0), (2, 1, 0), (2, 1, 1), (3, 2, 0), (3, 2, 1), (3, 2, 2), (4, 2, 0), (5, 1, 1),
                (4, 6, 0), (4, 6, 1), (4, 6, 3), (5, 3, 1), (6, 9, 2), (3, 7, 1)]]


def same_order(got, expected) -> bool:
    """Is ``got`` the same sequence of (op, micro-batch) pairs as ``expected`` (tuples or lists)?"""
    try:
        return [(op, int(i)) for op, i in got] == expected
    except (TypeError, ValueError):
        return False


def check_one_stage_1f1b(fn) -> bool:
    """Your ``fn(num_stages, num_microbatches, stage)`` must return that stage's 1F1B order, checked
    against the package's :func:`~nnpar_lite.pipeline.one_f_one_b_schedule` on unseen (p, m, s)."""
    return report(run_cases(fn, lambda p, m, s: one_f_one_b_schedule(p, m)[s], ORDER_CASES), same=same_order,
                  hint=("Stage s first runs min(p − 1 − s, m) forwards (the last stage none), then alternates one "
                        "forward and one backward while forwards remain, then runs the remaining backwards; "
                        "micro-batches in order 0, 1, … in both.",
                        "阶段 s 先做 min(p − 1 − s, m) 次前向（最后一个阶段不做），然后在还有前向时交替做一次前向、"
                        "一次反向，最后做完剩下的反向；前向与反向都按微批次 0, 1, … 的顺序。"))


register(Exercise("05.4", check_one_stage_1f1b, solution=one_stage_1f1b, explanation=(
    "The same list as nnpar_lite.pipeline.one_f_one_b_schedule(p, m)[s]. The warm-up is what bounds the "
    "activations held: stage s has p − s forwards in flight when its first backward runs.",
    "与 nnpar_lite.pipeline.one_f_one_b_schedule(p, m)[s] 相同。预热决定了持有的激活数：阶段 s 做第一次反向时，"
    "有 p − s 个前向在途。")))
