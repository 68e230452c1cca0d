"""Chapter 07's exercises: communication and scaling (seed 2.3 分布式计算, 2.4 GPU计算, 2.5 异构计算).

07.1 a ring all-reduce's time by the alpha-beta model; 07.2 the memory widget: the devices ZeRO-2
needs in mixed precision; 07.3 where the ring overtakes the binomial tree; 07.4 fit α and β from
measured times, checked against :func:`nnpar_lite.costmodel.fit_alpha_beta` on noisy data the
learner does not see. (``check_widget_choice``, ``diagnosed_number`` and ``model_state_gb``, which
other chapters share, are importable from here as they were; the first two live in ``core``.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import costmodel
from ..experiments.scaling import synthetic_allreduce_times
from .core import (Case, Exercise, Probe, check_widget_choice, diagnosed_number, model_state_gb,  # noqa: F401
                   number_exercise, register, report, run_cases, same_values)
from .own_work import written_without


def ring_ms(p: int, n: float, alpha: float, bandwidth: float) -> float:
    """The alpha-beta model's ring all-reduce, α in µs and 1/β in GB/s, in milliseconds."""
    return costmodel.ring_allreduce_time(n, p, alpha * 1e-6, 1 / (bandwidth * 1e9)) * 1e3


number_exercise(
    "07.1", stated={"p": 16, "n": 1e8, "alpha": 10, "bandwidth": 10}, answer=ring_ms, rel=2e-3,
    wrong=[(lambda p, n, alpha, bandwidth: (2 * (p - 1) * alpha * 1e-6 + n / (bandwidth * 1e9)) * 1e3,
            ("That sends n once; the ring sends 2 (p − 1)/p · n, nearly 2n.", "这只发送了一次 n；环发送 2 (p − 1)/p · n，接近 2n。")),
           (lambda p, n, alpha, bandwidth: ring_ms(p, n, 0, bandwidth),
            ("Each of the 2 (p − 1) steps also pays the latency α.", "2 (p − 1) 步中的每一步还要付出延迟 α。")),
           (lambda p, n, alpha, bandwidth: costmodel.parameter_server_time(
                n, p, alpha * 1e-6, 1 / (bandwidth * 1e9)) * 1e3,
            ("That is a single parameter server, not the ring.", "这是单个参数服务器，不是环。")),
           (lambda p, n, alpha, bandwidth: ring_ms(p, n, alpha, bandwidth) / 1e3,
            ("That is in seconds; give milliseconds.", "这是以秒为单位；请以毫秒为单位作答。"))],
    hint=("The ring takes 2(p − 1) steps, each paying α and sending a chunk of n/p bytes: t = 2(p − 1) α + "
          "2 (p − 1)/p · n β, with β = 1 / (10 GB/s). Answer in milliseconds.",
          "环要走 2(p − 1) 步，每步付出 α 并发送 n/p 字节的一块：t = 2(p − 1) α + 2 (p − 1)/p · n β，"
          "其中 β = 1 / (10 GB/s)。以毫秒作答。"),
    explanation=("2 × ({p} − 1) × {alpha} µs of latency plus 2 × ({p} − 1)/{p} × {n} bytes at {bandwidth} GB/s: "
                 "{answer} ms. The bandwidth term dominates, and it hardly grows with p.",
                 "延迟 2 × ({p} − 1) × {alpha} µs，加上 2 × ({p} − 1)/{p} × {n} 字节、{bandwidth} GB/s 的带宽项：合计 "
                 "{answer} ms。带宽项占主导，且几乎不随 p 增长。"))


# 07.2 — the memory widget: mixed precision, 30 B parameters, ZeRO-2, 80 GB per device.
def fewest_devices(billions: float, gb: float) -> int:
    """The fewest of the widget's device counts at which ZeRO-2's mixed-precision bar fits."""
    return min(d for d in costmodel.DEVICE_COUNTS if model_state_gb(billions, d, 2) <= gb)


STATED_07_2 = {"billions": 30, "gb": 80}
ZERO2_DEVICES = fewest_devices(**STATED_07_2)


def check_zero2_devices(answer: Any) -> bool:
    return check_widget_choice(
        answer, costmodel.DEVICE_COUNTS, ZERO2_DEVICES,
        smaller=lambda d: (f"With {d} devices ZeRO-2 still needs {model_state_gb(30, d, 2):.1f} GB per device.",
                           f"用 {d} 个设备，ZeRO-2 每个设备仍需 {model_state_gb(30, d, 2):.1f} GB。"),
        larger=lambda d: ("It fits there, but also with fewer devices.", "这样能放下，但更少的设备也能放下。"))


register(Exercise("07.2", check_zero2_devices, solution=ZERO2_DEVICES, stated=STATED_07_2, hint=(
    "ZeRO-2 shards gradients and optimizer state over the devices, but every device keeps all the 2-byte weights. "
    "Set the widget to mixed and 30 B, then move the devices slider and read the ZeRO-2 bar against the 80 GB line.",
    "ZeRO-2 把梯度和优化器状态分片到各设备，但每个设备都保留全部 2 字节的权重。把控件设为 mixed、30 B，"
    "再移动设备数滑块，对照 80 GB 的线看 ZeRO-2 那一条。"), explanation=(
    "2Ψ of fp16 weights stay whole: 60 GB. The rest, 14Ψ = 420 GB, is divided by d: 60 + 420/d ≤ {gb} needs d ≥ 21, "
    "so {answer} among the widget's counts. In fp32 the weights alone take 4Ψ = 120 GB: ZeRO-2 never fits.",
    "2Ψ 的 fp16 权重不分片：60 GB。其余 14Ψ = 420 GB 除以 d：60 + 420/d ≤ {gb} 需要 d ≥ 21，"
    "控件的选项中即 {answer}。若用 fp32，仅权重就占 4Ψ = 120 GB：ZeRO-2 永远放不下。"),
    typical=[(d, ("", "")) for d in costmodel.DEVICE_COUNTS if d != ZERO2_DEVICES]))


# 07.3 — where the ring overtakes the binomial tree, p = 16, same α and β as 07.1.
def meeting_point(first, second) -> float:
    """The n where two costs linear in n, a + b n, are equal: (a₁ − a₂) / (b₂ − b₁)."""
    a1, a2 = first(0.0), second(0.0)
    b1, b2 = first(1.0) - a1, second(1.0) - a2
    return (a1 - a2) / (b2 - b1)


def crossover_bytes(p: int, alpha: float, bandwidth: float) -> float:
    """n where the ring's 2(p − 1) α + 2 (p − 1)/p · n β equals the tree's 2 ⌈log₂ p⌉ (α + n β)."""
    a, b = alpha * 1e-6, 1 / (bandwidth * 1e9)
    return meeting_point(lambda n: costmodel.ring_allreduce_time(n, p, a, b),
                         lambda n: costmodel.tree_allreduce_time(n, p, a, b))


number_exercise(
    "07.3", stated={"p": 16, "alpha": 10, "bandwidth": 10}, answer=crossover_bytes, rel=5e-3,
    wrong=[(lambda p, alpha, bandwidth: meeting_point(
                lambda n: costmodel.ring_allreduce_time(n, p, alpha * 1e-6, 1 / (bandwidth * 1e9)),
                lambda n: costmodel.tree_allreduce_time(n, p, alpha * 1e-6, 1 / (bandwidth * 1e9)) / 2),
            ("The tree reduces to the root and then broadcasts back: its ⌈log₂ p⌉ levels are crossed twice.",
             "树先归约到根，再广播回去：⌈log₂ p⌉ 层要走两遍。")),
           (lambda p, alpha, bandwidth: meeting_point(
                lambda n: 2 * (p - 1) * alpha * 1e-6 + 2 * n / (bandwidth * 1e9),
                lambda n: costmodel.tree_allreduce_time(n, p, alpha * 1e-6, 1 / (bandwidth * 1e9))),
            ("The ring sends 2 (p − 1)/p · n, not 2n.", "环发送 2 (p − 1)/p · n，而不是 2n。"))],
    hint=("Set 2(p − 1) α + 2 (p − 1)/p · n β equal to 2 ⌈log₂ p⌉ (α + n β) and solve for n (bytes).",
          "令 2(p − 1) α + 2 (p − 1)/p · n β 等于 2 ⌈log₂ p⌉ (α + n β)，解出 n（字节）。"),
    explanation=("With p = {p}: 30 α + 1.875 n β = 8 α + 8 n β gives n = 22 α / (6.125 β) ≈ {answer} bytes: below it "
                 "the tree's fewer latencies win, above it the ring's smaller bandwidth term.",
                 "p = {p} 时：30 α + 1.875 n β = 8 α + 8 n β，得 n = 22 α / (6.125 β) ≈ {answer} 字节：小于它时树的"
                 "延迟项少而胜出，大于它时环的带宽项小而胜出。"))


# 07.4 — fit α and β from measured (bytes, seconds) pairs.
FIT_CASES = [
    Case(name, (np.geomspace(4096, 64 * 2 ** 20, points).tolist(),
                synthetic_allreduce_times(a, b, p, np.geomspace(4096, 64 * 2 ** 20, points), noise=0.15,
                                          seed=seed).tolist(), p))
    for name, a, b, p, points, seed in [
        (("2 processes (loopback)", "2 个进程（本机回环）"), 50e-6, 1e-9, 2, 9, 11),
        (("3 processes (11 sizes)", "3 个进程（11 种大小）"), 20e-6, 2e-10, 3, 11, 12),
        (("8 processes (fast network)", "8 个进程（快速网络）"), 5e-6, 5e-11, 8, 10, 13),
        (("4 processes (slow network)", "4 个进程（慢速网络）"), 1e-4, 8e-9, 4, 7, 14),
    ]]


def same_fit(got: Any, expected: tuple[float, float]) -> bool:
    """(α, β) within 2 % of the reference's, each."""
    return same_values(got, expected, rtol=0.02, atol=0)


def as_rounded_pair(fit):
    """A fit's (α, β) as two plain floats to 4 significant digits, to report; anything else as it is."""
    def rounded(*args):
        got = fit(*args)
        try:
            return tuple(float(f"{float(v):.4g}") for v in got)
        except (TypeError, ValueError):
            return got
    return rounded


def _plain_least_squares(nbytes, seconds, world_size) -> tuple[float, float]:
    n, t, p = np.asarray(nbytes, dtype=float), np.asarray(seconds, dtype=float), world_size
    design = np.stack([np.full_like(n, 2 * (p - 1)), 2 * (p - 1) / p * n], axis=1)
    return tuple(np.linalg.lstsq(design, t, rcond=None)[0])


ABSOLUTE_ERROR = Probe(lambda expected, got, facts: same_values(got, _plain_least_squares(*facts["args"]), rtol=1e-3),
                       ("That is plain least squares on t: the large messages' noise swamps α. Weigh each equation "
                        "by 1/t, so that every size counts by its relative error.",
                        "这是直接对 t 做最小二乘：大消息的噪声淹没了 α。给每个方程乘以 1/t，让每个大小按相对误差计入。"))


def check_fit(fn) -> bool:
    """Your ``fn(nbytes, seconds, world_size)`` must return (α, β) as fit_alpha_beta does, to 2 %."""
    if not written_without(fn, ("fit_alpha_beta",)):
        return False
    results = run_cases(as_rounded_pair(fn), as_rounded_pair(costmodel.fit_alpha_beta), FIT_CASES)
    return report(results, same_fit, probes=(ABSOLUTE_ERROR,))


def fit_alpha_beta(nbytes, seconds, world_size):
    import numpy as np
    n, t = np.asarray(nbytes, dtype=float), np.asarray(seconds, dtype=float)
    p = world_size
    design = np.stack([np.full_like(n, 2 * (p - 1)), 2 * (p - 1) / p * n], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design / t[:, None], np.ones_like(t), rcond=None)
    return alpha, beta


register(Exercise("07.4", check_fit, solution=fit_alpha_beta, hint=(
    "The ring predicts t = 2(p − 1) α + 2 (p − 1)/p · n β, linear in α and β. Divide each equation by its measured "
    "t, so that every size counts by its relative error, and solve with np.linalg.lstsq.",
    "环的模型 t = 2(p − 1) α + 2 (p − 1)/p · n β 对 α、β 是线性的。把每个方程除以测得的 t，"
    "让每个消息大小按相对误差计入，再用 np.linalg.lstsq 求解。"), explanation=(
    "Each row of the design matrix holds the coefficients of α and β, 2(p − 1) and 2(p − 1)/p · n; dividing row "
    "and target by t minimises the relative error, so the small messages (which fix α) count as much as the "
    "large ones (which fix β). Plain least squares on t lets the large messages' noise swamp α.",
    "设计矩阵的每一行是 α 与 β 的系数 2(p − 1) 和 2(p − 1)/p · n；把每行和目标都除以 t，最小化相对误差，"
    "于是决定 α 的小消息与决定 β 的大消息同样重要。直接对 t 做最小二乘，大消息的噪声会淹没 α。")))
