"""Chapter 08's runs: ZeRO-1, ZeRO-2 and FSDP checked against unsharded training and against
PyTorch's own (``ZeroRedundancyOptimizer``, FSDP2's ``fully_shard``); the bytes each rank
holds after a step, counted and set against the memory calculator; the elements each rank
sends, counted at every ``isend``; one FSDP step traced. The algorithm is in
:mod:`nnpar_lite.sharding`.
"""

from __future__ import annotations

import copy
import gc
import warnings
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import costmodel
from ..models import mlp
from ..sharding import FullyShardedDataParallel, ShardedOptimizer, all_reduce_mean, gather_full_params
from ..util import counting, even_bounds, max_abs_difference

MEMORY_SIZES = (64, 48, 12)   # every tensor a multiple of 12 elements: 2, 3 and 4 ranks each get exactly 1/N


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


def sharding_runs(rank: int, world_size: int, runs: list[tuple[str, Any]]) -> list:
    """Several of this module's workers in one launch (each launch costs seconds):
    ``[(worker name, its argument), …]`` → their results, in order."""
    return [globals()[name](rank, world_size, argument) for name, argument in runs]


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


def _step_data_parallel(model, opt, x, y, group=None) -> None:
    """One step of a replicated optimizer: local backward, gradients averaged, update."""
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    all_reduce_mean([p.grad for p in model.parameters() if p.grad is not None], group=group)
    opt.step()


def zero_against_adamw(rank: int, world_size: int, config: dict) -> dict:
    """ZeRO-1 and ZeRO-2 (ours) and PyTorch's ``ZeroRedundancyOptimizer``, each rank on its
    part of every batch, against AdamW in one process on the whole batch; the largest
    parameter difference after every step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # torch's own may warn about its internals; ours must not
        from torch.distributed.optim import ZeroRedundancyOptimizer
    group, rank, world_size = first_ranks(config, rank, world_size)
    if rank is None:
        return None
    batches = global_batches(config)
    reference = train_unsharded(build_model(config), batches, config)
    models = {name: build_model(config) for name in ("ZeRO-1", "ZeRO-2", "torch")}
    lr = config.get("lr", 1e-2)
    opts = {"ZeRO-1": ShardedOptimizer(two_groups(models["ZeRO-1"], config), torch.optim.AdamW, lr=lr, group=group),
            "ZeRO-2": ShardedOptimizer(two_groups(models["ZeRO-2"], config), torch.optim.AdamW, lr=lr, group=group,
                                       shard_gradients=True, use_ring=config.get("use_ring", False))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opts["torch"] = ZeroRedundancyOptimizer(two_groups(models["torch"], config), process_group=group,
                                                optimizer_class=torch.optim.AdamW, lr=lr)
    report: dict[str, Any] = {"ZeRO-1 vs AdamW": [], "ZeRO-2 vs ZeRO-1": [], "torch's ZeRO vs AdamW": []}
    for step, batch in enumerate(batches):
        x, y = my_part(batch, rank, world_size)
        for name in ("ZeRO-1", "ZeRO-2"):
            opts[name].zero_grad()
            F.cross_entropy(models[name](x), y).backward()
            opts[name].step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _step_data_parallel(models["torch"], opts["torch"], x, y, group)
        expected = [reference[step][n] for n, _ in models["ZeRO-1"].named_parameters()]
        report["ZeRO-1 vs AdamW"].append(max_abs_difference(list(models["ZeRO-1"].parameters()), expected))
        report["ZeRO-2 vs ZeRO-1"].append(max_abs_difference(models["ZeRO-2"], models["ZeRO-1"]))
        report["torch's ZeRO vs AdamW"].append(max_abs_difference(list(models["torch"].parameters()), expected))
    report["optimizer state elements"] = _state_elements(opts["ZeRO-1"].optim)
    return report


def _state_elements(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() for state in optimizer.state.values() for t in state.values()
               if isinstance(t, torch.Tensor) and t.dim() > 0)


def fsdp_against_unsharded(rank: int, world_size: int, config: dict) -> dict:
    """FSDP (ours) in float32 against AdamW in one process on the whole batch and against
    PyTorch's FSDP2 ``fully_shard`` on a gloo CPU mesh; FSDP with ``config["compute_dtype"]``
    against the same mixed-precision recipe in one process. After every step: the largest
    parameter difference, and the bytes of weights this rank holds (shards, gathered)."""
    group, rank, world_size = first_ranks(config, rank, world_size)
    if rank is None:
        return None
    config = dict(config, groups=1)
    batches = global_batches(config)
    reference = train_unsharded(build_model(config), batches, config)
    select = (lambda m: isinstance(m, torch.nn.Linear)) if config.get("model") == "layernorm" else None
    ours = FullyShardedDataParallel(build_model(config), use_ring=config.get("use_ring", False), shard_module=select,
                                    group=group)
    torch_fsdp = _fully_shard(build_model(config), world_size, group)
    report = {"FSDP vs AdamW": [], "FSDP2 vs AdamW": [], "FSDP vs FSDP2": [], "held weight bytes": [],
              "gathered bytes": [], "1/N of the weights, padded": _padded_share(ours)}
    models = {"ours": ours, "torch": torch_fsdp}
    opts = {name: torch.optim.AdamW(two_groups(m, config), lr=config.get("lr", 1e-2)) for name, m in models.items()}
    for step, batch in enumerate(batches):
        x, y = my_part(batch, rank, world_size)
        for name, model in models.items():
            opts[name].zero_grad()
            F.cross_entropy(model(x), y).backward()
            if name == "ours":
                model.finish_gradient_synchronization()
            opts[name].step()
        full, fsdp2 = gather_full_params(ours), _fsdp2_full(torch_fsdp)
        expected = reference[step]
        report["FSDP vs AdamW"].append(max_abs_difference(full, [expected[n] for n in full]))
        report["FSDP2 vs AdamW"].append(max_abs_difference(fsdp2, [expected[n] for n in fsdp2]))
        report["FSDP vs FSDP2"].append(max_abs_difference(full, [fsdp2[n] for n in full]))
        report["held weight bytes"].append(sum(p.numel() * p.element_size() for p in ours.shards))
        report["gathered bytes"].append(ours.gathered_bytes())
    if config.get("compute_dtype") is not None:
        report.update(_mixed_precision_against_unsharded(rank, world_size, config, batches, group))
    return report


def _padded_share(model: FullyShardedDataParallel) -> int:
    """Bytes of this rank's 1/N of the sharded weights with the padding: Σ_units S·4."""
    return sum(u.size * u.shard.element_size() for u in model.units)


def _fully_shard(model: torch.nn.Module, world_size: int, group=None) -> torch.nn.Module:
    """PyTorch's FSDP2 on a CPU mesh of the group, the whole model one FSDP group (FSDP2 asks
    a tied weight's modules to share one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh("cpu", (world_size,)) if group is None else DeviceMesh.from_group(group, "cpu")
        return fully_shard(model, mesh=mesh)


def _fsdp2_full(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {n: p.full_tensor().clone() for n, p in model.named_parameters()}


def _mixed_precision_against_unsharded(rank: int, world_size: int, config: dict, batches: list, group) -> dict:
    config = dict(config, optimizer="sgd", lr=0.1)
    dtype = getattr(torch, config["compute_dtype"])
    reference = train_unsharded(build_model(config), batches, config, compute_dtype=dtype)
    ours = FullyShardedDataParallel(build_model(config), compute_dtype=dtype, group=group)
    opt = make_optimizer(two_groups(ours, config), config)
    report = {f"FSDP {config['compute_dtype']} vs one process {config['compute_dtype']}": [], "master dtypes": set()}
    for step, batch in enumerate(batches):
        x, y = my_part(batch, rank, world_size)
        opt.zero_grad()
        F.cross_entropy(ours(x), y).backward()
        ours.finish_gradient_synchronization()
        opt.step()
        full = gather_full_params(ours)
        report[f"FSDP {config['compute_dtype']} vs one process {config['compute_dtype']}"].append(
            max_abs_difference(full, [reference[step][n] for n in full]))
        report["master dtypes"] |= {str(t.dtype) for p in ours.parameters() for t in
                                    [p, p.grad, *opt.state[p].values()] if isinstance(t, torch.Tensor)}
    return report


# ------------------------------------------------------------------ collectives
def rings_against_torch(rank: int, world_size: int, config: dict) -> dict | None:
    """This module's ring reduce-scatter and all-gather against torch.distributed's own, on
    chunks of each length in ``config["lengths"]``: the largest difference per dtype (the
    ring adds in another order, so float sums agree to rounding), and which of torch's
    collectives ran here."""
    from ..sharding import all_gather, reduce_scatter

    group, rank, world_size = first_ranks(config, rank, world_size)
    if rank is None:
        return None
    largest: dict[str, float] = {}
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        for length in config["lengths"]:
            whole = torch.randn(world_size * length, generator=torch.Generator().manual_seed(100 * rank + length))
            whole = whole.to(dtype)
            ours, theirs = [(reduce_scatter(whole.new_empty(length), whole, use_ring=ring, group=group),
                             all_gather(whole.new_empty(world_size * length), whole[:length], use_ring=ring,
                                        group=group)) for ring in (True, False)]
            largest[name] = max(max_abs_difference(list(ours), list(theirs)), largest.get(name, 0.0))
    return {"largest difference": largest, "torch collectives": _native_collectives(world_size, group)}


def _native_collectives(world_size: int, group=None) -> dict[str, bool]:
    """Which of torch.distributed's reduce-scatter and all-gather into one tensor run on this
    backend (gloo or NCCL), by trying them."""
    found = {}
    for name in ("reduce_scatter_tensor", "all_gather_into_tensor", "reduce_scatter_single", "all_gather_single"):
        fn = getattr(dist, name, None)
        if fn is None:
            found[name] = False
            continue
        big, small = torch.ones(2 * world_size), torch.ones(2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")          # the older names are deprecated in newer torch
                fn(small, big, group=group) if "reduce" in name else fn(big, small, group=group)
            found[name] = True
        except (RuntimeError, ValueError):
            found[name] = False
    return found


# ------------------------------------------------------------------ memory and traffic
def alive_tensors() -> list[torch.Tensor]:
    """Every tensor the Python side of this process holds now, and their gradients."""
    found = [o for o in gc.get_objects() if issubclass(type(o), torch.Tensor)]
    return found + [t.grad for t in found if t.grad is not None]


def storage_bytes(tensors: list) -> dict[int, int]:
    """{address: bytes} of the memory behind the tensors, each block once (views share it)."""
    blocks = {}
    for t in tensors:
        if t is not None and t.untyped_storage().nbytes():
            blocks[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return blocks


def held_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, before: list[torch.Tensor] | None) -> dict:
    """The bytes this rank keeps alive, by kind: the parameters (for FSDP, the shards and any
    gathered weights), their gradients, the optimizer's state; and "other", every tensor
    alive now that was not alive in ``before`` and is none of these (0 when nothing hides;
    None when ``before`` is None: the census of every tensor takes a tenth of a second)."""
    local = optimizer.optim if isinstance(optimizer, ShardedOptimizer) else optimizer
    params = list(model.parameters())
    gathered = [t for u in getattr(model, "units", []) for t in (u.full, u.cache)]
    kinds = {"parameters": storage_bytes(params + gathered),
             "gradients": storage_bytes([p.grad for p in params] + [c.grad for g in local.param_groups
                                                                    for c in g["params"]]),
             "optimizer state": storage_bytes([t for s in local.state.values() for t in s.values()
                                               if isinstance(t, torch.Tensor)])}
    held = {kind: sum(blocks.values()) for kind, blocks in kinds.items()}
    if before is None:
        return {**held, "other": None, "total": sum(held.values())}
    known = set(storage_bytes(before)) | {a for blocks in kinds.values() for a in blocks}
    other = sum(n for a, n in storage_bytes(alive_tensors()).items() if a not in known)
    return {**held, "other": other, "total": sum(held.values()) + other}


def counting_sends():
    """Count what this process sends with ``dist.isend`` (the rings' only way to send):
    ``{"elements": …, "bytes": …}``, filled while the block runs."""
    return counting(dist, "isend", {"elements": 0, "bytes": 0})


def _stage_setup(stage: int, sizes: tuple, compute_dtype: str | None, group=None):
    """The model, its optimizer (Adam, as the ZeRO paper counts) and one training step, for a
    ZeRO stage over ``group``; every collective on this module's rings, so that
    counting_sends sees it all."""
    model = mlp(sizes, seed=0)
    if stage == 3:
        model = FullyShardedDataParallel(model, use_ring=True, group=group,
                                         compute_dtype=getattr(torch, compute_dtype) if compute_dtype else None)
    if stage in (1, 2):
        opt = ShardedOptimizer(model.parameters(), torch.optim.AdamW, lr=1e-3, shard_gradients=stage == 2,
                               use_ring=True, group=group)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if stage == 0:
            all_reduce_mean([p.grad for p in model.parameters()], use_ring=True, group=group)
        if stage == 3:
            model.finish_gradient_synchronization()
        opt.step()
    return model, opt, step


def memory_and_traffic(rank: int, world_size: int, runs: list[dict]) -> list[dict]:
    """For each run (``stage`` 0–3, ``sizes`` of an MLP, optional ``compute_dtype``, optional
    ``N`` < world size: the run uses ranks 0 … N−1 only, as a process group): one training
    step on this rank's part of a batch of 12; the elements it sent; the bytes it holds after
    the step (:func:`held_bytes`); the calculator's prediction for the same Ψ, stage, N and
    precision; with ``trace``, the FSDP step's events. A rank outside a run's group skips it."""
    sizes = sorted({run.get("N", world_size) for run in runs})
    groups = {n: first_ranks({"N": n}, rank, world_size)[0] for n in sizes}      # every rank must make them
    return [_measure(run, rank, run.get("N", world_size), groups[run.get("N", world_size)]) for run in runs
            if rank < run.get("N", world_size)]


def _measure(run: dict, rank: int, n: int, group) -> dict:
    stage, sizes, dtype = run["stage"], tuple(run["sizes"]), run.get("compute_dtype")
    gen = torch.Generator().manual_seed(2)
    x, y = my_part((torch.randn(12, sizes[0], generator=gen), torch.randint(0, sizes[-1], (12,), generator=gen)),
                   rank, n)
    before = None
    if run.get("census", True):
        gc.collect()                   # garbage of earlier runs would count as "other"
        before = alive_tensors()
    model, opt, step = _stage_setup(stage, sizes, dtype, group)
    if run.get("trace"):
        model.trace = []
    with counting_sends() as sent:
        step(x, y)
    return {"stage": stage, "N": n, "sizes": sizes, "compute dtype": dtype, "held": held_bytes(model, opt, before),
            "elements sent": sent["elements"], "trace": getattr(model, "trace", None),
            "predicted": _predicted(stage, sizes, dtype, n, opt, group)}


def _predicted(stage: int, sizes: tuple, dtype: str | None, world_size: int, opt: torch.optim.Optimizer,
               group=None) -> dict:
    """costmodel.training_memory for this run. Its ``num_tensors`` counts Adam's 4-byte step
    counters: one per tensor the optimizer updates, on one rank when nothing is sharded, on
    all N ranks together when the state is (it then divides them by N)."""
    local = opt.optim if isinstance(opt, ShardedOptimizer) else opt
    counters = torch.tensor([float(sum(len(g["params"]) for g in local.param_groups))])
    if stage > 0:
        dist.all_reduce(counters, group=group)
    psi = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    return costmodel.training_memory(psi, precision="mixed" if dtype else "fp32", optimizer="adam",
                                     num_tensors=int(counters.item()), zero_stage=stage, data_parallel=world_size)
