"""Pipeline parallelism: the model's layers cut into p stages, one per worker.

What crosses between workers are activations (forward) and their gradients
(backward), not parameters: each stage owns different parameters, so the
article's θ = 1/K Σ θ_i has no meaning here. To keep all stages busy the batch
is cut into m micro-batches that flow through the pipeline one after another:

* GPipe (Huang et al. 2019): all m forwards, then all m backwards;
* 1F1B (Narayanan et al. 2019, PipeDream-Flush): after a warm-up, each stage
  alternates one forward and one backward, so it holds fewer activations.

Both leave the same idle "bubble", (p − 1)/(m + p − 1) of the step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .costmodel import bubble_fraction, peak_activations  # noqa: F401  (re-exported for the chapter)


def split_into_stages(model: torch.nn.Sequential, num_stages: int) -> list[torch.nn.Sequential]:
    """Cut a Sequential into ``num_stages`` consecutive stages of nearly equal layer counts
    (the stages share the model's parameters)."""
    layers = list(model)
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or not 1 <= num_stages <= len(layers):
        raise ValueError(f"num_stages must be between 1 and the {len(layers)} layers, got {num_stages!r}")
    base, extra = divmod(len(layers), num_stages)
    stages, start = [], 0
    for s in range(num_stages):
        size = base + (1 if s < extra else 0)
        stages.append(torch.nn.Sequential(*layers[start:start + size]))
        start += size
    return stages


# ---------------------------------------------------------------- schedules
def gpipe_schedule(num_stages: int, num_microbatches: int) -> list[list[tuple[str, int]]]:
    """Per stage, its operations in order: F0 … F(m−1), then B(m−1) … B0."""
    p, m = num_stages, num_microbatches
    bubble_fraction(p, m)  # checks p and m
    return [[("F", i) for i in range(m)] + [("B", i) for i in reversed(range(m))] for _ in range(p)]


def one_f_one_b_schedule(num_stages: int, num_microbatches: int) -> list[list[tuple[str, int]]]:
    """Per stage: p − 1 − s warm-up forwards, then alternate one forward and one backward,
    then the remaining backwards (micro-batches in order)."""
    p, m = num_stages, num_microbatches
    bubble_fraction(p, m)
    schedules = []
    for s in range(p):
        warmup = min(p - 1 - s, m)
        ops = [("F", i) for i in range(warmup)]
        next_f, next_b = warmup, 0
        while next_b < m:
            if next_f < m:
                ops.append(("F", next_f))
                next_f += 1
            ops.append(("B", next_b))
            next_b += 1
        schedules.append(ops)
    return schedules


SCHEDULES = {"gpipe": gpipe_schedule, "1f1b": one_f_one_b_schedule}


@dataclass(frozen=True)
class Slot:
    stage: int
    op: str          # "F" or "B"
    microbatch: int
    start: float
    end: float


def simulate_timeline(schedule: list[list[tuple[str, int]]], forward_time: float = 1.0,
                      backward_time: float = 2.0) -> list[Slot]:
    """When each stage runs each operation, if every op starts as soon as its inputs exist.

    F(s, i) needs F(s − 1, i) (the activation); B(s, i) needs B(s + 1, i) (the
    gradient) and F(s, i); each stage runs its own list in order, one op at a time.
    """
    p = len(schedule)
    done: dict[tuple[str, int, int], float] = {}
    position, clock, slots = [0] * p, [0.0] * p, []
    while any(position[s] < len(schedule[s]) for s in range(p)):
        progressed = False
        for s in range(p):
            if position[s] == len(schedule[s]):
                continue
            op, i = schedule[s][position[s]]
            needs = [("F", s - 1, i)] if op == "F" and s > 0 else []
            if op == "B":
                needs = [("F", s, i)] + ([("B", s + 1, i)] if s < p - 1 else [("F", p - 1, i)])
            if all(n in done for n in needs):
                start = max([clock[s]] + [done[n] for n in needs])
                end = start + (forward_time if op == "F" else backward_time)
                done[(op, s, i)] = clock[s] = end
                slots.append(Slot(s, op, i, start, end))
                position[s] += 1
                progressed = True
        if not progressed:
            raise ValueError("the schedule deadlocks: some stage waits for an operation that never runs")
    return slots


def idle_fraction(slots: Sequence[Slot]) -> float:
    """Idle time of all stages over (stages × duration of the step)."""
    stages = {slot.stage for slot in slots}
    makespan = max(slot.end for slot in slots) - min(slot.start for slot in slots)
    busy = sum(slot.end - slot.start for slot in slots)
    return 1.0 - busy / (len(stages) * makespan)


def activations_held(schedule: list[list[tuple[str, int]]]) -> list[int]:
    """Per stage, the most micro-batches whose forward is done and backward not yet."""
    peaks = []
    for ops in schedule:
        held = peak = 0
        for op, _ in ops:
            held += 1 if op == "F" else -1
            peak = max(peak, held)
        peaks.append(peak)
    return peaks


# --------------------------------------------------- simulated in one process
def pipelined_gradients(model: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor, *, num_stages: int,
                        num_microbatches: int, schedule: str = "1f1b") -> list[torch.Tensor]:
    """The gradients of the mean loss over (x, y), computed stage by stage and micro-batch by
    micro-batch in the schedule's order, on a copy of ``model``. Each micro-batch's loss
    is scaled by its share of the batch, so the accumulated gradients are the big batch's."""
    model = copy.deepcopy(model)
    stages = split_into_stages(model, num_stages)
    micro_x, micro_y = torch.tensor_split(x, num_microbatches), torch.tensor_split(y, num_microbatches)
    inputs: dict[tuple[int, int], torch.Tensor] = {}
    outputs: dict[tuple[int, int], torch.Tensor] = {}
    grad_of_output: dict[tuple[int, int], torch.Tensor] = {}
    order = [(slot.stage, slot.op, slot.microbatch) for slot in
             sorted(simulate_timeline(SCHEDULES[schedule](num_stages, num_microbatches)),
                    key=lambda slot: (slot.start, slot.stage))]
    for s, op, i in order:
        if op == "F":
            incoming = micro_x[i] if s == 0 else outputs[(s - 1, i)].detach().requires_grad_(True)
            inputs[(s, i)] = incoming
            outputs[(s, i)] = stages[s](incoming)
        else:
            if s == num_stages - 1:
                loss = F.cross_entropy(outputs[(s, i)], micro_y[i]) * len(micro_y[i]) / len(y)
                loss.backward()
            else:
                outputs[(s, i)].backward(grad_of_output[(s, i)])
            if s > 0:
                grad_of_output[(s - 1, i)] = inputs[(s, i)].grad  # what stage s sends back to s − 1
            del outputs[(s, i)]  # activations are freed once their backward ran
    return [p.grad for p in model.parameters()]


def unsplit_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The reference: gradients of the mean loss of the whole model on the whole batch."""
    model = copy.deepcopy(model)
    F.cross_entropy(model(x), y).backward()
    return [p.grad for p in model.parameters()]


def run_on_devices(model: torch.nn.Sequential, devices: Sequence[torch.device | str], x: torch.Tensor,
                   y: torch.Tensor, *, num_microbatches: int = 4) -> list[torch.Tensor]:
    """A heterogeneous pipeline (seed 2.5): stage s on ``devices[s]`` (for example the CPU and a
    GPU), activations and gradients moved between them; GPipe order. Returns the gradients
    on the CPU, which equal the unsplit model's."""
    model = copy.deepcopy(model)
    stages = [stage.to(device) for stage, device in zip(split_into_stages(model, len(devices)), devices)]
    total = len(y)
    for mx, my in zip(torch.tensor_split(x, num_microbatches), torch.tensor_split(y, num_microbatches)):
        activation = mx
        for stage, device in zip(stages, devices):
            activation = stage(activation.to(device))   # .to() is differentiable: gradients flow back
        loss = F.cross_entropy(activation, my.to(activation.device)) * len(my) / total
        loss.backward()
    return [p.grad.cpu() for p in model.parameters()]


# ============================================================ real processes
VERBOSE = False


def _log(rank: int, message: str) -> None:
    if VERBOSE:
        print(f"[stage {rank}] {message}", flush=True)


def gpipe_step(stage: torch.nn.Module, rank: int, world_size: int, x: torch.Tensor | None, y: torch.Tensor | None,
               num_microbatches: int, micro_sizes: Sequence[int], activation_width: int) -> float | None:
    """One GPipe step over real processes, stage ``rank`` of ``world_size``: all forwards
    (receive the activation from rank − 1, send ours to rank + 1), then all backwards in
    reverse (receive the gradient from rank + 1, send ours to rank − 1). Gradients
    accumulate in ``stage``'s parameters. Returns the mean loss on the last stage.

    Backward sends use ``isend``: with blocking sends on gloo, the last stage can block
    sending a gradient while the first is still sending activations (a deadlock seen here).
    """
    first, last = rank == 0, rank == world_size - 1
    micro_x = torch.tensor_split(x, num_microbatches) if first else [None] * num_microbatches
    micro_y = torch.tensor_split(y, num_microbatches) if last else [None] * num_microbatches
    inputs, outputs, total_loss, pending = [], [], 0.0, []
    for i in range(num_microbatches):
        if first:
            incoming = micro_x[i]
        else:
            incoming = torch.empty(micro_sizes[i], activation_width)
            dist.recv(incoming, rank - 1)
            _log(rank, f"F{i}: received activation {tuple(incoming.shape)} from stage {rank - 1}")
            incoming.requires_grad_(True)
        out = stage(incoming)
        if not last:
            dist.send(out.detach(), rank + 1)
            _log(rank, f"F{i}: sent activation {tuple(out.shape)} to stage {rank + 1}")
        inputs.append(incoming)
        outputs.append(out)
    batch = sum(micro_sizes)
    for i in reversed(range(num_microbatches)):
        if last:
            loss = F.cross_entropy(outputs[i], micro_y[i]) * micro_sizes[i] / batch
            total_loss += float(loss.detach())
            loss.backward()
        else:
            grad = torch.empty_like(outputs[i])
            dist.recv(grad, rank + 1)
            _log(rank, f"B{i}: received gradient from stage {rank + 1}")
            outputs[i].backward(grad)
        if not first:
            pending.append(dist.isend(inputs[i].grad, rank - 1))
            _log(rank, f"B{i}: sending gradient to stage {rank - 1}")
    for request in pending:
        request.wait()
    return total_loss if last else None


def pipeline_against_unsplit(rank: int, world_size: int, config: dict) -> dict:
    """Train a Sequential MLP cut into ``world_size`` stages (one per rank) with GPipe for a
    few SGD steps; every rank also trains the unsplit model on the whole batch and compares
    the gradients and parameters of its own stage after every step."""
    from .data_parallel import mlp

    sizes, m, lr = config.get("sizes", (64, 32, 32, 10)), config.get("microbatches", 4), config.get("lr", 0.1)
    batch, steps = config.get("batch", 30), config.get("steps", 3)
    dtype = torch.float64
    model, reference = mlp(sizes, seed=0, dtype=dtype), mlp(sizes, seed=0, dtype=dtype)
    torch.set_default_dtype(dtype)
    stages = split_into_stages(model, world_size)
    ref_stages = split_into_stages(reference, world_size)
    mine, ref_mine = stages[rank], ref_stages[rank]
    widths = [next(l.in_features for l in st if isinstance(l, torch.nn.Linear)) for st in stages]
    gen = torch.Generator().manual_seed(1)
    report = {"gradient differences": [], "parameter differences": [], "losses": []}
    for _ in range(steps):
        x = torch.randn(batch, sizes[0], generator=gen, dtype=dtype)
        y = torch.randint(0, sizes[-1], (batch,), generator=gen)
        micro_sizes = [len(t) for t in torch.tensor_split(torch.arange(batch), m)]
        mine.zero_grad()
        loss = gpipe_step(mine, rank, world_size, x, y, m, micro_sizes, widths[rank])
        reference.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        with torch.no_grad():
            report["gradient differences"].append(max(float((p.grad - q.grad).abs().max())
                                                      for p, q in zip(mine.parameters(), ref_mine.parameters())))
            for module in (mine, reference):
                for p in module.parameters():
                    p -= lr * p.grad
            report["parameter differences"].append(max(float((p - q).abs().max())
                                                       for p, q in zip(mine.parameters(), ref_mine.parameters())))
        report["losses"].append(loss)
    torch.set_default_dtype(torch.float32)
    return report
