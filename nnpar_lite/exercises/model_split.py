"""Chapter 05's exercises: splitting the model, pipeline and tensor (seed 3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..costmodel import bubble_fraction, peak_activations
from ..pipeline import one_f_one_b_schedule
from ..tensor_parallel import split_columns, split_rows
from .core import Case, Exercise, Probe, number_exercise, register, report, run_cases, same_sequence
from .own_work import written_without

def smallest_microbatches(p: int, bubble: float) -> int:
    """The fewest micro-batches m whose bubble (p − 1)/(m + p − 1) is below ``bubble`` per cent."""
    return next(m for m in range(1, 1_000_000) if bubble_fraction(p, m) < bubble / 100)


number_exercise(
    "05.1", stated={"p": 4, "bubble": 10}, answer=smallest_microbatches, rel=0,
    wrong=[(lambda p, bubble: smallest_microbatches(p, bubble) - 1,
            ("There the bubble is exactly 10 %, not below it.", "此时气泡恰好是 10 %，不是低于 10 %。")),
           (lambda p, bubble: next(m for m in range(1, 10_000) if (p - 1) / m < bubble / 100),
            ("The step lasts m + p − 1 slots, not m: the bubble is (p − 1)/(m + p − 1).",
             "一步持续 m + p − 1 个时间槽，而不是 m：气泡比例是 (p − 1)/(m + p − 1)。"))],
    hint=("The bubble is (p − 1)/(m + p − 1); with p = 4 write it as a function of m and find the smallest whole m "
          "that makes it less than 0.1.",
          "气泡比例为 (p − 1)/(m + p − 1)；代入 p = 4，写成 m 的函数，求使它小于 0.1 的最小整数 m。"),
    explanation=("({p} − 1)/(m + {p} − 1) < {bubble} % ⟺ m > 10 ({p} − 1) − ({p} − 1), so m = {answer}; one "
                 "micro-batch fewer gives exactly {bubble} %.",
                 "({p} − 1)/(m + {p} − 1) < {bubble} % ⟺ m > 10 ({p} − 1) − ({p} − 1)，所以 m = {answer}；"
                 "少一个微批次时恰好是 {bubble} %。"))

number_exercise(
    "05.2", stated={"p": 6, "m": 10, "stage": 2},
    answer=lambda p, m, stage: peak_activations(p, m, stage, "1f1b"), rel=0,
    wrong=[(lambda p, m, stage: peak_activations(p, m, stage, "gpipe"),
            ("That is GPipe, which runs every forward before any backward; 1F1B starts the backwards early.",
             "这是 GPipe：所有前向都做完才开始反向；1F1B 会尽早开始反向。")),
           (lambda p, m, stage: p - 1 - stage,
            ("That counts the warm-up forwards only; one more forward runs before the stage's first backward.",
             "这只数了预热前向；在该阶段第一次反向之前还要再做一次前向。")),
           (lambda p, m, stage: p - (stage - 1),
            ("Stages are numbered from 0: stage 2 is the third.", "阶段从 0 开始编号：阶段 2 是第三个阶段。")),
           (lambda p, m, stage: p, ("That is stage 0's peak; later stages hold fewer.", "这是阶段 0 的峰值；后面的阶段持有得更少。"))],
    hint=("Under 1F1B stage s runs p − 1 − s warm-up forwards, then one more forward before its first backward, then "
          "alternates. Count the micro-batches whose forward is done and whose backward is not, at that moment.",
          "在 1F1B 中，阶段 s 先做 p − 1 − s 次预热前向，再做一次前向后才做第一次反向，之后交替进行。"
          "数一数那一刻已完成前向、尚未反向的微批次有多少个。"),
    explanation=("min(p − s, m) = min({p} − {stage}, {m}) = {answer}: p − 1 − s warm-up forwards, one more, then it "
                 "alternates, so it never holds more. Under GPipe the same stage holds all m = {m}.",
                 "min(p − s, m) = min({p} − {stage}, {m}) = {answer}：p − 1 − s 次预热前向，再一次前向，之后交替进行，"
                 "所以不会持有更多。在 GPipe 中同一阶段要持有全部 m = {m} 个。"))


def g_message_bytes(h: int, t: int, tokens: int, bytes: int) -> int:
    """Bytes of the tensor Megatron's g all-reduces in an h → 4h → h MLP split over t workers: one
    worker's partial output of the row-parallel layer, computed on shapes alone (the meta device)
    with the package's own column and row split."""
    dtype = {4: torch.float32, 2: torch.float16, 8: torch.float64}[bytes]
    first = torch.nn.Linear(h, 4 * h, device="meta", dtype=dtype)
    second = torch.nn.Linear(4 * h, h, device="meta", dtype=dtype)
    (w1, b1), w2 = split_columns(first, t)[0], split_rows(second, t)[0]
    x = torch.empty(tokens, h, device="meta", dtype=dtype)
    partial = F.linear(F.gelu(F.linear(x, w1, b1)), w2)
    return partial.numel() * partial.element_size()


number_exercise(
    "05.3", stated={"h": 1024, "t": 8, "tokens": 2048, "bytes": 4}, answer=g_message_bytes, rel=0,
    wrong=[(lambda h, t, tokens, bytes: tokens * h * bytes // t,
            ("Each worker's partial output has the full output's shape (tokens × h), not a 1/t slice of it.",
             "每个计算单元的部分输出与完整输出形状相同（词元数 × h），不是它的 1/t。")),
           (lambda h, t, tokens, bytes: tokens * (4 * h // t) * bytes,
            ("That is the worker's slice of the 4h-wide hidden activation, which stays split: g sums the second "
             "layer's partial outputs, h wide.", "这是计算单元那一份 4h 宽的隐藏激活，它保持切分：g 求和的是第二层的"
             "部分输出，宽为 h。")),
           (lambda h, t, tokens, bytes: tokens * 4 * h * bytes,
            ("That is the whole 4h-wide hidden activation; g sums the h-wide outputs.",
             "这是完整的 4h 宽隐藏激活；g 求和的是 h 宽的输出。")),
           (lambda h, t, tokens, bytes: t * tokens * h * bytes,
            ("That counts all t partial outputs; the question asks for one worker's.",
             "这数的是全部 t 个部分输出；题目问的是一个计算单元的。"))],
    hint=("g sums the partial outputs of the row-parallel layer: find the shape of one worker's partial output "
          "(tokens × features), then count its bytes.",
          "g 对行并行层的部分输出求和：先求一个计算单元的部分输出的形状（词元数 × 特征数），再数它的字节数。"),
    explanation=("{tokens} tokens × {h} features × {bytes} bytes = {answer} bytes per worker, per MLP, per forward "
                 "pass, whatever t; the backward pass's f all-reduces as much again. Splitting over more workers "
                 "shrinks the compute, not this message: tensor parallelism wants fast links.",
                 "{tokens} 个词元 × {h} 个特征 × {bytes} 字节 = {answer} 字节，每个计算单元、每个 MLP、每次前向都如此，"
                 "与 t 无关；反向传播中的 f 再全归约同样多。切给更多计算单元只减少计算，不减少这条消息："
                 "张量并行需要快速互连。"))


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


ORDER_CASES = [Case((f"p = {p}, m = {m}, stage {s}", f"p = {p}，m = {m}，阶段 {s}"), (p, m, s)) for p, m, s in
               [(1, 1, 0), (1, 5, 0), (2, 1, 0), (2, 1, 1), (3, 2, 0), (3, 2, 1), (3, 2, 2), (4, 2, 0), (5, 1, 1),
                (4, 6, 0), (4, 6, 1), (4, 6, 3), (5, 3, 1), (6, 9, 2), (3, 7, 1)]]


def check_one_stage_1f1b(fn) -> bool:
    """Your ``fn(num_stages, num_microbatches, stage)`` must return that stage's 1F1B order, checked
    against the package's :func:`~nnpar_lite.pipeline.one_f_one_b_schedule` on unseen (p, m, s)."""
    return written_without(fn, ("one_f_one_b_schedule",)) and report(
        run_cases(fn, lambda p, m, s: one_f_one_b_schedule(p, m)[s], ORDER_CASES), same=same_sequence,
        probes=(GPIPE_ORDER,))


GPIPE_ORDER = Probe(lambda expected, got, facts: same_sequence(got, [("F", i) for i in range(facts["args"][1])] + [
    ("B", i) for i in reversed(range(facts["args"][1]))]), ("That is GPipe's order, every forward first; under 1F1B a "
                                                          "stage starts its backwards after the warm-up.",
                                                          "这是 GPipe 的顺序，先做完所有前向；在 1F1B 中，阶段在预热之后就开始反向。"))


register(Exercise("05.4", check_one_stage_1f1b, solution=one_stage_1f1b, hint=(
    "Stage s first runs min(p − 1 − s, m) forwards (the last stage none), then alternates one forward and one "
    "backward while forwards remain, then runs the remaining backwards; micro-batches in order 0, 1, … in both.",
    "阶段 s 先做 min(p − 1 − s, m) 次前向（最后一个阶段不做），然后在还有前向时交替做一次前向、一次反向，"
    "最后做完剩下的反向；前向与反向都按微批次 0、1、… 的顺序。"), explanation=(
    "The same list as nnpar_lite.pipeline.one_f_one_b_schedule(p, m)[s]. The warm-up is what bounds the "
    "activations held: stage s has p − s forwards in flight when its first backward runs.",
    "与 nnpar_lite.pipeline.one_f_one_b_schedule(p, m)[s] 相同。预热决定了持有的激活数：阶段 s 做第一次反向时，"
    "有 p − s 个前向在途。")))
