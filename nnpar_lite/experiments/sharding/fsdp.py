"""Chapter 08's FSDP (:class:`nnpar_lite.sharding.FullyShardedDataParallel`) against AdamW in one
process and against PyTorch's FSDP2 ``fully_shard`` on a gloo CPU mesh; in mixed precision
against the same recipe in one process; the bytes of weights a rank holds after each step."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ...sharding import FullyShardedDataParallel, gather_full_params
from ...util import max_abs_difference
from .reference import build_model, first_ranks, global_batches, make_optimizer, my_part, train_unsharded, two_groups


def fsdp_against_unsharded(rank: int, world_size: int, config: dict) -> dict:
    """FSDP (ours) in float32 against AdamW in one process on the whole batch and against
    PyTorch's FSDP2 ``fully_shard`` on a gloo CPU mesh; FSDP with ``config["compute_dtype"]``
    against the same mixed-precision recipe in one process. After every step: the largest
    parameter difference, and the bytes of weights this rank holds (shards, gathered)."""
    group, rank, world_size = first_ranks(config, rank, world_size)
    if rank is None:
        return None
    config = dict(config, groups=1)
    batches = global_batches(config)
    reference = train_unsharded(build_model(config), batches, config)
    select = (lambda m: isinstance(m, torch.nn.Linear)) if config.get("model") == "layernorm" else None
    ours = FullyShardedDataParallel(build_model(config), use_ring=config.get("use_ring", False), shard_module=select,
                                    group=group)
    torch_fsdp = _fully_shard(build_model(config), world_size, group)
    report = {"FSDP vs AdamW": [], "FSDP2 vs AdamW": [], "FSDP vs FSDP2": [], "held weight bytes": [],
              "gathered bytes": [], "1/N of the weights, padded": _padded_share(ours)}
    models = {"ours": ours, "torch": torch_fsdp}
    opts = {name: torch.optim.AdamW(two_groups(m, config), lr=config.get("lr", 1e-2)) for name, m in models.items()}
    for step, batch in enumerate(batches):
        x, y = my_part(batch, rank, world_size)
        for name, model in models.items():
            opts[name].zero_grad()
            F.cross_entropy(model(x), y).backward()
            if name == "ours":
                model.finish_gradient_synchronization()
            opts[name].step()
        full, fsdp2 = gather_full_params(ours), _fsdp2_full(torch_fsdp)
        expected = reference[step]
        report["FSDP vs AdamW"].append(max_abs_difference(full, [expected[n] for n in full]))
        report["FSDP2 vs AdamW"].append(max_abs_difference(fsdp2, [expected[n] for n in fsdp2]))
        report["FSDP vs FSDP2"].append(max_abs_difference(full, [fsdp2[n] for n in full]))
        report["held weight bytes"].append(sum(p.numel() * p.element_size() for p in ours.shards))
        report["gathered bytes"].append(ours.gathered_bytes())
    if config.get("compute_dtype") is not None:
        report.update(_mixed_precision_against_unsharded(rank, world_size, config, batches, group))
    return report


def _padded_share(model: FullyShardedDataParallel) -> int:
    """Bytes of this rank's 1/N of the sharded weights with the padding: Σ_units S·4."""
    return sum(u.size * u.shard.element_size() for u in model.units)


def _fully_shard(model: torch.nn.Module, world_size: int, group=None) -> torch.nn.Module:
    """PyTorch's FSDP2 on a CPU mesh of the group, the whole model one FSDP group (FSDP2 asks
    a tied weight's modules to share one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh("cpu", (world_size,)) if group is None else DeviceMesh.from_group(group, "cpu")
        return fully_shard(model, mesh=mesh)


def _fsdp2_full(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {n: p.full_tensor().clone() for n, p in model.named_parameters()}


def _mixed_precision_against_unsharded(rank: int, world_size: int, config: dict, batches: list, group) -> dict:
    config = dict(config, optimizer="sgd", lr=0.1)
    dtype = getattr(torch, config["compute_dtype"])
    reference = train_unsharded(build_model(config), batches, config, compute_dtype=dtype)
    ours = FullyShardedDataParallel(build_model(config), compute_dtype=dtype, group=group)
    opt = make_optimizer(two_groups(ours, config), config)
    report = {f"FSDP {config['compute_dtype']} vs one process {config['compute_dtype']}": [], "master dtypes": set()}
    for step, batch in enumerate(batches):
        x, y = my_part(batch, rank, world_size)
        opt.zero_grad()
        F.cross_entropy(ours(x), y).backward()
        ours.finish_gradient_synchronization()
        opt.step()
        full = gather_full_params(ours)
        report[f"FSDP {config['compute_dtype']} vs one process {config['compute_dtype']}"].append(
            max_abs_difference(full, [reference[step][n] for n in full]))
        report["master dtypes"] |= {str(t.dtype) for p in ours.parameters() for t in
                                    [p, p.grad, *opt.state[p].values()] if isinstance(t, torch.Tensor)}
    return report
