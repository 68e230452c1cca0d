"""Shared fixtures: every device test runs on the CPU, and on CUDA where present."""

import pytest
import torch


def _devices():
    yield pytest.param("cpu", id="cpu")
    yield pytest.param("cuda", id="cuda", marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
    ])


@pytest.fixture(params=list(_devices()))
def device(request):
    return torch.device(request.param)
