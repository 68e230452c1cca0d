"""Chapter 07's exercises: communication and scaling (seed 2.3 分布式计算, 2.4 GPU计算, 2.5 异构计算).

07.1 a ring all-reduce's time by the alpha-beta model; 07.2 the memory widget: the devices ZeRO-2
needs in mixed precision; 07.3 where the ring overtakes the binomial tree; 07.4 fit α and β from
measured times, checked against :func:`nnpar_lite.costmodel.fit_alpha_beta` on noisy data the
learner does not see.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import costmodel
from ..experiments.scaling import synthetic_allreduce_times
from ..widgets.scaling import DEVICE_COUNTS
from .core import Case, Exercise, check_number, register, report, run_cases


def diagnosed_number(answer: Any, expected: float, diagnoses: list[tuple[float, tuple[str, str]]],
                     hint: tuple[str, str], rel: float) -> bool:
    """:func:`check_number`, where each typical wrong value's own diagnosis comes before the hint."""
    known = {wrong: (why[0] + " " + hint[0], why[1] + " " + hint[1]) for wrong, why in diagnoses}
    return check_number(answer, expected, rel=rel, hint=hint, known=known)


def check_widget_choice(answer: Any, options, correct: float, smaller, larger, hint: tuple[str, str]) -> bool:
    """The widget offers ``options`` and ``correct`` is the one asked for; a wrong option gets what
    ``smaller(option)`` or ``larger(option)`` says of it (English, Chinese), then the hint."""
    diagnoses = [(o, smaller(o) if o < correct else larger(o)) for o in options if o != correct]
    return diagnosed_number(answer, correct, diagnoses, hint=hint, rel=1e-9)


# 07.1 — p = 16, n = 100 MB, α = 10 µs, 1/β = 10 GB/s; the answer in milliseconds.
P, NBYTES, ALPHA, BETA = 16, 100e6, 10e-6, 1 / 10e9
RING_MS = costmodel.ring_allreduce_time(NBYTES, P, ALPHA, BETA) * 1e3
register(Exercise(
    "07.1",
    lambda answer: diagnosed_number(answer, RING_MS, [
        (2 * (P - 1) * ALPHA * 1e3 + NBYTES * BETA * 1e3, (
            "That sends n once; the ring sends 2 (p − 1)/p · n, nearly 2n.", "这只发送了一次 n；环发送 2 (p − 1)/p · n，接近 2n。")),
        (2 * (P - 1) / P * NBYTES * BETA * 1e3, (
            "Each of the 2 (p − 1) steps also pays the latency α.", "2 (p − 1) 步中的每一步还要付出延迟 α。")),
        (costmodel.parameter_server_time(NBYTES, P, ALPHA, BETA) * 1e3, (
            "That is a single parameter server, not the ring.", "这是单个参数服务器，不是环。")),
    ], hint=("t = 2(p − 1) α + 2 (p − 1)/p · n β, in milliseconds.", "t = 2(p − 1) α + 2 (p − 1)/p · n β，单位毫秒。"),
        rel=2e-3),
    solution=round(RING_MS, 2),
    explanation=("2 × 15 × 10 µs = 0.3 ms of latency, plus 2 × 15/16 × 10⁸ bytes at 10 GB/s = 18.75 ms: 19.05 ms. "
                 "The bandwidth term dominates, and it hardly grows with p.",
                 "延迟：2 × 15 × 10 µs = 0.3 ms；带宽：2 × 15/16 × 10⁸ 字节、10 GB/s，即 18.75 ms；合计 19.05 ms。"
                 "带宽项占主导，且几乎不随 p 增长。")))


# 07.2 — the memory widget: mixed precision, 30 B parameters, ZeRO-2, 80 GB per device.
def model_state_gb(billions: float, devices: int, zero_stage: int) -> float:
    """GB per device of mixed-precision Adam's model states under ZeRO: what the memory widget shows."""
    return costmodel.training_memory(billions * 1e9, precision="mixed", zero_stage=zero_stage,
                                     data_parallel=devices)["total"] / 1e9


ZERO2_DEVICES = min(d for d in DEVICE_COUNTS if model_state_gb(30, d, 2) <= 80)


def check_zero2_devices(answer: Any) -> bool:
    return check_widget_choice(
        answer, DEVICE_COUNTS, ZERO2_DEVICES,
        smaller=lambda d: (f"With {d} devices ZeRO-2 still needs {model_state_gb(30, d, 2):.1f} GB per device.",
                           f"用 {d} 个设备，ZeRO-2 每个设备仍需 {model_state_gb(30, d, 2):.1f} GB。"),
        larger=lambda d: ("It fits there, but also with fewer devices.", "这样能放下，但更少的设备也能放下。"),
        hint=("ZeRO-2 shards gradients and optimizer state over the devices, but every device keeps all the 2-byte "
              "weights. Set the widget to mixed, 30 B, and read the ZeRO-2 bar.",
              "ZeRO-2 把梯度和优化器状态分片到各设备，但每个设备都保留全部 2 字节的权重。"
              "把小部件设为 mixed、30 B，看 ZeRO-2 那一条。"))


register(Exercise("07.2", check_zero2_devices, solution=ZERO2_DEVICES, explanation=(
    "2Ψ of fp16 weights stay whole: 60 GB. The rest, 14Ψ = 420 GB, is divided by d: 60 + 420/d ≤ 80 needs d ≥ 21, "
    "so 32 among the widget's counts. In fp32 the weights alone take 4Ψ = 120 GB: ZeRO-2 never fits.",
    "2Ψ 的 fp16 权重不分片：60 GB。其余 14Ψ = 420 GB 除以 d：60 + 420/d ≤ 80 需要 d ≥ 21，"
    "小部件的选项中即 32。若用 fp32，仅权重就占 4Ψ = 120 GB：ZeRO-2 永远放不下。")))


# 07.3 — where the ring overtakes the binomial tree, p = 16, same α and β as 07.1.
def crossover_bytes(world_size: int = P, alpha: float = ALPHA, beta: float = BETA) -> float:
    """n where 2(p − 1) α + 2 (p − 1)/p · n β = 2 ⌈log₂ p⌉ (α + n β)."""
    levels = (world_size - 1).bit_length()
    return (2 * (world_size - 1) - 2 * levels) * alpha / ((2 * levels - 2 * (world_size - 1) / world_size) * beta)


CROSSOVER = crossover_bytes()
register(Exercise(
    "07.3",
    lambda answer: diagnosed_number(answer, CROSSOVER, [
        (26 * ALPHA / ((4 - 30 / 16) * BETA), (
            "The tree reduces to the root and then broadcasts back: its ⌈log₂ p⌉ levels are crossed twice.",
            "树先归约到根，再广播回去：⌈log₂ p⌉ 层要走两遍。")),
        (22 * ALPHA / (6 * BETA), (
            "The ring sends 2 (p − 1)/p · n, not 2n.", "环发送 2 (p − 1)/p · n，而不是 2n。")),
    ], hint=("Set 2(p − 1) α + 2 (p − 1)/p · n β equal to 2 ⌈log₂ p⌉ (α + n β) and solve for n (bytes).",
             "令 2(p − 1) α + 2 (p − 1)/p · n β 等于 2 ⌈log₂ p⌉ (α + n β)，解出 n（字节）。"), rel=5e-3),
    solution=round(CROSSOVER),
    explanation=("30 α + 1.875 n β = 8 α + 8 n β gives n = 22 α / (6.125 β) ≈ 359,000 bytes: below it the tree's "
                 "fewer latencies win, above it the ring's smaller bandwidth term.",
                 "30 α + 1.875 n β = 8 α + 8 n β，得 n = 22 α / (6.125 β) ≈ 359,000 字节：小于它时树的延迟项少而胜出，"
                 "大于它时环的带宽项小而胜出。")))


# 07.4 — fit α and β from measured (bytes, seconds) pairs.
FIT_CASES = [
    Case(name, (np.geomspace(4096, 64 * 2 ** 20, points).tolist(),
                synthetic_allreduce_times(a, b, p, np.geomspace(4096, 64 * 2 ** 20, points), noise=0.15,
                                          seed=seed).tolist(), p))
    for name, a, b, p, points, seed in [
        ("2 processes (loopback)", 50e-6, 1e-9, 2, 9, 11),
        ("3 processes (11 sizes)", 20e-6, 2e-10, 3, 11, 12),
        ("8 processes (fast network)", 5e-6, 5e-11, 8, 10, 13),
        ("4 processes (slow network)", 1e-4, 8e-9, 4, 7, 14),
    ]]


def same_fit(got: Any, expected: tuple[float, float]) -> bool:
    try:
        alpha, beta = (float(v) for v in got)
    except (TypeError, ValueError):
        return False
    return all(math.isclose(g, e, rel_tol=0.02) for g, e in zip((alpha, beta), expected))


def as_rounded_pair(fit):
    """A fit's (α, β) as two plain floats to 4 significant digits, to report; anything else as it is."""
    def rounded(*args):
        got = fit(*args)
        try:
            return tuple(float(f"{float(v):.4g}") for v in got)
        except (TypeError, ValueError):
            return got
    return rounded


def check_fit(fn) -> bool:
    """Your ``fn(nbytes, seconds, world_size)`` must return (α, β) as fit_alpha_beta does, to 2 %."""
    results = run_cases(as_rounded_pair(fn), as_rounded_pair(costmodel.fit_alpha_beta), FIT_CASES)
    return report(results, same_fit, hint=(
        "The ring predicts t = 2(p − 1) α + 2 (p − 1)/p · n β, linear in α and β. Divide each equation by its "
        "measured t, so that every size counts by its relative error, and solve with np.linalg.lstsq.",
        "环的模型 t = 2(p − 1) α + 2 (p − 1)/p · n β 对 α、β 是线性的。把每个方程除以测得的 t，"
        "让每个消息大小按相对误差计入，再用 np.linalg.lstsq 求解。"))


def fit_alpha_beta(nbytes, seconds, world_size):
    import numpy as np
    n, t = np.asarray(nbytes, dtype=float), np.asarray(seconds, dtype=float)
    p = world_size
    design = np.stack([np.full_like(n, 2 * (p - 1)), 2 * (p - 1) / p * n], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design / t[:, None], np.ones_like(t), rcond=None)
    return alpha, beta


register(Exercise("07.4", check_fit, solution=fit_alpha_beta, explanation=(
    "Each row of the design matrix holds the coefficients of α and β, 2(p − 1) and 2(p − 1)/p · n; dividing row "
    "and target by t minimises the relative error, so the small messages (which fix α) count as much as the "
    "large ones (which fix β). Plain least squares on t lets the large messages' noise swamp α.",
    "设计矩阵的每一行是 α 与 β 的系数 2(p − 1) 和 2(p − 1)/p · n；把每行和目标都除以 t，最小化相对误差，"
    "于是决定 α 的小消息与决定 β 的大消息同样重要。直接对 t 做最小二乘，大消息的噪声会淹没 α。")))
