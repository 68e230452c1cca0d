"""Chapter 09's PowerSGD, checked against PyTorch's own: the same model trained on the same
batches with DDP and torch's ``powerSGD_hook``, and with :class:`nnpar_lite.compression.PowerSGD`
after backward; the bytes each hands to ``all_reduce``, counted, and how far each average is
from the exact one.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as torch_powersgd
from torch.nn.parallel import DistributedDataParallel

from ...collectives import allreduce_mean_
from ...compression import PowerSGD
from ...data import digits_split
from ...models import mlp
from ...util import counting, max_abs_difference


def counting_allreduce_bytes(counter: dict):
    """While active, every ``dist.all_reduce`` in this process adds its tensor's bytes to
    ``counter["bytes"]``: how the bytes torch's PowerSGD hook sends are counted."""
    return counting(dist, "all_reduce", counter)


def _exact_average(grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The uncompressed average of this rank's gradients over all ranks (the reference)."""
    average = [g.detach().clone() for g in grads]
    allreduce_mean_(average)
    return average


def _batch(config: dict, rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's batch of a step: digits (float64) or random rows of the model's input size."""
    gen = torch.Generator().manual_seed(10_000 * step + rank)
    if config.get("data") == "digits":
        x, y, _, _ = digits_split()
        picks = torch.randint(0, len(x), (config["batch"],), generator=gen)
        return x[picks].double(), y[picks]
    sizes = config["sizes"]
    return (torch.randn(config["batch"], sizes[0], generator=gen, dtype=torch.float64),
            torch.randint(0, sizes[-1], (config["batch"],), generator=gen))


def against_powersgd_hook(rank: int, world_size: int, config: dict) -> dict:
    """The same model trained on the same batches twice in these processes: DDP with torch's
    ``powerSGD_hook``, and ours (backward, then ``PowerSGD.allreduce_`` of the gradients).
    Both average exactly for the first ``start_iter`` steps (torch's hook needs ≥ 2), then
    compress at ``matrix_rank``. Per step: the bytes each handed to ``all_reduce``, its loss
    (mean over ranks), and, unless ``check_exact`` is False, how far its averaged gradient is
    from the exact average of its ranks' gradients. ``dtype`` (default "float64"): the models'
    and the batches' dtype; in float16 and bfloat16 both orthogonalise by Gram–Schmidt."""
    dtype = getattr(torch, config.get("dtype", "float64"))
    ours = mlp(config["sizes"], seed=config.get("seed", 0), dtype=dtype)
    ddp = DistributedDataParallel(mlp(config["sizes"], seed=config.get("seed", 0), dtype=dtype))
    rate, start = config.get("min_compression_rate", 2.0), config.get("start_iter", 2)
    ddp.register_comm_hook(torch_powersgd.PowerSGDState(
        None, matrix_approximation_rank=config["matrix_rank"], start_powerSGD_iter=start, min_compression_rate=rate,
        use_error_feedback=True, warm_start=True, random_seed=config.get("seed", 0)), torch_powersgd.powerSGD_hook)
    compressor = PowerSGD(config["matrix_rank"], seed=config.get("seed", 0), min_compression_rate=rate)
    runs = {"ours": ours, "torch hook": ddp}
    opts = {name: torch.optim.SGD(m.parameters(), lr=config.get("lr", 0.1)) for name, m in runs.items()}
    report = {name: {"bytes": [], "loss": [], "vs exact": []} for name in runs}
    for step in range(config["steps"]):
        x, y = _batch(config, rank, step)
        x = x.to(dtype)
        for name, model in runs.items():
            exact_now = step < start if name == "ours" else None
            _hook_comparison_step(model, x, y, compressor if name == "ours" else None, exact_now, opts[name],
                                  report[name], config.get("check_exact", True))
    return report


def _hook_comparison_step(model, x, y, compressor, exact_now: bool | None, opt, record: dict,
                          check_exact: bool) -> None:
    """One step of one contender of :func:`against_powersgd_hook`, its all_reduce bytes counted:
    DDP (its hook runs inside backward) when ``compressor`` is None, else backward followed by
    the exact average (``exact_now``) or the compressor. ``check_exact``: also record how far
    the averaged gradient is from the exact average of the ranks' gradients."""
    params = list(model.parameters())
    if check_exact:
        plain = getattr(model, "module", model)                   # no DDP hooks for the reference
        exact = _exact_average(torch.autograd.grad(F.cross_entropy(plain(x), y), params))
    opt.zero_grad()
    loss, counter = F.cross_entropy(model(x), y), {}
    with counting_allreduce_bytes(counter):
        loss.backward()
        if compressor is not None and exact_now:
            allreduce_mean_([p.grad for p in params])
        elif compressor is not None:
            compressor.allreduce_([p.grad for p in params])
    if check_exact:
        record["vs exact"].append(max_abs_difference([p.grad for p in params], exact))
    record["bytes"].append(counter.get("bytes", 0))
    record["loss"].append(_mean_over_ranks(loss.item()))
    opt.step()


def against_powersgd_hook_runs(rank: int, world_size: int, configs: Sequence[dict]) -> list[dict]:
    """:func:`against_powersgd_hook` for several configurations in one launch."""
    return [against_powersgd_hook(rank, world_size, config) for config in configs]


def _mean_over_ranks(value: float) -> float:
    mean = torch.tensor([value], dtype=torch.float64)
    allreduce_mean_([mean])
    return float(mean)
