"""Workers only tests/test_data_parallel.py launches: the equivalence loop of CS336's DDP tests,
written out here and not taken from the chapter's harness, so that a fault in the harness
cannot hide a fault in the implementation.

One process trains the reference on all rows of each batch; every rank trains its copy on
its own disjoint, uneven rows, and the implementation under test averages the gradients
after backward. After every step each rank compares its copy with the reference. The
implementation is plugged in through ADAPTERS: one function per way of averaging, the only
lines here that know nnpar_lite's API. Spawned ranks import this module by name: pytest puts
the tests folder on sys.path, and spawn hands it on.
"""

import copy

import torch
import torch.nn.functional as F

from nnpar_lite.data_parallel import allreduce_gradients
from nnpar_lite.models import mlp
from nnpar_lite.util import max_abs_difference

# ------------------------------------------------------------------ the adapter
ADAPTERS = {
    # (model, rows on this rank, config) -> None: average the .grad of every trainable parameter
    "weighted by rows": lambda model, rows, config: allreduce_gradients(model, weight=rows,
                                                                        bucket_mb=config["bucket_mb"]),
    "plain mean": lambda model, rows, config: allreduce_gradients(model, bucket_mb=config["bucket_mb"]),
}

SIZES = (10, 7, 5, 3)   # parameter tensors of 70, 7, 35, 5, 15, 3 values: none divides evenly


def equivalence_loop(rank: int, world_size: int, config: dict) -> dict:
    """``config``: adapter (a name in ADAPTERS), rows (one count per rank), steps, bucket_mb,
    frozen (parameter names trained by nobody). Returns the largest difference from the
    reference after each step, and this rank's final parameters."""
    reference = mlp(SIZES, seed=7, dtype=torch.float64)
    for name in config.get("frozen", ()):
        reference.get_parameter(name).requires_grad_(False)
    ours = copy.deepcopy(reference)
    make_step = ADAPTERS[config["adapter"]]
    optimizers = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.3) for m in (reference, ours)]
    first = sum(config["rows"][:rank])
    mine = slice(first, first + config["rows"][rank])
    data = torch.Generator().manual_seed(11)          # the same batches on every rank
    differences = []
    for _ in range(config["steps"]):
        x = torch.randn(sum(config["rows"]), SIZES[0], generator=data, dtype=torch.float64)
        y = torch.randint(0, SIZES[-1], (len(x),), generator=data)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(reference(x), y).backward()  # the reference: all rows, one process
        F.cross_entropy(ours(x[mine]), y[mine]).backward()
        make_step(ours, config["rows"][rank], config)
        for optimizer in optimizers:
            optimizer.step()
        differences.append(max_abs_difference(ours, reference))
    return {"differences": differences, "params": {n: p.detach().clone() for n, p in ours.named_parameters()}}


def equivalence_loops(rank: int, world_size: int, configs: list[dict]) -> list[dict]:
    """Several configurations in one launch (a spawn costs seconds)."""
    return [equivalence_loop(rank, world_size, config) for config in configs]
