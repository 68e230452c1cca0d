"""Which device runs the work, how to wait for it, and how to move trees onto it.

The same code runs on a laptop CPU and on a GPU: chapters call
:func:`pick_device` once and pass the result along.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
import torch

from .trees import leaves_with_paths, rebuild


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else the CPU; ``prefer`` ("cpu", "cuda", "cuda:1") overrides.

    Asking for CUDA on a machine without it raises ``ValueError`` rather than
    silently running on the CPU.
    """
    if prefer is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(prefer)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {prefer!r} was asked for, but torch sees no CUDA device here")
    return device


def available_devices() -> list[torch.device]:
    """Every device kind this machine can run the formulas on: the CPU, and CUDA if present."""
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


def synchronize(device: str | torch.device | None = None) -> None:
    """Wait until the device has finished its queued work (a no-op on the CPU).

    GPU kernels run asynchronously: time a GPU operation only between two calls
    of this, or the clock stops before the work does.
    """
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(tree: Any, device: str | torch.device) -> Any:
    """The tree with every leaf as a torch tensor on ``device`` (numpy arrays converted)."""
    device = torch.device(device)
    leaves = [torch.as_tensor(x).to(device) for _, x in leaves_with_paths(tree)]
    return rebuild(tree, leaves)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict[str, Any]:
    """What a chapter runs on: processor, cores, torch, numpy and the GPU if any."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu": _cpu_name(),
        "cores (usable)": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "device": str(pick_device()),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    return info
