"""Chapter 09's timings: DataParallel's step against DDP's and against chapter 03's all-reduce
after backward, in the same processes; and one step's timeline, event by event, of backward
against the buckets' all-reduces. What they measure depends on the machine: the chapter shows
it, and asserts only the order of events.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ...data_parallel import DataParallel, allreduce_gradients
from ...models import mlp
from ...util import max_abs_difference


def time_dataparallel_against_ddp(rank: int, world_size: int, sizes=(512, 1024, 1024, 10), batch: int = 64,
                                  rounds: int = 30, bucket_mb: float = 25.0, steps_per_round: int = 5) -> dict:
    """Step times of four contenders in the same processes: chapter 03's all-reduce after
    backward, DataParallel, DDP, and DDP again (DDP against itself: the noise). Each round
    times ``steps_per_round`` steps of each, in an order drawn afresh each round (the same on
    every rank), so that all see the same machine load and none always follows the same other.
    Returns the per-round mean step times and their ratios against DDP."""
    models = {"after backward": mlp(sizes, seed=0),
              "DataParallel": DataParallel(mlp(sizes, seed=0), bucket_mb=bucket_mb),
              "DDP": DistributedDataParallel(mlp(sizes, seed=0), bucket_cap_mb=bucket_mb),
              "DDP again": DistributedDataParallel(mlp(sizes, seed=0), bucket_cap_mb=bucket_mb)}
    opts = {name: torch.optim.SGD(m.parameters(), lr=0.01) for name, m in models.items()}
    gen = torch.Generator().manual_seed(rank)
    x, y = torch.randn(batch, sizes[0], generator=gen), torch.randint(0, sizes[-1], (batch,), generator=gen)

    def steps(name: str) -> float:
        dist.barrier()
        start = time.perf_counter()
        for _ in range(steps_per_round):
            opts[name].zero_grad()
            F.cross_entropy(models[name](x), y).backward()
            if name == "after backward":
                allreduce_gradients(models[name], bucket_mb=bucket_mb)
            elif name == "DataParallel":
                models[name].finish_gradient_synchronization()
            opts[name].step()
        return (time.perf_counter() - start) / steps_per_round

    names, times = list(models), {name: [] for name in models}
    for round_ in range(rounds + 2):
        for name in np.random.default_rng(round_).permutation(names):
            elapsed = steps(name)
            if round_ >= 2:                                  # the first rounds warm up allocators and gloo
                times[name].append(elapsed)
    ratios = {name: [t / d for t, d in zip(times[name], times["DDP"])] for name in names if name != "DDP"}
    return {"parameters": sum(p.numel() for p in models["DDP"].parameters()), "times": times, "ratios": ratios,
            "max difference from DDP": max_abs_difference(models["DataParallel"].module, models["DDP"].module)}


class TimedDataParallel(DataParallel):
    """DataParallel that notes when each bucket's all-reduce leaves and when it arrives (a
    callback on its future, run by the communication thread): the timeline the chapter draws."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, int, float]] = []

    def _launch(self, bucket: int) -> None:
        self.events.append(("leaves", bucket, time.perf_counter()))
        super()._launch(bucket)
        self._works[-1].get_future().then(lambda _: self.events.append(("arrives", bucket, time.perf_counter())))


def _note_gradients(model: torch.nn.Module, events: list) -> None:
    """Note when each trainable parameter's gradient is complete (hooks registered first run first)."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(
                lambda _, name=name: events.append(("ready", name, time.perf_counter())))


def overlap_timeline(rank: int, world_size: int, sizes=(256, 512, 512, 512, 10), batch: int = 128,
                     bucket_mb: float = 1.0, steps: int = 4) -> dict:
    """One training step, timed event by event, done two ways in the same processes: chapter 03's
    all-reduce after backward (``allreduce_gradients``), and DataParallel, whose bucket
    all-reduces leave during backward. For each way, the step of median length: when each
    gradient was ready, when each bucket (or the one post-backward all-reduce) left and arrived,
    and when the step ended; seconds from the start of backward."""
    runs: dict[str, list] = {"after backward": [], "overlapped": [], "after backward events": [],
                             "overlapped events": []}
    after, inner = mlp(sizes, seed=0), mlp(sizes, seed=0)
    _note_gradients(after, runs["after backward events"])
    _note_gradients(inner, runs["overlapped events"])          # before DataParallel's hooks, so they run first
    overlapped = TimedDataParallel(inner, bucket_mb=bucket_mb)
    gen = torch.Generator().manual_seed(rank)
    x, y = torch.randn(batch, sizes[0], generator=gen), torch.randint(0, sizes[-1], (batch,), generator=gen)
    for step in range(steps + 1):
        for name in ("after backward", "overlapped") if step % 2 else ("overlapped", "after backward"):
            events = runs[name + " events"]
            events.clear()
            overlapped.events = []
            runs[name].append(_timed_step(after if name == "after backward" else overlapped, x, y, events, bucket_mb))
    result = {name: sorted(runs[name][1:], key=lambda r: r["end"])[len(runs[name][1:]) // 2] for name in
              ("after backward", "overlapped")}
    result["buckets"] = [[overlapped.params[i].numel() for i in b] for b in overlapped.buckets]
    return result


def _timed_step(model, x, y, events: list, bucket_mb: float) -> dict:
    """One step's events, in seconds from the start of backward."""
    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    dist.barrier()
    start = time.perf_counter()
    loss.backward()
    backward_end = time.perf_counter()
    if isinstance(model, TimedDataParallel):
        model.finish_gradient_synchronization()
    else:
        allreduce_gradients(model, bucket_mb=bucket_mb)
    end = time.perf_counter()
    time.sleep(0.002)                                     # let a late arrival callback note its time
    communication = list(model.events) if isinstance(model, TimedDataParallel) else \
        [("leaves", 0, backward_end), ("arrives", 0, end)]
    return {"ready": [(name, t - start) for _, name, t in events], "backward end": backward_end - start,
            "communication": [(kind, bucket, t - start) for kind, bucket, t in communication], "end": end - start}
