"""Chapter 13's exercise checks, proven: the solution passes, typical wrong answers fail with
the hint that names their mistake."""

import pytest

from nnpar_lite import costmodel
from nnpar_lite.exercises import outlook


def budget_sharding_everything(device_bytes, devices, zero_stage, precision):
    """Divides all 16 bytes by the devices at every stage, as if each were ZeRO-3."""
    per_parameter = (16 / devices) if zero_stage else 16
    return int(device_bytes // per_parameter)


def budget_without_master_weights(device_bytes, devices, zero_stage, precision):
    """Mixed precision counted 2 + 2 + 8: Adam's fp32 master copy of the weights forgotten."""
    w, g, s = {"fp32": (4, 4, 8), "mixed": (2, 2, 8)}[precision]
    per_parameter = w / (devices if zero_stage >= 3 else 1) + g / (devices if zero_stage >= 2 else 1) \
        + s / (devices if zero_stage >= 1 else 1)
    return int(device_bytes // per_parameter)


def budget_in_bytes_per_device(device_bytes, devices, zero_stage, precision):
    """Returns the budget per parameter instead of the parameter count."""
    return device_bytes / 16


WRONG_ANSWERS = {
    "13.1": [(12, "optimizer's share alone"), (4, "fp16 weights and gradients alone"), (20, "count them once")],
    "13.2": [(405, "needs 101.2 GB"), (70, "a larger one does too"), ("175 B", "not a number"),
             (200, "not one of the widget's values")],
    "13.3": [(budget_sharding_everything, "expected"), (budget_without_master_weights, "expected"),
             (budget_in_bytes_per_device, "expected")],
}



def test_the_answers_agree_with_the_zero_paper_and_the_calculator():
    assert outlook.MIXED_ADAM == 16                                       # 2Ψ + 2Ψ + 12Ψ
    assert outlook.LARGEST_ZERO3 == 175
    for case in outlook.BUDGET_CASES:
        device_bytes, devices, stage, precision = case.args
        largest = outlook.largest_model(*case.args)
        memory = [costmodel.training_memory(n, precision=precision, zero_stage=stage, data_parallel=devices)["total"]
                  for n in (largest, largest + 1)]
        assert memory[0] <= device_bytes * (1 + 1e-12) and memory[1] > device_bytes * (1 - 1e-12), case.name


def test_the_budget_cases_cover_one_device_uneven_counts_and_every_stage():
    args = [case.args for case in outlook.BUDGET_CASES]
    assert {a[1] for a in args} >= {1, 3, 64} and {a[2] for a in args} == {0, 1, 2, 3}
    assert {a[3] for a in args} == {"fp32", "mixed"}
