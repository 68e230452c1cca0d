"""Chapter 12's runs and measurements: the program of :mod:`nnpar_lite.train_gpt` started on real
processes (by ``nnpar_lite.distributed.launch``, or by ``torchrun`` as the learner would, on one
"node" or two), and what one rank of the mesh holds and sends, measured, for ``--report``.

Measured, not predicted: the bytes behind the stage's parameters, gradients and optimizer
state (:func:`nnpar_lite.experiments.sharding.held_bytes`); the floating-point tensors autograd
saves for backward, at their peak during a step (:func:`saved_activations`); and the bytes of
every collective and send (:func:`nnpar_lite.collectives.count_communication`), sorted by the
group they ran in (:func:`bytes_by_dimension`). The prediction is :mod:`nnpar_lite.rank_budget`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

from .. import rank_budget
from ..collectives import count_communication
from ..distributed import free_port
from ..mesh import Mesh
from .sharding import held_bytes

DIMENSIONS = ("dp", "pp", "tp", "embedding")


# ------------------------------------------------------------------ measuring one rank
class _Saved:
    """A tensor autograd saved, counted while autograd keeps it (until its backward ran)."""

    def __init__(self, tensor: torch.Tensor, counter: dict):
        self.tensor, self.counter = tensor, counter
        self.key = tensor.untyped_storage().data_ptr()
        users = counter["users"]
        if users.get(self.key, 0) == 0:                   # each block of memory once (views share it)
            counter["now"] += tensor.untyped_storage().nbytes()
            counter["peak"] = max(counter["peak"], counter["now"])
        users[self.key] = users.get(self.key, 0) + 1
        self.nbytes = tensor.untyped_storage().nbytes()

    def __del__(self):
        users = self.counter["users"]
        users[self.key] -= 1
        if users[self.key] == 0:
            del users[self.key]
            self.counter["now"] -= self.nbytes


@contextlib.contextmanager
def saved_activations(params: Sequence[torch.Tensor]) -> Iterator[dict]:
    """Within the block, the bytes of floating-point tensors autograd holds for backward, now
    and at the peak ({"now", "peak"}): parameters, integer inputs and targets left out."""
    weights = {p.untyped_storage().data_ptr() for p in params}
    counter = {"now": 0, "peak": 0, "users": {}}

    def pack(tensor):
        if not tensor.is_floating_point() or tensor.untyped_storage().data_ptr() in weights:
            return tensor
        return _Saved(tensor, counter)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: getattr(saved, "tensor", saved)):
        yield counter


def dimension_of(entry: dict, mesh: Mesh, rank: int) -> str:
    """Which dimension a logged collective or send belongs to: a send is the pipeline's; a
    collective's group names its dimension (tp, dp, or the tied embedding's first and last stage)."""
    if entry["op"] == "send":
        return "pp"
    for dimension in ("tp", "dp", "embedding"):
        if list(entry["group"]) == mesh.group_of(rank, dimension):
            return dimension
    return "other"


def bytes_by_dimension(log: list[dict], mesh: Mesh, rank: int) -> dict[str, float]:
    """Bytes this rank sent, summed per dimension, from :func:`count_communication`'s log."""
    sent = dict.fromkeys(DIMENSIONS + ("other",), 0.0)
    for entry in log:
        sent[dimension_of(entry, mesh, rank)] += entry["sent"]
    return sent


def measured_step(trainer, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, float | None]:
    """One training step of ``trainer`` (a :class:`nnpar_lite.train_gpt.MeshTrainer`), with what it
    sent by dimension and the peak of its saved activations; and the step's loss."""
    with count_communication() as log, saved_activations(list(trainer.stage.parameters())) as held:
        loss = trainer.step(x, y)
    return {"sent": bytes_by_dimension(log, trainer.mesh, dist.get_rank()), "activations": held["peak"]}, loss


def held_after_step(trainer) -> dict[str, int]:
    """Bytes of the stage's parameters, gradients and optimizer state, after a step."""
    held = held_bytes(trainer.stage, trainer.optimizer, None)
    return {kind: held[kind] for kind in ("parameters", "gradients", "optimizer state")}


def gather_report(report: dict | None, args, mesh: Mesh, config, rank: int) -> list[dict]:
    """Every rank's measured and predicted memory and bytes sent, in rank order, on every rank."""
    kw = dict(global_batch=args.batch, zero=args.zero)
    mine = {"rank": rank, **mesh.coordinates(rank),
            "measured": {"memory": {**report["held"], "activations": report["activations"]},
                         "sent": report["sent"]},
            "predicted": {"memory": rank_budget.predicted_memory(config, mesh, rank, micro_batches=args.micro_batches,
                                                                 optimizer=args.optimizer, **kw),
                          "sent": rank_budget.predicted_bytes_sent(config, mesh, rank, **kw)}}
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return everyone


def report_table(rows: list[dict]) -> str:
    """One line per rank and quantity: predicted, measured, and whether they agree."""
    lines = [f"{'rank':>4} {'(dp,pp,tp)':>10}  {'what':<24}{'predicted':>12}{'measured':>12}"]
    for row in rows:
        where = f"({row['dp']},{row['pp']},{row['tp']})"
        for part in ("memory", "sent"):
            for kind, predicted in row["predicted"][part].items():
                measured = row["measured"][part][kind]
                label = kind if part == "memory" else f"sent in {kind}"
                mark = "✔" if predicted == measured else "✘"
                lines.append(f"{row['rank']:>4} {where:>10}  {label:<24}{predicted:>12,.0f}{measured:>12,.0f} {mark}")
    return "\n".join(lines)
