"""Chapter 09's exercises: communication efficiency (seed 3.1 step 5, made cheaper)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from .core import Case, Exercise, check_number, check_on_ranks, register

register(Exercise(
    "09.1",
    lambda answer: check_number(answer, 100 * 3, hint=(
        "Inside no_sync() the hooks stand aside: only the last of the 4 micro-steps sends its buckets, "
        "and each bucket goes out once.",
        "在 no_sync() 里钩子不做任何事：4 个微步中只有最后一步发送各个桶，每个桶发送一次。")),
    solution=300,
    explanation=("One all-reduce per bucket per optimizer step: 3 × 100 = 300, where synchronising every micro-step "
                 "would cost 3 × 4 × 100 = 1,200 for the same gradients.",
                 "每个优化步每个桶一次全归约：3 × 100 = 300；若每个微步都同步，同样的梯度要 3 × 4 × 100 = 1,200 次。")))

register(Exercise(
    "09.2",
    lambda answer: check_number(answer, 1024 * 1024 / ((1024 + 1024) * 4), hint=(
        "The matrix holds n · m numbers; PowerSGD sends P (n × r) and Q (m × r), (n + m) · r numbers.",
        "矩阵有 n · m 个数；PowerSGD 发送 P（n × r）和 Q（m × r），共 (n + m) · r 个数。")),
    solution=128,
    explanation=("1,048,576 / ((1,024 + 1,024) · 4) = 128: the saving grows with the matrix, which is why "
                 "biases (1-D) are sent as they are.",
                 "1,048,576 / ((1,024 + 1,024) · 4) = 128：矩阵越大节省越多，所以偏置（一维）按原样发送。")))

register(Exercise(
    "09.3",
    lambda answer: check_number(answer, 2 * math.sin(math.pi / 10), rel=1e-3, hint=(
        "Use η λ < 2 sin(π / (2 (2τ + 1))) with τ = 2 and λ = 1; neither 2/λ (no staleness) nor 2 / (λ (τ + 1)).",
        "用 η λ < 2 sin(π / (2 (2τ + 1)))，τ = 2、λ = 1；不是 2/λ（没有陈旧），也不是 2 / (λ (τ + 1))。")),
    solution=round(2 * math.sin(math.pi / 10), 4),
    explanation=("2 sin(π / 10) = 2 sin 18° = (√5 − 1) / 2 ≈ 0.618: less than a third of the 2 a fresh gradient "
                 "allows.",
                 "2 sin(π / 10) = 2 sin 18° = (√5 − 1) / 2 ≈ 0.618：不到新鲜梯度所允许的 2 的三分之一。")))


def compressed_allreduce_(tensor: torch.Tensor, residual: torch.Tensor, k: int) -> torch.Tensor:
    """Average ``tensor`` over the ranks in place, sending only its k entries of largest magnitude, with error
    feedback: Δ = g + e, send topk(Δ), e ← Δ − topk(Δ), g ← 1/K Σ_r topk(Δ_r)."""
    delta = tensor + residual
    picks = delta.abs().topk(k).indices
    sent = torch.zeros_like(delta)
    sent[picks] = delta[picks]
    residual.copy_(delta - sent)                 # what was not sent waits for the next step
    dist.all_reduce(sent)
    tensor.copy_(sent / dist.get_world_size())
    return tensor


def feedback_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """Run the learner's compressor and the solution for ``steps`` steps on this rank's gradient
    of the case's length (the same gradient every step, different on every rank): (expected,
    got) are the output and the residual after the last step, one after the other."""
    length, k, steps = case.args
    results = []
    for compressor in (compressed_allreduce_, fn):
        residual = torch.zeros(length, dtype=torch.float64)
        for _ in range(steps):
            gradient = torch.randn(length, generator=torch.Generator().manual_seed(100 * rank + length),
                                   dtype=torch.float64)
            compressor(gradient, residual, k)
        results.append(torch.cat([gradient, residual]))
    return results[0], results[1]


def check_error_feedback(fn) -> bool:
    """Your ``fn(tensor, residual, k)`` must average ``tensor`` over all ranks in place, sending
    its k entries of largest magnitude (after adding ``residual``), and leave in ``residual`` what it did not
    send; run on 1 to 3 ranks, several steps, lengths that do not divide evenly."""
    if _untouched(fn):
        raise NotImplementedError                           # the template as given: no need to start ranks
    cases = [Case("length 7, k = 3, after 1 step", (7, 3, 1)), Case("length 7, k = 3, after 3 steps", (7, 3, 3)),
             Case("length 1, k = 1, after 2 steps", (1, 1, 2)),
             Case("length 1001, k = 10, after 3 steps", (1001, 10, 3)),
             Case("length 5, k = 5 (everything), after 2 steps", (5, 5, 2))]
    return check_on_ranks(fn, f"{__name__}:feedback_driver", {k: cases for k in (2, 1, 3)},
                          same=lambda got, expected: got is not None and got.shape == expected.shape
                          and bool(torch.allclose(got, expected, atol=1e-12)),
                          hint=("The result holds your output then your residual. Add the residual to the "
                                "gradient first (Δ = g + e); send the k entries of Δ of largest magnitude; the new "
                                "residual is Δ minus what was sent; the output is the sum of what the ranks sent, "
                                "divided by their number.",
                                "结果先是你的输出，再是你的残差。先把残差加到梯度上（Δ = g + e）；"
                                "发送 Δ 中绝对值最大的 "
                                "k 个元素；新的残差是 Δ 减去发送的部分；输出是各进程发送部分之和除以进程数。"),
                          timeout=90)


def _untouched(fn) -> bool:
    """Whether ``fn``'s body is still only ``raise NotImplementedError`` (after its docstring)."""
    import ast
    import inspect
    import textwrap

    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0].body
    except (OSError, TypeError, SyntaxError, IndexError, AttributeError):
        return False
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]                                     # the docstring
    return len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.dump(body[0])


register(Exercise("09.4", check_error_feedback, solution=compressed_allreduce_, explanation=(
    "Nothing is lost, only delayed: what a step does not send is added to the next step's gradient, so summed over "
    "T steps the outputs differ from the true averages by the last residual only (chapter 09 shows the 1/T).",
    "没有丢失，只是推迟：一步没发送的部分加到下一步的梯度上，所以 T 步的输出之和与真实平均之和"
    "只差最后的残差（第 09 章展示了 1/T）。")))
