"""Chapter 09's exercises: communication efficiency (seed 3.1 step 5, made cheaper).

09.1 all-reduces under accumulation · 09.2 what PowerSGD saves · 09.3 the largest stable
learning rate under staleness · 09.4 an error-feedback compressor, run on real ranks.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from ..asynchronous import largest_stable_lr_under_staleness
from .core import Case, Exercise, Probe, number_exercise, register, same_values
from .ranks import check_on_ranks

number_exercise(
    "09.1", stated={"buckets": 3, "steps": 100, "micro": 4}, rel=0,
    answer=lambda buckets, steps, micro: buckets * steps,
    wrong=[(lambda buckets, steps, micro: buckets * steps * micro,
            ("Inside no_sync() the hooks stand aside: only the last micro-step of each step sends.",
             "在 no_sync() 里钩子不做任何事：每一步只有最后一个微步发送。")),
           (lambda buckets, steps, micro: steps, ("Each bucket is all-reduced on its own: count them.",
                                                  "每个桶单独做一次全归约：要把桶数算进去。")),
           (lambda buckets, steps, micro: buckets, ("That is one optimizer step; there are 100.",
                                                    "这是一个优化步的量；共有 100 步。"))],
    hint=("Inside no_sync() the gradient hooks stand aside; outside it, each bucket's all-reduce starts once its "
          "gradients are ready. Count per optimizer step, then for all of them.",
          "在 no_sync() 里梯度钩子不做任何事；在它外面，每个桶的梯度一就绪就启动它的全归约。先数一个优化步，再数全部。"),
    explanation=("One all-reduce per bucket per optimizer step: {buckets} × {steps} = {answer}, where synchronising "
                 "every micro-step would cost {buckets} × {micro} × {steps} for the same gradients.",
                 "每个优化步每个桶一次全归约：{buckets} × {steps} = {answer}；若每个微步都同步，同样的梯度要 "
                 "{buckets} × {micro} × {steps} 次。"))

number_exercise(
    "09.2", stated={"r": 4, "n": 1024, "m": 1024},
    answer=lambda r, n, m: n * m / ((n + m) * r),
    wrong=[(lambda r, n, m: n * m / (n * r), ("PowerSGD sends both factors, P (n × r) and Q (m × r).",
                                              "PowerSGD 两个因子都要发送：P（n × r）和 Q（m × r）。")),
           (lambda r, n, m: n * m / (n + m), ("Each factor has r columns: (n + m) · r numbers.",
                                              "每个因子有 r 列：共 (n + m) · r 个数。")),
           (lambda r, n, m: (n + m) * r / (n * m), ("The fraction is upside down: the matrix's numbers over the "
                                                    "sent ones.",
                                                    "分数颠倒了：应是矩阵的数的个数除以发送的个数。"))],
    hint=("The matrix holds n · m numbers; PowerSGD sends its two low-rank factors P (n × r) and Q (m × r) instead.",
          "矩阵有 n · m 个数；PowerSGD 改为发送两个低秩因子 P（n × r）和 Q（m × r）。"),
    explanation=("{n} · {m} / (({n} + {m}) · {r}) = {answer}: the saving grows with the matrix, which is why biases "
                 "(1-D) are sent as they are.",
                 "{n} · {m} / (({n} + {m}) · {r}) = {answer}：矩阵越大节省越多，所以偏置（一维）按原样发送。"))

number_exercise(
    "09.3", stated={"tau": 2, "lam": 1}, rel=1e-3,
    answer=lambda tau, lam: largest_stable_lr_under_staleness(lam, tau),
    wrong=[(lambda tau, lam: 2 / lam, ("2/λ is the bound without staleness.", "2/λ 是没有陈旧时的界。")),
           (lambda tau, lam: 2 / (lam * (tau + 1)), ("Dividing 2/λ by τ + 1 is a guess; the exact bound comes from the "
                                                     "delay-difference equation.", "把 2/λ 除以 τ + 1 只是猜测；精确的界来自"
                                                     "延迟差分方程。")),
           (lambda tau, lam: math.pi / (lam * (2 * tau + 1)), ("That is the approximation π / (2τ + 1); the exact "
                                                               "bound is 2 sin(π / (2 (2τ + 1))) / λ.",
                                                               "这是近似值 π / (2τ + 1)；精确的界是 "
                                                               "2 sin(π / (2 (2τ + 1))) / λ。"))],
    hint=("The chapter's bound: η λ < 2 sin(π / (2 (2τ + 1))). Put in τ and λ.",
          "本章给出的界：η λ < 2 sin(π / (2 (2τ + 1)))。代入 τ 和 λ。"),
    explanation=("2 sin(π / (2 (2 · {tau} + 1))) / {lam} = {answer}: less than a third of the 2/λ a fresh gradient "
                 "allows.", "2 sin(π / (2 (2 · {tau} + 1))) / {lam} = {answer}：不到新鲜梯度所允许的 2/λ 的三分之一。"))


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


def _top_k_sent(delta: torch.Tensor, k: int) -> torch.Tensor:
    picks = delta.abs().topk(k).indices
    sent = torch.zeros_like(delta)
    sent[picks] = delta[picks]
    return sent


def _without_feedback(tensor, residual, k):
    """A common slip: top-k of the gradient alone; the residual is never kept."""
    sent = _top_k_sent(tensor, k)
    dist.all_reduce(sent)
    tensor.copy_(sent / dist.get_world_size())


def _not_averaged(tensor, residual, k):
    """A common slip: error feedback right, the sum of what was sent left undivided."""
    delta = tensor + residual
    sent = _top_k_sent(delta, k)
    residual.copy_(delta - sent)
    dist.all_reduce(sent)
    tensor.copy_(sent)


def _residual_of_the_gradient(tensor, residual, k):
    """A common slip: keeps g − sent instead of Δ − sent."""
    sent = _top_k_sent(tensor + residual, k)
    residual.copy_(tensor - sent)
    dist.all_reduce(sent)
    tensor.copy_(sent / dist.get_world_size())


SLIPS = {"no feedback": _without_feedback, "not averaged": _not_averaged,
         "residual of g": _residual_of_the_gradient}


def feedback_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """Run the solution, the learner's compressor and the common slips for ``steps`` steps on
    this rank's gradient of the case's length (the same gradient every step, different on every
    rank): each result is the output and the residual after the last step, one after the other;
    (expected, got, the slips' results)."""
    length, k, steps = case.args
    results = {}
    for name, compressor in {"expected": compressed_allreduce_, "got": fn, **SLIPS}.items():
        residual = torch.zeros(length, dtype=torch.float64)
        for _ in range(steps):
            gradient = torch.randn(length, generator=torch.Generator().manual_seed(100 * rank + length),
                                   dtype=torch.float64)
            compressor(gradient, residual, k)
        results[name] = torch.cat([gradient, residual])
    return results.pop("expected"), results.pop("got"), results


def _slip(name: str, message: tuple[str, str]) -> Probe:
    return Probe(lambda expected, got, facts: not same_values(facts[name], expected) and same_values(got, facts[name]),
                 message)


FEEDBACK_PROBES = (
    _slip("no feedback", ("Your residual is never added back: keep Δ − sent in residual, in place, and add it to the "
                          "next step's gradient.", "你的残差从未被加回：把 Δ − sent 原地存进 residual，并加到下一步的梯度上。")),
    _slip("not averaged", ("Your output is the sum of what the ranks sent; divide by their number for the average.",
                           "你的输出是各进程发送部分之和；要除以进程数才是平均值。")),
    _slip("residual of g", ("Your residual is g − sent; it must be Δ − sent, with Δ = g + e, or last step's residual "
                            "is lost.", "你的残差是 g − sent；应为 Δ − sent（Δ = g + e），否则上一步的残差会丢失。")),
)


def check_error_feedback(fn) -> bool:
    """Your ``fn(tensor, residual, k)`` must average ``tensor`` over all ranks in place, sending
    its k entries of largest magnitude (after adding ``residual``), and leave in ``residual`` what it did not
    send; run on 1 to 3 ranks, several steps, lengths that do not divide evenly. Each result reads
    the output, then the residual."""
    cases = [Case(("length 7, k = 3, after 1 step", "长度 7，k = 3，1 步之后"), (7, 3, 1)),
             Case(("length 7, k = 3, after 3 steps", "长度 7，k = 3，3 步之后"), (7, 3, 3)),
             Case(("length 1, k = 1, after 2 steps", "长度 1，k = 1，2 步之后"), (1, 1, 2)),
             Case(("length 1001, k = 10, after 3 steps", "长度 1001，k = 10，3 步之后"), (1001, 10, 3)),
             Case(("length 5, k = 5 (everything), after 2 steps", "长度 5，k = 5（全部发送），2 步之后"), (5, 5, 2))]
    return check_on_ranks(fn, f"{__name__}:feedback_driver", {k: cases for k in (2, 1, 3)}, probes=FEEDBACK_PROBES)


register(Exercise("09.4", check_error_feedback, solution=compressed_allreduce_, hint=(
    "Add the residual to the gradient first (Δ = g + e); send the k entries of Δ of largest magnitude (zeros "
    "elsewhere, then dist.all_reduce); the new residual is Δ minus what was sent; the output is the sum of what the "
    "ranks sent, divided by their number.",
    "先把残差加到梯度上（Δ = g + e）；发送 Δ 中绝对值最大的 k 个元素（其余为零，再 dist.all_reduce）；"
    "新的残差是 Δ 减去发送的部分；输出是各进程发送部分之和除以进程数。"), explanation=(
    "Nothing is lost, only delayed: what a step does not send is added to the next step's gradient, so summed over "
    "T steps the outputs differ from the true averages by the last residual only (chapter 09 shows the 1/T).",
    "没有丢失，只是推迟：一步没发送的部分加到下一步的梯度上，所以 T 步的输出之和与真实平均之和"
    "只差最后的残差（第 09 章展示了 1/T）。")))
