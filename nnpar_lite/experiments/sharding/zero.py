"""Chapter 08's ZeRO-1 and ZeRO-2 (:class:`nnpar_lite.sharding.ShardedOptimizer`) against AdamW in
one process and against PyTorch's ``ZeroRedundancyOptimizer``, step by step."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

from ...collectives import allreduce_mean_
from ...sharding import ShardedOptimizer
from ...util import max_abs_difference
from .reference import build_model, first_ranks, global_batches, my_part, train_unsharded, two_groups


def _step_data_parallel(model, opt, x, y, group=None) -> None:
    """One step of a replicated optimizer: local backward, gradients averaged, update."""
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    allreduce_mean_([p.grad for p in model.parameters() if p.grad is not None], group=group)
    opt.step()


def zero_against_adamw(rank: int, world_size: int, config: dict) -> dict:
    """ZeRO-1 and ZeRO-2 (ours) and PyTorch's ``ZeroRedundancyOptimizer``, each rank on its
    part of every batch, against AdamW in one process on the whole batch; the largest
    parameter difference after every step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # torch's own may warn about its internals; ours must not
        from torch.distributed.optim import ZeroRedundancyOptimizer
    group, rank, world_size = first_ranks(config, rank, world_size)
    if rank is None:
        return None
    batches = global_batches(config)
    reference = train_unsharded(build_model(config), batches, config)
    models = {name: build_model(config) for name in ("ZeRO-1", "ZeRO-2", "torch")}
    lr = config.get("lr", 1e-2)
    opts = {"ZeRO-1": ShardedOptimizer(two_groups(models["ZeRO-1"], config), torch.optim.AdamW, lr=lr, group=group),
            "ZeRO-2": ShardedOptimizer(two_groups(models["ZeRO-2"], config), torch.optim.AdamW, lr=lr, group=group,
                                       shard_gradients=True, use_ring=config.get("use_ring", False))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opts["torch"] = ZeroRedundancyOptimizer(two_groups(models["torch"], config), process_group=group,
                                                optimizer_class=torch.optim.AdamW, lr=lr)
    report: dict[str, Any] = {"ZeRO-1 vs AdamW": [], "ZeRO-2 vs ZeRO-1": [], "torch's ZeRO vs AdamW": []}
    for step, batch in enumerate(batches):
        x, y = my_part(batch, rank, world_size)
        for name in ("ZeRO-1", "ZeRO-2"):
            opts[name].zero_grad()
            F.cross_entropy(models[name](x), y).backward()
            opts[name].step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _step_data_parallel(models["torch"], opts["torch"], x, y, group)
        expected = [reference[step][n] for n, _ in models["ZeRO-1"].named_parameters()]
        report["ZeRO-1 vs AdamW"].append(max_abs_difference(list(models["ZeRO-1"].parameters()), expected))
        report["ZeRO-2 vs ZeRO-1"].append(max_abs_difference(models["ZeRO-2"], models["ZeRO-1"]))
        report["torch's ZeRO vs AdamW"].append(max_abs_difference(list(models["torch"].parameters()), expected))
    report["optimizer state elements"] = _state_elements(opts["ZeRO-1"].optim)
    return report


def _state_elements(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() for state in optimizer.state.values() for t in state.values()
               if isinstance(t, torch.Tensor) and t.dim() > 0)
