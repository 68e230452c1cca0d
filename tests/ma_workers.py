"""Workers only tests/test_model_averaging.py launches: the package's averaging over a process
group against references written out here (PyTorch's PeriodicModelAverager; numpy over the
parameters of every rank, gathered). Spawned ranks import this module by name from the tests
folder, which pytest puts on sys.path (and spawn hands on to its children)."""

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from nnpar_lite import model_averaging as ma
from nnpar_lite.experiments import model_averaging as mx
from nnpar_lite.models import mlp

SHAPES = ((5, 3), (7,), (1,))     # 23 values: no world size of 2–4 divides them, nor each tensor


def random_tensors(rank: int, seed: int, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * seed + rank)
    return [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for shape in SHAPES]


def gathered_numpy(tensors: list[torch.Tensor], group=None) -> list[np.ndarray]:
    """Every rank's copy of each tensor, stacked: (ranks, *shape), float64."""
    stacks = []
    for t in tensors:
        bucket = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
        dist.all_gather(bucket, t.contiguous(), group=group)
        stacks.append(np.stack([b.double().numpy() for b in bucket]))
    return stacks


def numpy_weighted_average(stacks: list[np.ndarray], weights) -> list[np.ndarray]:
    """The reference: Σ_r w_r θ_r / Σ_r w_r, written out with numpy."""
    w = np.asarray(weights, dtype=np.float64)
    return [np.tensordot(w, stack, axes=1) / w.sum() for stack in stacks]


def largest_gap(tensors, arrays) -> float:
    return max(float(np.abs(t.double().numpy() - a).max()) for t, a in zip(tensors, arrays))


def local_sgd_against_periodic_averager(rank: int, period: int = 3, steps: int = 10) -> float:
    """Two copies of one model trained side by side on this rank's own random data, averaged
    every ``period`` steps: ours with allreduce_parameters_, torch's with PeriodicModelAverager
    (which averages after steps 0, period, 2·period, ...). The largest difference seen."""
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

    ours, theirs = mlp((6, 5, 3), seed=0), mlp((6, 5, 3), seed=0)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.3) for m in (ours, theirs)]
    averager = PeriodicModelAverager(period=period, warmup_steps=0)
    gen = torch.Generator().manual_seed(rank)
    x, y = torch.randn(20 + 7 * rank, 6, generator=gen), torch.randint(3, (20 + 7 * rank,), generator=gen)
    largest = 0.0
    for step in range(steps):
        for model, optimizer in zip((ours, theirs), optimizers):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        if step % period == 0:
            ma.allreduce_parameters_(ours)
        averager.average_parameters(theirs.parameters())
        with torch.no_grad():
            largest = max(largest, *(float((p - q).abs().max()) for p, q in zip(ours.parameters(), theirs.parameters())))
    return largest


def weighted_against_numpy(rank: int, world_size: int) -> dict:
    """allreduce_parameters_weighted_ (and the alias average_parameters_) against numpy, for
    uneven integer weights with a rank of weight 0, equal weights and fractional weights."""
    gaps = {}
    for name, weights in (("uneven, one zero", [0] + [3 * r + 1 for r in range(1, world_size)]),
                          ("equal", [7] * world_size), ("fractional", [0.5 + r / 3 for r in range(world_size)])):
        for dtype in (torch.float64, torch.float32):
            tensors = random_tensors(rank, seed=len(gaps), dtype=dtype)
            expected = numpy_weighted_average(gathered_numpy(tensors), weights)
            ma.allreduce_parameters_weighted_(tensors, weights[rank])
            gaps[f"{name}, {dtype}"] = largest_gap(tensors, expected)
    tensors = random_tensors(rank, seed=99)
    expected = numpy_weighted_average(gathered_numpy(tensors), range(1, world_size + 1))
    ma.average_parameters_(tensors, weight=rank + 1)
    gaps["alias, weighted"] = largest_gap(tensors, expected)
    return gaps


def plain_mean_of_a_module(rank: int, world_size: int) -> dict:
    """allreduce_parameters_ on a module: the trainable parameters become the plain mean (numpy
    reference), a frozen one and the buffers stay as they were."""
    model = mlp((4, 3, 2), seed=rank, batch_norm=True, dtype=torch.float64)
    model[0].bias.requires_grad_(False)
    frozen, running = model[0].bias.detach().clone(), model[1].running_mean.clone().add_(rank)
    model[1].running_mean.copy_(running)
    trainable = [p for p in model.parameters() if p.requires_grad]
    expected = numpy_weighted_average(gathered_numpy([p.detach() for p in trainable]), [1] * world_size)
    ma.allreduce_parameters_(model)
    alias = random_tensors(rank, seed=7)
    alias_expected = numpy_weighted_average(gathered_numpy(alias), [1] * world_size)
    ma.average_parameters_(alias)
    return {"mean": largest_gap([p.detach() for p in trainable], expected),
            "alias": largest_gap(alias, alias_expected),
            "frozen untouched": torch.equal(model[0].bias.detach(), frozen),
            "buffer untouched": torch.equal(model[1].running_mean, running)}


def refusals(rank: int, world_size: int) -> dict:
    """A negative weight is refused on the rank that passes it, before any communication; weights
    that add up to 0 are refused on every rank, with the parameters left as they were."""
    tensors = random_tensors(rank, seed=5)
    before = [t.clone() for t in tensors]
    messages = {}
    for name, weight in (("negative", -1.0), ("zero total", 0)):
        try:
            ma.allreduce_parameters_weighted_(tensors, weight)
            messages[name] = None
        except ValueError as error:
            messages[name] = str(error)
    return {**messages, "untouched": all(torch.equal(t, b) for t, b in zip(tensors, before))}


def on_a_sub_group(rank: int, world_size: int) -> dict:
    """On 3 ranks, both collectives over ``new_group([0, 2])``: ranks 0 and 2 end with their
    mean (plain, then weighted 2 : 5); rank 1 calls them too and is left untouched."""
    group = dist.new_group([0, 2])
    gaps, untouched = {}, True
    for name, weights in (("plain", None), ("weighted", {0: 2, 1: 9, 2: 5})):
        tensors = random_tensors(rank, seed=11 if weights is None else 12)
        stacks, before = gathered_numpy(tensors), [t.clone() for t in tensors]     # over all 3 ranks
        if weights is None:
            ma.allreduce_parameters_(tensors, group=group)
        else:
            ma.allreduce_parameters_weighted_(tensors, weights[rank], group=group)
        expected = numpy_weighted_average([s[[0, 2]] for s in stacks], [1, 1] if weights is None else [2, 5])
        gaps[name] = largest_gap(tensors, expected)
        untouched = untouched and all(torch.equal(t, b) for t, b in zip(tensors, before))
    return {"gaps": gaps, "untouched": untouched}


def averaging_checks(rank: int, world_size: int) -> dict:
    """Every check of the averaging collectives this world size runs, in one launch."""
    report = {"periodic averager": local_sgd_against_periodic_averager(rank),
              "weighted": weighted_against_numpy(rank, world_size),
              "module": plain_mean_of_a_module(rank, world_size),
              "refusals": refusals(rank, world_size),
              "experiment, weighted": mx.check_weighted_average(rank, world_size, [5, 0, 2, 1][:world_size])}
    if world_size == 3:
        report["sub-group"] = on_a_sub_group(rank, world_size)
        report["experiment, local SGD"] = mx.local_sgd_against_torch(rank, world_size, dict(alpha=0.1, period=3,
                                                                                            steps=6))
    return report
