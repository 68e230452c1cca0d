"""Chapter 09's first check: DataParallel (buckets all-reduced during backward) trains side by
side with PyTorch's DDP, whose buckets a communication hook records, and with one process on
all rows; uneven shards, accumulated micro-batches, frozen and tied parameters, buffers.

The algorithm is :class:`nnpar_lite.data_parallel.DataParallel`; here is only what runs and
compares it.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from ...collectives import flatten
from ...data_parallel import DataParallel
from ...util import max_abs_difference


def _spread_across_ranks(tensor: torch.Tensor) -> float:
    """The largest difference between this rank's tensor and any other rank's."""
    copies = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(copies, tensor)
    return max(float((c - tensor).abs().max()) for c in copies)


def _micro_batches(config: dict, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same ``micro_steps`` global batches of Σ shard_sizes random rows on every rank."""
    gen = torch.Generator().manual_seed(1000 * config.get("seed", 0) + step)
    n, (inputs, classes) = sum(config["shard_sizes"]), config.get("io", (10, 5))
    return [(torch.randn(n, inputs, generator=gen), torch.randint(0, classes, (n,), generator=gen))
            for _ in range(config.get("micro_steps", 1))]


def _three_models(rank: int, config: dict) -> dict[str, torch.nn.Module]:
    """DataParallel and DDP built from this rank's own seed (they broadcast rank 0's θ), and the
    single-process reference built from rank 0's seed."""
    def build(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return config["make_model"]()

    bucket_mb = config.get("bucket_mb", 25.0)
    return {"ours": DataParallel(build(100 + rank), bucket_mb=bucket_mb),
            "ddp": DistributedDataParallel(build(100 + rank), bucket_cap_mb=bucket_mb),
            "reference": build(100)}


def record_ddp_buckets(ddp, record: list) -> None:
    """Register a communication hook on ``ddp`` that does what DDP does by default (divide the
    bucket by K, all-reduce it) and appends to ``record`` each bucket it is handed: DDP's real
    buckets, as lists of indices into its trainable parameters, in the order of
    ``GradBucket.index()``. torch 2.13 reports its buckets nowhere else."""
    index = {id(p): i for i, p in enumerate(p for p in ddp.module.parameters() if p.requires_grad)}

    def hook(state, bucket):
        record.append((bucket.index(), [index[id(p)] for p in bucket.parameters()]))
        return default_hooks.allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, hook)


def _buckets_of_one_step(record: list) -> list[list[int]]:
    """The buckets one synchronised backward handed to the hook, in bucket order; the record emptied."""
    buckets = [indices for _, indices in sorted(record)]
    record.clear()
    return buckets


def compare_with_ddp(rank: int, world_size: int, configs: Sequence[dict]) -> list[dict]:
    """For each configuration, DataParallel, DDP and one process on all rows train side by side
    (the pattern of CS336's DDP tests).

    ``make_model`` builds the model (a picklable callable); every rank builds it from its own
    seed, so the ranks start different until DataParallel and DDP broadcast rank 0's θ. Each
    step takes ``micro_steps`` micro-batches, accumulated under ``no_sync`` by both; rank r's
    rows are its slice of ``shard_sizes`` (uneven allowed). The local loss is the sum over the
    local rows times K / (N · micro_steps): averaged over ranks and summed over micro-steps it is
    the mean over all rows of all micro-batches, the reference's loss. Returns, per step, the
    largest parameter difference from DDP and from the reference, the largest buffer difference
    from DDP, and the buckets DDP handed its communication hook (:func:`record_ddp_buckets`);
    DataParallel's buckets at the end, and the checks around them."""
    return [_compare_one(rank, world_size, config) for config in configs]


def _compare_one(rank: int, world_size: int, config: dict) -> dict:
    models = _three_models(rank, config)
    ours, ddp, reference = models["ours"], models["ddp"], models["reference"]
    report = {"broadcast spread": _spread_across_ranks(flatten(list(ours.module.parameters()))),
              "vs rank 0's model": max_abs_difference(ours.module, reference), "vs_ddp": [], "vs_reference": [],
              "buffers vs_ddp": [], "ddp buckets": []}
    ddp_buckets: list = []
    record_ddp_buckets(ddp, ddp_buckets)
    fixed = {n: p.detach().clone() for n, p in ours.module.named_parameters() if not p.requires_grad}
    opts = {key: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=config.get("lr", 0.1))
            for key, m in models.items()}
    k, sizes = config.get("micro_steps", 1), config["shard_sizes"]
    rows, scale = slice(sum(sizes[:rank]), sum(sizes[:rank + 1])), world_size / (sum(sizes) * k)
    for step in range(config["steps"]):
        batches = _micro_batches(config, step)
        for opt in opts.values():
            opt.zero_grad(set_to_none=step % 2 == 0)                  # both ways of zeroing
        for micro, (x, y) in enumerate(batches):
            for model in (ours, ddp):                                 # accumulate, then average once
                with contextlib.nullcontext() if micro == k - 1 else model.no_sync():
                    (scale * F.cross_entropy(model(x[rows]), y[rows], reduction="sum")).backward()
        ours.finish_gradient_synchronization()
        F.cross_entropy(reference(torch.cat([b[0] for b in batches])), torch.cat([b[1] for b in batches])).backward()
        for opt in opts.values():
            opt.step()
        report["vs_ddp"].append(max_abs_difference(ours.module, ddp.module))
        report["buffers vs_ddp"].append(max_abs_difference(list(ours.module.buffers()), list(ddp.module.buffers())))
        report["vs_reference"].append(max_abs_difference(ours.module, reference))
        report["ddp buckets"].append(_buckets_of_one_step(ddp_buckets))
    report["final spread"] = _spread_across_ranks(flatten(list(ours.module.parameters())))
    report["buckets"] = ours.buckets                                  # planned again after the first step
    report["frozen moved"] = max((float((p - fixed[n]).abs().max()) for n, p in ours.module.named_parameters()
                                  if not p.requires_grad), default=0.0)
    return report
