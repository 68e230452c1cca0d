"""Pipeline parallelism: the model's layers cut into p stages, one per worker.

What crosses between workers are activations (forward) and their gradients
(backward), not parameters: each stage owns different parameters, so the
article's θ = 1/K Σ θ_i has no meaning here. To keep all stages busy the batch
is cut into m micro-batches that flow through the pipeline one after another:

* GPipe (Huang et al., NeurIPS 2019): all m forwards, then all m backwards;
* 1F1B with a flush at the end of each step (Narayanan et al., ICML 2021,
  "Memory-Efficient Pipeline-Parallel DNN Training", PipeDream-Flush; Megatron-LM
  at scale, SC21): after a warm-up, each stage alternates one forward and one
  backward, so it holds fewer activations. (PipeDream, SOSP 2019, is the
  asynchronous 1F1B with weight stashing: no flush, no bubble, stale weights.)

Both leave the same idle "bubble", (p − 1)/(m + p − 1) of the step. Both run over real
processes, one stage per rank (:func:`gpipe_step`, :func:`one_f_one_b_step`): the same code,
:func:`pipeline_step`, carrying out each stage's operations in its schedule's order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .collectives import global_rank
from .costmodel import bubble_fraction
from .util import even_bounds, whole_number


def split_into_stages(model: torch.nn.Sequential, num_stages: int) -> list[torch.nn.Sequential]:
    """Cut a Sequential into ``num_stages`` consecutive stages of nearly equal layer counts
    (the stages share the model's parameters)."""
    layers = list(model)
    whole_number(f"num_stages (at most one per layer, of {len(layers)})", num_stages, maximum=len(layers))
    return [torch.nn.Sequential(*layers[start:stop]) for start, stop in even_bounds(len(layers), num_stages)]


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


def pipeline_step(stage: torch.nn.Module, x: torch.Tensor | None, y: torch.Tensor | None,
                  micro_sizes: Sequence[int], activation_width: int, *, schedule: str = "1f1b",
                  group=None) -> float | None:
    """One training step of a pipeline over real processes, this process being stage s = rank
    of the group's p: it runs its own list, :data:`SCHEDULES` [``schedule``](p, m)[s]. F i
    receives micro-batch i's activation from rank − 1 (the first stage cuts it from ``x``),
    runs the stage, sends the output to rank + 1. B i receives that output's gradient from
    rank + 1 (the last stage takes the loss on ``y``, weighted by n_i / Σ n_j so that the
    accumulated gradients are the whole batch's), runs backward, sends its input's gradient
    to rank − 1. Returns the mean loss on the last stage. Every send is an ``isend``: with
    blocking sends on gloo, a stage can wait on a send to its neighbour while the neighbour
    waits on a send to it (a deadlock seen here).
    """
    link, sizes = _Link(group), _check_step(stage, x, y, micro_sizes, activation_width, schedule, group)
    weight = None if link.first else next(stage.parameters())    # what it receives takes its dtype and device
    micro_x = torch.split(x, sizes) if link.first else None
    micro_y = torch.split(y, sizes) if link.last else None
    inputs, outputs, sent, pending, total_loss = {}, {}, {}, [], 0.0
    for op, i in SCHEDULES[schedule](link.world, len(sizes))[link.rank]:
        if op == "F":
            shape = (sizes[i], activation_width)
            inputs[i] = micro_x[i] if link.first else link.receive(shape, weight, f"F{i}: activation")
            outputs[i] = stage(inputs[i])
            if not link.last:
                sent[i] = link.send(outputs[i].detach(), f"F{i}: activation")
            continue
        if link.last:
            loss = F.cross_entropy(outputs.pop(i), micro_y[i]) * sizes[i] / sum(sizes)
            total_loss += float(loss.detach())
            loss.backward()
        else:
            output = outputs.pop(i)
            output.backward(link.receive(tuple(output.shape), output, f"B{i}: gradient", 1))
            sent.pop(i).wait()          # its gradient came back, so our activation has arrived
        incoming = inputs.pop(i)        # micro-batch i's activations are freed here
        if not link.first:
            pending.append(link.send(incoming.grad, f"B{i}: gradient", -1))
    for request in pending:
        request.wait()
    return total_loss if link.last else None


def gpipe_step(stage: torch.nn.Module, x: torch.Tensor | None, y: torch.Tensor | None,
               micro_sizes: Sequence[int], activation_width: int, *, group=None) -> float | None:
    """One GPipe step over real processes (Huang et al. 2019): all m forwards, then all m
    backwards in reverse; this stage holds all m micro-batches' activations at its peak.
    See :func:`pipeline_step`."""
    return pipeline_step(stage, x, y, micro_sizes, activation_width, schedule="gpipe", group=group)


def one_f_one_b_step(stage: torch.nn.Module, x: torch.Tensor | None, y: torch.Tensor | None,
                     micro_sizes: Sequence[int], activation_width: int, *, group=None) -> float | None:
    """One flushed 1F1B step over real processes (Narayanan et al., ICML 2021; Megatron-LM,
    SC21): stage s runs min(p − 1 − s, m) warm-up forwards, then one forward and one backward
    in turn, then the remaining backwards; it holds at most min(p − s, m) micro-batches'
    activations instead of GPipe's m, and computes the same gradients. See :func:`pipeline_step`."""
    return pipeline_step(stage, x, y, micro_sizes, activation_width, schedule="1f1b", group=group)


def _check_step(stage, x, y, micro_sizes, activation_width, schedule, group) -> list[int]:
    """The micro-batch sizes as a list, after checking every argument this stage uses."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if schedule not in SCHEDULES:
        raise ValueError(f"stage {rank}: schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    sizes = [whole_number(f"stage {rank}: micro_sizes[{i}]", n) for i, n in enumerate(micro_sizes)]
    if not sizes:
        raise ValueError(f"stage {rank}: micro_sizes is empty; give at least one micro-batch")
    whole_number(f"stage {rank}: activation_width", activation_width)
    for name, tensor, used in (("x", x, rank == 0), ("y", y, rank == world - 1)):
        if used and (tensor is None or len(tensor) != sum(sizes)):
            got = "None" if tensor is None else f"{len(tensor)} rows"
            raise ValueError(f"stage {rank}: {name} must have sum(micro_sizes) = {sum(sizes)} rows, got {got}")
    if rank > 0 and next(stage.parameters(), None) is None:
        raise ValueError(f"stage {rank} has no parameters, so the dtype of the activations it receives is "
                         "unknown; give every stage after the first at least one layer with parameters")
    return sizes


class _Link:
    """This stage's neighbours in the group: receive from rank − 1 (or + 1), send to rank + 1
    (or − 1), logging every message when ``VERBOSE``."""

    def __init__(self, group=None):
        self.group, self.rank, self.world = group, dist.get_rank(group), dist.get_world_size(group)
        self.first, self.last = self.rank == 0, self.rank == self.world - 1

    def receive(self, shape, like: torch.Tensor, what: str, offset: int = -1) -> torch.Tensor:
        """A message of ``shape`` from stage rank + ``offset``, into a buffer of ``like``'s dtype
        on ``like``'s device (the stage's: a GPU's, when it runs on one)."""
        buffer = torch.empty(shape, dtype=like.dtype, device=like.device)
        dist.recv(buffer, global_rank(self.rank + offset, self.group), group=self.group)
        _log(self.rank, f"{what} {tuple(shape)} received from stage {self.rank + offset}")
        return buffer.requires_grad_(offset < 0)       # an activation needs its gradient back

    def send(self, tensor: torch.Tensor, what: str, offset: int = 1):
        """Non-blocking: returns the request to ``wait()`` on before the tensor may change."""
        _log(self.rank, f"{what} {tuple(tensor.shape)} sent to stage {self.rank + offset}")
        return dist.isend(tensor, global_rank(self.rank + offset, self.group), group=self.group)
