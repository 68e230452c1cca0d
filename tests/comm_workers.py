"""What only chapter 09's tests launch: the toy models of CS336's DDP tests (a frozen bias, a
fixed non-trainable parameter, tied weights) for ``experiments.communication_efficiency.compare_with_ddp``,
and ranks that misuse DataParallel. Spawned ranks import them by name from this folder,
which pytest puts on sys.path."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nnpar_lite.data_parallel import DataParallel


class FrozenBiasLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 50, bias=True)
        self.fc.bias.requires_grad = False           # a frozen bias: never averaged, never stepped

    def forward(self, x):
        return self.fc(x)


class ToyModel(nn.Module):
    """Trainable weights of 100, 500 and 250 floats, a frozen bias and a fixed non-trainable parameter."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 10, bias=False)
        self.fc2 = FrozenBiasLayer()
        self.fc3 = nn.Linear(50, 5, bias=False)
        self.no_grad_fixed_param = nn.Parameter(torch.tensor([2.0, 2.0]), requires_grad=False)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x))))) * self.no_grad_fixed_param[0]


class ToyModelWithTiedWeights(nn.Module):
    """fc4 uses fc2's weight: one tensor in two places, whose gradient is the sum of both uses."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 10, bias=False)
        self.fc2 = nn.Linear(10, 50, bias=False)
        self.fc3 = nn.Linear(50, 10, bias=False)
        self.fc4 = nn.Linear(10, 50, bias=False)
        self.fc5 = nn.Linear(50, 5, bias=False)
        self.fc4.weight = self.fc2.weight

    def forward(self, x):
        for layer in (self.fc1, self.fc2, self.fc3, self.fc4):
            x = F.relu(layer(x))
        return self.fc5(x)


class MixedDtypes(nn.Module):
    """Layers in float32 and float64 in turn: DDP keeps one open bucket per dtype."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6, dtype=torch.float64)
        self.c, self.d = nn.Linear(6, 6), nn.Linear(6, 3, dtype=torch.float64)

    def forward(self, x):
        return self.d(self.c(self.b(self.a(x).double()).float()).double())


MODELS = {"toy": ToyModel, "tied": ToyModelWithTiedWeights}


def real_ddp_buckets(rank: int, world_size: int, caps: list[float]) -> list[list[list[int]]]:
    """DDP's buckets for MixedDtypes at each cap (MiB), as its communication hook sees them in
    the third step (after the rebuild), and DataParallel's plan for the same model."""
    from torch.nn.parallel import DistributedDataParallel

    from nnpar_lite.experiments.communication_efficiency import record_ddp_buckets

    found = []
    for cap in caps:
        torch.manual_seed(0)
        ddp, record = DistributedDataParallel(MixedDtypes(), bucket_cap_mb=cap), []
        record_ddp_buckets(ddp, record)
        for _ in range(3):
            record.clear()
            ddp(torch.randn(4, 6)).sum().backward()
        found.append({"ddp": [indices for _, indices in sorted(record)],
                      "ours": DataParallel(MixedDtypes(), bucket_mb=cap).buckets})
    return found


def _model(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[name]()


def dataparallel_misuse(rank: int, world_size: int) -> dict:
    """The errors DataParallel raises when it is misused, by kind: {what: message}."""
    messages = {}
    model = DataParallel(_model("toy", seed=rank), bucket_mb=1.0)
    x, y = torch.randn(4, 10), torch.randint(0, 5, (4,))
    loss = F.cross_entropy(model(x), y)
    loss.backward(retain_graph=True)
    try:
        model(x)                                                      # forgot finish_gradient_synchronization
    except RuntimeError as error:
        messages["forward before finish"] = str(error)
    model.finish_gradient_synchronization()
    try:
        loss.backward()                                               # a second backward, no new forward
    except RuntimeError as error:
        messages["second backward"] = str(error)
    return messages


def fixed_gradients(rank: int, shapes: list[tuple], seed: int = 0) -> list[torch.Tensor]:
    """Rank ``rank``'s gradients, the same at every step, different on every rank (float64)."""
    gen = torch.Generator().manual_seed(1000 * seed + rank)
    return [torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in shapes]


def running_means(rank: int, world_size: int, specs: list[tuple], shapes: list[tuple],
                  checkpoints: list[int]) -> dict:
    """For each (name, compressor class, args, kwargs): average the same gradients step after step
    over the ranks with the compressor. At each checkpoint T: the sum of the outputs over the T
    steps and the residuals of every rank; and the outputs of the first three steps."""
    import torch.distributed as dist

    import nnpar_lite.compression as compression

    results = {}
    for name, cls, args, kwargs in specs:
        compressor = getattr(compression, cls)(*args, **kwargs)
        total, first, at = [torch.zeros(s, dtype=torch.float64) for s in shapes], [], {}
        for step in range(1, max(checkpoints) + 1):
            tensors = fixed_gradients(rank, shapes)
            compressor.allreduce_(tensors)
            for t, out in zip(total, tensors):
                t += out
            if step <= 3:
                first.append([out.clone() for out in tensors])
            if step in checkpoints:
                residuals = [[torch.empty_like(e) for _ in range(world_size)] for e in compressor.residuals]
                for gathered, e in zip(residuals, compressor.residuals):
                    dist.all_gather(gathered, e)
                at[step] = {"sum": [t.clone() for t in total], "residuals": residuals}
        results[name] = {"at": at, "bytes": compressor.bytes_sent, "first": first}
    return results


def two_rank_suite(rank: int, world_size: int, configs: list[dict]) -> dict:
    """Everything the DataParallel tests ask of two ranks, in one launch: the comparisons with DDP,
    the misuse messages, and a small timeline."""
    from nnpar_lite.experiments.communication_efficiency import compare_with_ddp, overlap_timeline

    return {"compare": compare_with_ddp(rank, world_size, configs),
            "misuse": dataparallel_misuse(rank, world_size),
            "mixed dtypes": real_ddp_buckets(rank, world_size, [1.0, 100 / 2 ** 20]),
            "timeline": overlap_timeline(rank, world_size, (32, 64, 64, 64, 10), 16, 64 * 64 * 4 / 2 ** 20, 2)}
