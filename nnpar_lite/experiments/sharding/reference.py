"""What chapter 08's runs share: the small network with a frozen layer and a tied weight, the
global batches and each rank's part of them, a run on the first N ranks, the optimizer's
groups, and the reference every sharded run is compared with, unsharded training in one
process.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ...models import mlp
from ...util import even_bounds


class TiedFrozenNet(torch.nn.Module):
    """A small network with the two pitfalls of sharding: a frozen input layer, and one weight
    shared by two layers (``second.weight is first_hidden.weight``). Its sizes, 7 inputs, 5 hidden
    units and 3 outputs, make tensors of 35, 5, 15 and 3 values: most split unevenly over 2 to 4 ranks."""

    def __init__(self, sizes: tuple[int, int, int] = (7, 5, 3), seed: int = 0):
        super().__init__()
        n_in, hidden, n_out = sizes
        torch.manual_seed(seed)
        self.frozen = torch.nn.Linear(n_in, n_in)
        self.frozen.requires_grad_(False)
        self.first = torch.nn.Linear(n_in, hidden)
        self.first_hidden = torch.nn.Linear(hidden, hidden)
        self.second_hidden = torch.nn.Linear(hidden, hidden)
        self.second_hidden.weight = self.first_hidden.weight          # tied
        self.last = torch.nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.first(torch.tanh(self.frozen(x))))
        return self.last(torch.tanh(self.second_hidden(torch.tanh(self.first_hidden(x)))))


def build_model(config: dict) -> torch.nn.Module:
    """The configured network, seed 0: ``TiedFrozenNet`` ("tied"), ``mlp(sizes)`` ("mlp"), or
    ("layernorm") Linear, LayerNorm, Tanh, Linear."""
    kind, sizes = config.get("model", "tied"), tuple(config.get("sizes", (7, 5, 3)))
    if kind == "tied":
        return TiedFrozenNet(sizes)
    if kind == "layernorm":
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(sizes[0], sizes[1]), torch.nn.LayerNorm(sizes[1]),
                                   torch.nn.Tanh(), torch.nn.Linear(sizes[1], sizes[2]))
    return mlp(sizes, seed=0)


def global_batches(config: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same random global batches on every rank."""
    gen = torch.Generator().manual_seed(config.get("seed", 1))
    sizes, batch = config.get("sizes", (7, 5, 3)), config.get("batch", 12)
    return [(torch.randn(batch, sizes[0], generator=gen), torch.randint(0, sizes[-1], (batch,), generator=gen))
            for _ in range(config.get("steps", 4))]


def first_ranks(config: dict, rank: int, world_size: int) -> tuple[Any, int | None, int]:
    """(group, rank in it, its size) for a run on the first ``config["N"]`` ranks only (default:
    all of them, group None); the rank is None on a rank outside. Every rank must call it."""
    n = config.get("N", world_size)
    if n == world_size:
        return None, rank, n
    group = dist.new_group(list(range(n)))
    return group, (rank if rank < n else None), n


def my_part(batch: tuple[torch.Tensor, torch.Tensor], rank: int, world_size: int) -> tuple:
    """This rank's rows of the global batch (equal parts: the mean of means is the mean)."""
    start, stop = even_bounds(len(batch[0]), world_size)[rank]
    return batch[0][start:stop], batch[1][start:stop]


def two_groups(model: torch.nn.Module, config: dict) -> list[dict]:
    """Weights with weight decay, biases with none and their own learning rate; or, with
    ``config["groups"] == 1``, one group with weight decay on everything (FSDP's flat shards
    mix a layer's weight and bias, so they cannot go to different groups)."""
    if config.get("groups", 2) == 1:
        return [{"params": list(model.parameters()), "weight_decay": config.get("weight_decay", 0.1)}]
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    return [{"params": weights, "weight_decay": config.get("weight_decay", 0.1)},
            {"params": biases, "weight_decay": 0.0, "lr": 2 * config.get("lr", 1e-2)}]


def make_optimizer(groups: list[dict], config: dict) -> torch.optim.Optimizer:
    """AdamW (the default) or, with ``config["optimizer"] == "sgd"``, plain SGD, whose step
    is proportional to the gradient: Adam's first steps are ±lr whatever the gradient's size,
    so a rounding that flips the sign of a near-zero gradient moves a weight by 2·lr."""
    if config.get("optimizer", "adamw") == "sgd":
        return torch.optim.SGD(groups, lr=config.get("lr", 1e-2))
    return torch.optim.AdamW(groups, lr=config.get("lr", 1e-2))


def train_unsharded(model: torch.nn.Module, batches: list, config: dict, *, compute_dtype=None) -> list[dict]:
    """The reference: one process, the whole batch, AdamW with the two groups; the parameters
    after every step. With ``compute_dtype`` the mixed-precision recipe: a float32 master
    copy, forward and backward in a cast copy, the gradient cast back."""
    opt = make_optimizer(two_groups(model, config), config)
    history = []
    for x, y in batches:
        opt.zero_grad()
        if compute_dtype is None:
            F.cross_entropy(model(x), y).backward()
        else:
            low = copy.deepcopy(model).to(compute_dtype)
            F.cross_entropy(low(x.to(compute_dtype)).float(), y).backward()
            for p, q in zip(model.parameters(), low.parameters()):
                p.grad = None if q.grad is None else q.grad.float()
        opt.step()
        history.append({n: p.detach().clone() for n, p in model.named_parameters()})
    return history
