"""Chapter 13's exercises: outlook (seed 5 未来发展趋势与挑战, 5.3 数据和模型大小的增长).

13.1 the bytes per parameter of mixed-precision Adam; 13.2 the memory widget: the largest model
ZeRO-3 fits on 64 devices; 13.3 a memory budget, the largest model whose model states fit,
checked against :func:`nnpar_lite.costmodel.training_memory` on cases the learner does not see.
"""

from __future__ import annotations

import math
from typing import Any

from .. import costmodel
from .core import (Case, Exercise, as_number, check_widget_choice, model_state_gb, number_exercise, register, report,
                   run_cases)

MIXED_ADAM = number_exercise(
    "13.1", stated={}, rel=1e-9,
    answer=lambda: sum(costmodel.model_state_bytes(1, precision="mixed", optimizer="adam").values()),
    wrong=[(lambda: costmodel.PRECISIONS["mixed", "adam"][2], ("12 is the optimizer's share alone (K = 12).",
                                                               "12 只是优化器的部分（K = 12）。")),
           (lambda: sum(costmodel.PRECISIONS["mixed", "adam"][:2]), ("4 bytes are the fp16 weights and gradients "
                                                                     "alone.",
                                                                     "4 字节只是 fp16 的权重和梯度。")),
           (lambda: sum(costmodel.PRECISIONS["mixed", "adam"]) + 4, ("The fp32 master weights are already inside "
                                                                     "K = 12: count them once.",
                                                                     "fp32 主权重已包含在 K = 12 之中：只算一次。"))],
    hint=("Weights and gradients in fp16, and Adam's state in fp32: a master copy of the weights, the momentum and "
          "the variance.", "权重和梯度用 fp16，Adam 的状态用 fp32：一份主权重、动量和方差。"),
    explanation=("2 (fp16 weights) + 2 (fp16 gradients) + 12 (fp32 master weights, momentum, variance) = 16 bytes: "
                 "the same total as fp32 Adam's 4 + 4 + 8, split differently, which is why ZeRO-1 and -2 save more "
                 "in mixed precision.",
                 "2（fp16 权重）+ 2（fp16 梯度）+ 12（fp32 主权重、动量、方差）= 16 字节：与 fp32 Adam 的 "
                 "4 + 4 + 8 总数相同，只是分配不同，所以 ZeRO-1、ZeRO-2 在混合精度下省得更多。")).solution


# 13.2 — the memory widget: the largest of its model sizes whose ZeRO-3 model states fit on 64 devices.
STATED_13_2 = {"devices": 64, "gb": 80}


def largest_zero3(devices: int, gb: float) -> float:
    """The largest of the widget's model sizes (billions) whose mixed-precision ZeRO-3 bar fits."""
    return max(b for b in costmodel.MODEL_BILLIONS if model_state_gb(b, devices, 3) <= gb)


LARGEST_ZERO3 = largest_zero3(**STATED_13_2)


def check_largest_zero3(answer: Any) -> bool:
    return check_widget_choice(
        answer, costmodel.MODEL_BILLIONS, LARGEST_ZERO3,
        smaller=lambda b: (f"{b:g} B fits ({model_state_gb(b, 64, 3):.1f} GB per device), but a larger one does too.",
                           f"{b:g} B 能放下（每个设备 {model_state_gb(b, 64, 3):.1f} GB），但更大的也能。"),
        larger=lambda b: (f"{b:g} B needs {model_state_gb(b, 64, 3):.1f} GB per device.",
                          f"{b:g} B 每个设备需要 {model_state_gb(b, 64, 3):.1f} GB。"))


register(Exercise("13.2", check_largest_zero3, solution=LARGEST_ZERO3, stated=STATED_13_2, hint=(
    "Answer in billions of parameters, one of the widget's sizes. Set mixed precision and 64 devices, move the model "
    "size and read the ZeRO-3 bar against the 80 GB line: ZeRO-3 divides all 16 bytes per parameter by the devices.",
    "以十亿参数为单位，填控件提供的一个规模。设为混合精度、64 个设备，移动模型规模，对照 80 GB 的线看 ZeRO-3 "
    "那一条：ZeRO-3 把每个参数的全部 16 字节分到各设备上。"), explanation=(
    "16 Ψ / {devices} ≤ {gb} GB allows Ψ up to 320 B parameters: {answer} B among the widget's sizes; the next one "
    "does not fit. Activations come on top.",
    "16 Ψ / {devices} ≤ {gb} GB 允许 Ψ 最多 3200 亿参数：控件的规模中即 {answer} B；再大一档就放不下。"
    "激活值还要另算。"), typical=[(b, ("", "")) for b in costmodel.MODEL_BILLIONS if b != LARGEST_ZERO3]))


# 13.3 — a memory budget: the largest model whose model states fit.
PRECISION_ZH = {"fp32": "fp32", "mixed": "混合精度"}
BUDGET_CASES = [Case((f"ZeRO-{z} {prec} on {d} device{'s' if d > 1 else ''} of {gb:g} GB",
                      f"ZeRO-{z}，{PRECISION_ZH[prec]}，{d} 个 {gb:g} GB 的设备"), (gb * 1e9, d, z, prec))
                for gb, d, z, prec in [(80, 1, 0, "fp32"), (80, 64, 1, "mixed"), (80, 64, 2, "mixed"),
                                       (80, 64, 3, "mixed"), (24, 3, 2, "fp32"), (40, 8, 1, "fp32"),
                                       (80, 1024, 3, "mixed"), (16, 1, 3, "mixed")]]


def budget_reference(device_bytes: float, devices: int, zero_stage: int, precision: str) -> int:
    """The calculator's answer: bytes per parameter per device from training_memory, then divide."""
    per_parameter = costmodel.training_memory(1, precision=precision, optimizer="adam", zero_stage=zero_stage,
                                              data_parallel=devices)["total"]
    return math.floor(device_bytes / per_parameter)


def same_count(got: Any, expected: int) -> bool:
    """A number of parameters within one of ``expected`` (the floor of a division may round either way)."""
    value = as_number(got)
    return value is not None and abs(value - expected) <= max(1.0, 1e-9 * expected)


def check_budget(fn) -> bool:
    """Your ``fn(device_bytes, devices, zero_stage, precision)`` must return the largest number of
    parameters whose Adam model states fit in ``device_bytes`` per device."""
    return report(run_cases(fn, budget_reference, BUDGET_CASES), same_count)


def largest_model(device_bytes, devices, zero_stage, precision):
    weights, gradients, optimizer_state = {"fp32": (4, 4, 8), "mixed": (2, 2, 12)}[precision]
    per_parameter = (weights / (devices if zero_stage >= 3 else 1)
                     + gradients / (devices if zero_stage >= 2 else 1)
                     + optimizer_state / (devices if zero_stage >= 1 else 1))
    return int(device_bytes // per_parameter)


register(Exercise("13.3", check_budget, solution=largest_model, hint=(
    "Bytes per parameter (weights, gradients, Adam's state): fp32 4, 4, 8; mixed 2, 2, 12. ZeRO-1 divides the "
    "optimizer state by the devices, ZeRO-2 the gradients too, ZeRO-3 the weights too. Then divide the budget.",
    "每个参数的字节数（权重、梯度、Adam 状态）：fp32 为 4、4、8；混合精度为 2、2、12。ZeRO-1 把优化器状态除以"
    "设备数，ZeRO-2 还有梯度，ZeRO-3 还有权重。再用预算去除。"), explanation=(
    "Each stage shards one more part: the bytes one parameter costs on one device fall from 16 towards 16/d; the "
    "budget divided by them is the largest model. Activations, buffers and the allocator's slack come on top, so "
    "a real run keeps a margin.",
    "每个阶段多分片一部分：一个参数在一个设备上占的字节数从 16 降向 16/d；预算除以它就是最大的模型。"
    "激活值、缓冲区和分配器的余量还要另算，所以实际训练要留出余地。")))
