"""Chapter 05's runs: the article's averaging of a model's parts, the pipeline and the tensor
split compared with the unsplit model, in one process and over real processes, and the
activations a pipeline stage holds, measured."""

from __future__ import annotations

import copy
import weakref

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import tensor_parallel as tp
from ..costmodel import peak_activations
from ..data import digits_split
from ..formulas import average_parameters
from ..models import evaluate, mlp
from ..pipeline import gpipe_step, one_f_one_b_step, pipelined_gradients, split_into_stages
from ..util import max_abs_difference, one_thread

PIPELINE_STEPS = {"gpipe": gpipe_step, "1f1b": one_f_one_b_step}


def unsplit_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The reference: gradients of the mean loss of the whole model on the whole batch."""
    model = copy.deepcopy(model)
    F.cross_entropy(model(x), y).backward()
    return [p.grad for p in model.parameters()]


# ------------------------------------------------- the article's 3.3, as written
def averaging_the_parts(sizes=(64, 32, 32, 32, 10), steps: int = 80, seed: int = 0) -> dict:
    """Seed 3.3 on one network: train an MLP on the digits, cut it into 4 parts, and apply the
    article's aggregation θ = ½(θ_1 + θ_2) to its two middle parts, the only two whose shapes
    agree (both 32 → 32), giving each part the average. Returns the test accuracy before and
    after, and how far the averaged parts moved."""
    x_train, y_train, x_test, y_test = (t.double() if t.is_floating_point() else t for t in digits_split())
    model = mlp(sizes, seed=seed, dtype=torch.float64)        # float64: the same accuracies on any CPU
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with one_thread():                                         # full-batch training of a small model
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(model(x_train), y_train).backward()
            optimizer.step()
    before = evaluate(model, x_test, y_test)["accuracy"]
    parts = split_into_stages(model, 4)
    first, second = parts[1], parts[2]
    moved = max_abs_difference(first, second) / 2              # each part moves half the way to the other
    average = average_parameters([first, second])              # θ = 1/K Σ θ_i, K = 2
    with torch.no_grad():
        for part in (first, second):
            for p, theta in zip(part.parameters(), average.values()):
                p.copy_(theta)
    return {"accuracy before": before, "accuracy after": evaluate(model, x_test, y_test)["accuracy"],
            "largest parameter change": moved, "parts": [str(part) for part in parts]}


# ------------------------------------------------------------- the one-process checks
PIPELINE_CASES = [((64, 32, 32, 10), 3, 4, 30), ((8, 5, 3), 2, 7, 7), ((10, 9, 8, 7, 6), 5, 3, 11)]
TENSOR_CASES = [(6, 10, 5, 1), (6, 10, 5, 3), (16, 33, 7, 2), (16, 33, 7, 4)]


def tensor_split_gaps(n_in: int, hidden: int, n_out: int, num_workers: int, *, seed: int = 0) -> dict:
    """The largest difference, outputs and every gradient (parameters and input), between each
    tensor-parallel computation and the unsplit layers it splits: column-parallel first layer,
    row-parallel second layer, and the Megatron pair second(GeLU(first(x)))."""
    torch.manual_seed(seed)
    first = torch.nn.Linear(n_in, hidden, dtype=torch.float64)
    second = torch.nn.Linear(hidden, n_out, dtype=torch.float64)
    x = torch.randn(9, n_in, dtype=torch.float64, requires_grad=True)
    wrt = [*first.parameters(), *second.parameters(), x]
    cases = {"column": (tp.column_parallel_linear(x, first, num_workers), first(x)),
             "row": (tp.row_parallel_linear(first(x), second, num_workers), second(first(x))),
             "megatron": (tp.megatron_mlp(x, first, second, num_workers), second(F.gelu(first(x))))}
    gaps = {}
    for name, (split, unsplit) in cases.items():
        got = torch.autograd.grad(split.square().sum(), wrt, allow_unused=True, retain_graph=True)
        want = torch.autograd.grad(unsplit.square().sum(), wrt, allow_unused=True, retain_graph=True)
        used = [(a, b) for a, b in zip(got, want) if b is not None]
        gaps[name] = max(max_abs_difference(split, unsplit), max_abs_difference(*zip(*used)))
    return gaps


def verify_splits_against_unsplit(tolerance: float = 1e-10) -> list[tuple[str, bool]]:
    """Chapter 05's verification in one call (the unit tests run many more cases): each split of
    :data:`PIPELINE_CASES` and :data:`TENSOR_CASES`, simulated in one process in float64, against
    the unsplit model. Returns (what was compared, whether it agrees within ``tolerance``)."""
    rows = []
    for sizes, stages, micro, batch in PIPELINE_CASES:
        model = mlp(sizes, seed=1, dtype=torch.float64)
        gen = torch.Generator().manual_seed(batch)
        x, y = torch.randn(batch, sizes[0], dtype=torch.float64, generator=gen), torch.randint(0, sizes[-1], (batch,))
        for schedule in ("gpipe", "1f1b"):
            got = pipelined_gradients(model, x, y, num_stages=stages, num_microbatches=micro, schedule=schedule)
            name = f"pipeline {schedule:>5}, p = {stages}, m = {micro}, {'→'.join(map(str, sizes))}"
            rows.append((name, max_abs_difference(got, unsplit_gradients(model, x, y)) < tolerance))
    for n_in, hidden, n_out, workers in TENSOR_CASES:
        for name, gap in tensor_split_gaps(n_in, hidden, n_out, workers).items():
            rows.append((f"tensor {name:>8}, K = {workers}, {n_in}→{hidden}→{n_out}", gap < tolerance))
    return rows


# ------------------------------------------------------ activations, measured
class SavedActivations:
    """Measures the most micro-batches whose activations a stage keeps for its backward pass at
    once. Every tensor autograd saves during the stage's forward is wrapped and tagged with the
    number of that forward (a saved-tensor hook); a weak reference follows the wrapper, which
    lives until the backward pass frees it. At the end of each forward, the number of distinct
    tags alive is counted; ``peak`` is the largest count. Forwards run in micro-batch order, so
    a tag is a micro-batch. ``with SavedActivations(stage) as saved: ...``, then ``saved.peak``."""

    class _Saved:
        __slots__ = ("tensor", "forward", "__weakref__")

        def __init__(self, tensor: torch.Tensor, forward: int):
            self.tensor, self.forward = tensor, forward

    def __init__(self, stage: torch.nn.Module):
        self.stage, self.alive, self.forwards, self.peak = stage, weakref.WeakSet(), 0, 0

    def _pack(self, tensor):
        saved = self._Saved(tensor, self.forwards)
        self.alive.add(saved)
        return saved

    def _count(self, *_):
        self.forwards += 1
        self.peak = max(self.peak, len({saved.forward for saved in self.alive}))

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda saved: saved.tensor)
        self.hooks.__enter__()
        self.handle = self.stage.register_forward_hook(self._count)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        self.hooks.__exit__(*exc)


# ------------------------------------------------------------- real processes
def pipeline_against_unsplit(rank: int, world_size: int, config: dict) -> dict | None:
    """Train a Sequential MLP cut into p stages, one per rank of the group (all ranks, or
    ``config["group_ranks"]``), for a few SGD steps, once with GPipe and once with 1F1B, and
    the unsplit model on the whole batch beside them. Step t cuts its batch into micro-batches
    of ``config["micro_sizes"][t]`` samples (uneven sizes, m below p, anything). After every
    step each stage compares its gradients and parameters with the unsplit model's, and the
    two schedules with each other, and records the micro-batches whose activations it held at
    its peak, measured (:class:`SavedActivations`) and as min(p − s, m) or m predicts.
    Ranks outside the group return None."""
    group, s, p = _pipeline_group(rank, config.get("group_ranks"))
    if group is False:
        return None
    sizes, lr = tuple(config.get("sizes", (64, 32, 32, 10))), config.get("lr", 0.1)
    reference = mlp(sizes, seed=0, dtype=torch.float64)
    mine = {name: split_into_stages(mlp(sizes, seed=0, dtype=torch.float64), p)[s] for name in PIPELINE_STEPS}
    ref_mine = split_into_stages(reference, p)[s]
    width = next(layer.in_features for layer in ref_mine if isinstance(layer, torch.nn.Linear))
    gen = torch.Generator().manual_seed(1)
    report = {key: [] for key in ("gradient differences", "parameter differences", "1f1b against gpipe", "losses",
                                  "peak measured", "peak predicted")}
    for micro_sizes in config.get("micro_sizes", [(8, 8, 7, 7)] * 3):
        x = torch.randn(sum(micro_sizes), sizes[0], generator=gen, dtype=torch.float64)
        y = torch.randint(0, sizes[-1], (sum(micro_sizes),), generator=gen)
        reference.zero_grad()
        unsplit_loss = F.cross_entropy(reference(x), y)
        unsplit_loss.backward()
        peaks, losses, grads = _pipeline_steps(mine, x, y, micro_sizes, width, group)
        reference_grads = [q.grad for q in ref_mine.parameters()]
        report["gradient differences"].append({n: max_abs_difference(g, reference_grads) for n, g in grads.items()})
        report["1f1b against gpipe"].append(max_abs_difference(grads["1f1b"], grads["gpipe"]))
        _sgd([reference, *mine.values()], lr)
        report["parameter differences"].append({n: max_abs_difference(m, ref_mine) for n, m in mine.items()})
        report["losses"].append({"unsplit": float(unsplit_loss.detach()), **losses})
        report["peak measured"].append(peaks)
        report["peak predicted"].append({n: peak_activations(p, len(micro_sizes), s, n) for n in peaks})
    return report


def _pipeline_group(rank: int, group_ranks) -> tuple:
    """(group, this rank's stage s, the number of stages p): the world (group None), or a group
    made of ``group_ranks`` (every rank takes part in making it; a rank outside gets False)."""
    if group_ranks is None:
        return None, dist.get_rank(), dist.get_world_size()
    group = dist.new_group(list(group_ranks))
    if rank not in group_ranks:
        return False, None, None
    return group, dist.get_rank(group), dist.get_world_size(group)


def _pipeline_steps(stages: dict, x, y, micro_sizes, width, group) -> tuple[dict, dict, dict]:
    """Run one step of each schedule on its own copy of this rank's stage: the measured peak of
    micro-batches held, the loss (last stage) and the gradients, per schedule."""
    peaks, losses, grads = {}, {}, {}
    for name, step in PIPELINE_STEPS.items():
        stages[name].zero_grad()
        with SavedActivations(stages[name]) as saved:
            losses[name] = step(stages[name], x, y, micro_sizes, width, group=group)
        peaks[name] = saved.peak
        grads[name] = [q.grad.clone() for q in stages[name].parameters()]
    return peaks, losses, grads


@torch.no_grad()
def _sgd(modules, lr: float) -> None:
    for module in modules:
        for p in module.parameters():
            p -= lr * p.grad


def megatron_mlp_worker(rank: int, world_size: int, config: dict) -> dict:
    """Each rank holds its blocks of a two-layer MLP's weights and runs the Megatron forward and
    backward with f and g over the process group; every rank also runs the unsplit MLP and
    compares the output, the input gradient and the gradients of its own blocks."""
    n_in, hidden, n_out, batch = config.get("sizes", (6, 10, 5, 7))
    torch.manual_seed(0)
    first = torch.nn.Linear(n_in, hidden, dtype=torch.float64)
    second = torch.nn.Linear(hidden, n_out, dtype=torch.float64)
    x = torch.randn(batch, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reference_first, reference_second = copy.deepcopy(first), copy.deepcopy(second)
    x_ref = x.clone().requires_grad_(True)
    expected = reference_second(F.gelu(reference_first(x_ref)))
    expected.square().sum().backward()

    # This rank's blocks, as independent leaf tensors: what a real worker would store.
    (w1, b1), w2 = tp.split_columns(first, world_size)[rank], tp.split_rows(second, world_size)[rank]
    w1, b1, w2 = (t.detach().clone().requires_grad_(True) for t in (w1, b1, w2))
    x_mine = x.clone().requires_grad_(True)
    shared = tp.CopyToWorkers.apply(x_mine)                                  # f
    partial = F.linear(F.gelu(F.linear(shared, w1, b1)), w2)
    out = tp.SumFromWorkers.apply(partial) + second.bias.detach()            # g, then b2 once
    out.square().sum().backward()

    ref_w1, ref_b1 = reference_first.weight.grad, reference_first.bias.grad
    rows = torch.tensor_split(torch.arange(hidden), world_size)[rank]
    with torch.no_grad():
        return {
            "output": float((out - expected).abs().max()),
            "input gradient": float((x_mine.grad - x_ref.grad).abs().max()),
            "W1 block gradient": float((w1.grad - ref_w1[rows]).abs().max()),
            "b1 block gradient": float((b1.grad - ref_b1[rows]).abs().max()),
            "W2 block gradient": float((w2.grad - reference_second.weight.grad[:, rows]).abs().max()),
        }
