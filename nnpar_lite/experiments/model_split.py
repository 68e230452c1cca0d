"""Chapter 05's runs: the pipeline and the tensor split over real processes, each compared
with the unsplit model (gradients, parameters, outputs) on every rank."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..models import mlp
from ..pipeline import gpipe_step, split_into_stages
from ..tensor_parallel import CopyToWorkers, SumFromWorkers, split_columns, split_rows
from ..util import even_bounds, max_abs_difference


def unsplit_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The reference: gradients of the mean loss of the whole model on the whole batch."""
    model = copy.deepcopy(model)
    F.cross_entropy(model(x), y).backward()
    return [p.grad for p in model.parameters()]


def pipeline_against_unsplit(rank: int, world_size: int, config: dict) -> dict:
    """Train a Sequential MLP cut into ``world_size`` stages (one per rank) with GPipe for a
    few SGD steps; every rank also trains the unsplit model on the whole batch and compares
    the gradients and parameters of its own stage after every step."""
    sizes, m, lr = config.get("sizes", (64, 32, 32, 10)), config.get("microbatches", 4), config.get("lr", 0.1)
    batch, steps = config.get("batch", 30), config.get("steps", 3)
    dtype = torch.float64
    model, reference = mlp(sizes, seed=0, dtype=dtype), mlp(sizes, seed=0, dtype=dtype)
    stages = split_into_stages(model, world_size)
    ref_stages = split_into_stages(reference, world_size)
    mine, ref_mine = stages[rank], ref_stages[rank]
    widths = [next(l.in_features for l in st if isinstance(l, torch.nn.Linear)) for st in stages]
    gen = torch.Generator().manual_seed(1)
    report = {"gradient differences": [], "parameter differences": [], "losses": []}
    for _ in range(steps):
        x = torch.randn(batch, sizes[0], generator=gen, dtype=dtype)
        y = torch.randint(0, sizes[-1], (batch,), generator=gen)
        micro_sizes = [stop - start for start, stop in even_bounds(batch, m)]
        mine.zero_grad()
        loss = gpipe_step(mine, x, y, micro_sizes, widths[rank])
        reference.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        report["gradient differences"].append(max_abs_difference([p.grad for p in mine.parameters()],
                                                                 [q.grad for q in ref_mine.parameters()]))
        with torch.no_grad():
            for module in (mine, reference):
                for p in module.parameters():
                    p -= lr * p.grad
        report["parameter differences"].append(max_abs_difference(mine, ref_mine))
        report["losses"].append(loss)
    return report


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
    (w1, b1), w2 = split_columns(first, world_size)[rank], split_rows(second, world_size)[rank]
    w1, b1, w2 = (t.detach().clone().requires_grad_(True) for t in (w1, b1, w2))
    x_mine = x.clone().requires_grad_(True)
    shared = CopyToWorkers.apply(x_mine)                                     # f
    partial = F.linear(F.gelu(F.linear(shared, w1, b1)), w2)
    out = SumFromWorkers.apply(partial) + second.bias.detach()               # g, then b2 once
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
