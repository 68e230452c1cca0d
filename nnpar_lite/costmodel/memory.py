"""What training holds in memory, per device: the model states (weights, gradients, optimizer
state) in fp32 or mixed precision, sharded by ZeRO, split by tensor and pipeline parallelism, and
the activations (chapters 07, 08, 12, 13); the layouts the memory calculator compares."""

from __future__ import annotations

from ..util import whole_number
from .pipeline import peak_activations


# Bytes per parameter of (weights, gradients, optimizer state). "mixed" is the ZeRO paper's
# mixed-precision training (Rajbhandari et al., SC 2020): fp16 weights and gradients, and an
# fp32 master copy of the weights beside the optimizer's fp32 state: 2Ψ + 2Ψ + KΨ, K = 12
# for Adam (master weights, momentum, variance).
PRECISIONS = {
    ("fp32", "sgd"): (4, 4, 0), ("fp32", "sgd-momentum"): (4, 4, 4), ("fp32", "adam"): (4, 4, 8),
    ("mixed", "sgd"): (2, 2, 4), ("mixed", "sgd-momentum"): (2, 2, 8), ("mixed", "adam"): (2, 2, 12),
}
# Without sequence parallelism, Megatron's tensor parallelism leaves about 10 s·b·h of a
# transformer layer's 34 s·b·h activation bytes replicated on every device (layer norms,
# dropout, residuals; Korthikanti et al. 2022, eq. 2 against eq. 1, attention scores aside).
REPLICATED_ACTIVATIONS = 10 / 34


def model_state_bytes(num_params: float, *, precision: str = "fp32", optimizer: str = "adam",
                      num_tensors: int = 0) -> dict[str, float]:
    """Bytes of weights, gradients and optimizer state of one unsplit copy: the *model states*
    (activations are extra). PyTorch's Adam adds a 4-byte step counter per parameter tensor."""
    if (precision, optimizer) not in PRECISIONS:
        raise ValueError(f"precision and optimizer must be one of {sorted(PRECISIONS)}, got {(precision, optimizer)}")
    weight, gradient, state = PRECISIONS[precision, optimizer]
    return {"parameters": weight * num_params, "gradients": gradient * num_params,
            "optimizer state": state * num_params + (4 * num_tensors if optimizer == "adam" else 0)}


def training_memory(num_params: float, *, precision: str = "fp32", optimizer: str = "adam", num_tensors: int = 0,
                    activation_bytes: float = 0.0, zero_stage: int = 0, data_parallel: int = 1,
                    tensor_parallel: int = 1, pipeline_parallel: int = 1, num_microbatches: int = 1,
                    schedule: str = "gpipe", sequence_parallel: bool = False) -> dict[str, float]:
    """Bytes per device for training a model of ``num_params`` parameters (Ψ).

    Model states (:func:`model_state_bytes`): tensor (t) and pipeline (p) parallelism split
    all three; ZeRO (Rajbhandari et al. 2020) shards them over the d data-parallel replicas,
    stage 1 the optimizer state, 2 also the gradients, 3 also the weights. ``activation_bytes``
    are those of the whole global batch on one unsplit replica, none recomputed: d replicas
    each see 1/d of the batch; p stages each keep their layers' share (to first order), and of
    the ``num_microbatches`` m a stage holds at its peak all m under ``schedule`` "gpipe" and
    min(p, m) under "1f1b" (stage 0, the fullest: :func:`peak_activations`); t devices split
    all but the replicated share unless ``sequence_parallel`` splits that too.
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    d, t = whole_number("data_parallel", data_parallel), whole_number("tensor_parallel", tensor_parallel)
    p, m = whole_number("pipeline_parallel", pipeline_parallel), whole_number("num_microbatches", num_microbatches)
    states = model_state_bytes(num_params, precision=precision, optimizer=optimizer, num_tensors=num_tensors)
    sharded_from = {"parameters": 3, "gradients": 2, "optimizer state": 1}
    memory = {part: b / (t * p) / (d if zero_stage >= sharded_from[part] else 1) for part, b in states.items()}
    replicated = 0.0 if sequence_parallel or t == 1 else REPLICATED_ACTIVATIONS
    held = peak_activations(p, m, 0, schedule) / m                  # share of the m micro-batches held at once
    memory["activations"] = activation_bytes / (d * p) * held * (replicated + (1 - replicated) / t)
    memory["total"] = sum(memory.values())
    return memory


# The memory calculator's choices: the model sizes (billions of parameters) and device counts
# its sliders offer, and the ways of splitting it compares. Chapter 07's widget draws them;
# the exercises that ask what the widget shows read them here.
MODEL_BILLIONS = (0.1, 0.3, 1, 3, 7, 13, 30, 70, 175, 405, 1000)
DEVICE_COUNTS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)


def memory_layouts(devices: int, *, activations: bool = False) -> dict[str, dict]:
    """The ways of splitting a model over ``devices`` devices that the memory figure compares,
    as keyword arguments of :func:`training_memory`."""
    layouts = {
        "1 device": dict(),
        f"data ×{devices}": dict(data_parallel=devices),
        f"ZeRO-1 ×{devices}": dict(data_parallel=devices, zero_stage=1),
        f"ZeRO-2 ×{devices}": dict(data_parallel=devices, zero_stage=2),
        f"ZeRO-3 ×{devices}": dict(data_parallel=devices, zero_stage=3),
        f"tensor ×{devices}": dict(tensor_parallel=devices),
    }
    if activations:
        layouts[f"tensor ×{devices}, sequence parallel"] = dict(tensor_parallel=devices, sequence_parallel=True)
    if devices >= 4:
        layouts[f"tensor ×2, pipeline ×2, ZeRO-1 ×{devices // 4}"] = dict(
            tensor_parallel=2, pipeline_parallel=2, data_parallel=devices // 4, zero_stage=1)
    return layouts


def memory_by_layout(num_params: float, devices: int, precision: str = "fp32",
                     activation_bytes: float = 0.0) -> dict[str, dict]:
    """:func:`training_memory` with Adam under each of :func:`memory_layouts`: the bars of the
    memory figure, by their labels."""
    return {name: training_memory(num_params, precision=precision, optimizer="adam",
                                  activation_bytes=activation_bytes, **kw)
            for name, kw in memory_layouts(devices, activations=activation_bytes > 0).items()}
