"""Chapter 08's memory and traffic: the bytes each rank keeps alive after one step of each ZeRO
stage, by kind, counted from the tensors themselves; the elements it sends, counted at every
``isend``; the memory calculator's prediction for the same run, and the table that sets the
two side by side with whether they agree."""

from __future__ import annotations

import gc

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ... import costmodel
from ...collectives import allreduce_mean_
from ...models import mlp, mlp_parameters
from ...sharding import FullyShardedDataParallel, ShardedOptimizer
from ...util import counting
from .reference import first_ranks, my_part

PARTS = ("parameters", "gradients", "optimizer state")
MEMORY_SIZES = (64, 48, 12)   # every tensor a multiple of 12 elements: 2, 3 and 4 ranks each get exactly 1/N


def alive_tensors() -> list[torch.Tensor]:
    """Every tensor the Python side of this process holds now, and their gradients."""
    found = [o for o in gc.get_objects() if issubclass(type(o), torch.Tensor)]
    return found + [t.grad for t in found if t.grad is not None]


def storage_bytes(tensors: list) -> dict[int, int]:
    """{address: bytes} of the memory behind the tensors, each block once (views share it)."""
    blocks = {}
    for t in tensors:
        if t is not None and t.untyped_storage().nbytes():
            blocks[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return blocks


def held_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, before: list[torch.Tensor] | None) -> dict:
    """The bytes this rank keeps alive, by kind: the parameters (for FSDP, the shards and any
    gathered weights), their gradients, the optimizer's state; and "other", every tensor
    alive now that was not alive in ``before`` and is none of these (0 when nothing hides;
    None when ``before`` is None: the census of every tensor takes a tenth of a second)."""
    local = optimizer.optim if isinstance(optimizer, ShardedOptimizer) else optimizer
    params = list(model.parameters())
    gathered = [t for u in getattr(model, "units", []) for t in (u.full, u.cache)]
    kinds = {"parameters": storage_bytes(params + gathered),
             "gradients": storage_bytes([p.grad for p in params] + [c.grad for g in local.param_groups
                                                                    for c in g["params"]]),
             "optimizer state": storage_bytes([t for s in local.state.values() for t in s.values()
                                               if isinstance(t, torch.Tensor)])}
    held = {kind: sum(blocks.values()) for kind, blocks in kinds.items()}
    if before is None:
        return {**held, "other": None, "total": sum(held.values())}
    known = set(storage_bytes(before)) | {a for blocks in kinds.values() for a in blocks}
    other = sum(n for a, n in storage_bytes(alive_tensors()).items() if a not in known)
    return {**held, "other": other, "total": sum(held.values()) + other}


def counting_sends():
    """Count what this process sends with ``dist.isend`` (the rings' only way to send):
    ``{"elements": …, "bytes": …}``, filled while the block runs."""
    return counting(dist, "isend", {"elements": 0, "bytes": 0})


def _stage_setup(stage: int, sizes: tuple, compute_dtype: str | None, group=None):
    """The model, its optimizer (Adam, as the ZeRO paper counts) and one training step, for a
    ZeRO stage over ``group``; every collective on this module's rings, so that
    counting_sends sees it all."""
    model = mlp(sizes, seed=0)
    if stage == 3:
        model = FullyShardedDataParallel(model, use_ring=True, group=group,
                                         compute_dtype=getattr(torch, compute_dtype) if compute_dtype else None)
    if stage in (1, 2):
        opt = ShardedOptimizer(model.parameters(), torch.optim.AdamW, lr=1e-3, shard_gradients=stage == 2,
                               use_ring=True, group=group)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if stage == 0:
            allreduce_mean_([p.grad for p in model.parameters()], use_ring=True, group=group)
        if stage == 3:
            model.finish_gradient_synchronization()
        opt.step()
    return model, opt, step


def memory_and_traffic(rank: int, world_size: int, runs: list[dict]) -> list[dict]:
    """For each run (``stage`` 0–3, ``sizes`` of an MLP, optional ``compute_dtype``, optional
    ``N`` < world size: the run uses ranks 0 … N−1 only, as a process group): one training
    step on this rank's part of a batch of 12; the elements it sent; the bytes it holds after
    the step (:func:`held_bytes`); the calculator's prediction for the same Ψ, stage, N and
    precision; with ``trace``, the FSDP step's events. A rank outside a run's group skips it."""
    sizes = sorted({run.get("N", world_size) for run in runs})
    groups = {n: first_ranks({"N": n}, rank, world_size)[0] for n in sizes}      # every rank must make them
    return [_measure(run, rank, run.get("N", world_size), groups[run.get("N", world_size)]) for run in runs
            if rank < run.get("N", world_size)]


def _measure(run: dict, rank: int, n: int, group) -> dict:
    stage, sizes, dtype = run["stage"], tuple(run["sizes"]), run.get("compute_dtype")
    gen = torch.Generator().manual_seed(2)
    x, y = my_part((torch.randn(12, sizes[0], generator=gen), torch.randint(0, sizes[-1], (12,), generator=gen)),
                   rank, n)
    before = None
    if run.get("census", True):
        gc.collect()                   # garbage of earlier runs would count as "other"
        before = alive_tensors()
    model, opt, step = _stage_setup(stage, sizes, dtype, group)
    if run.get("trace"):
        model.trace = []
    with counting_sends() as sent:
        step(x, y)
    return {"stage": stage, "N": n, "sizes": sizes, "compute dtype": dtype, "held": held_bytes(model, opt, before),
            "elements sent": sent["elements"], "trace": getattr(model, "trace", None),
            "predicted": _predicted(stage, sizes, dtype, n, opt, group)}


def _predicted(stage: int, sizes: tuple, dtype: str | None, world_size: int, opt: torch.optim.Optimizer,
               group=None) -> dict:
    """costmodel.training_memory for this run. Its ``num_tensors`` counts Adam's 4-byte step
    counters: one per tensor the optimizer updates, on one rank when nothing is sharded, on
    all N ranks together when the state is (it then divides them by N)."""
    local = opt.optim if isinstance(opt, ShardedOptimizer) else opt
    counters = torch.tensor([float(sum(len(g["params"]) for g in local.param_groups))])
    if stage > 0:
        dist.all_reduce(counters, group=group)
    return costmodel.training_memory(mlp_parameters(sizes), precision="mixed" if dtype else "fp32", optimizer="adam",
                                     num_tensors=int(counters.item()), zero_stage=stage, data_parallel=world_size)


def memory_table(rows: list[dict]) -> list[dict]:
    """The measured rows (:func:`memory_and_traffic`) as the chapter prints and draws them: stage,
    N, what the rank holds (by kind and in total) and the calculator's total, and whether they
    agree (every part and the total in fp32; the total when the compute dtype is another)."""
    table = []
    for row in rows:
        held, predicted = row["held"], row["predicted"]
        mixed = row["compute dtype"] is not None
        same_parts = mixed or all(held[p] == predicted[p] for p in PARTS)
        table.append({"stage": row["stage"], "N": row["N"], "precision": "fp16 compute" if mixed else "fp32",
                      **{p: held[p] for p in PARTS}, "other": held["other"], "measured": held["total"],
                      "predicted": predicted["total"], "agree": same_parts and held["total"] == predicted["total"]})
    return table
