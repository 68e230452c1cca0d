"""Workers only chapter 08's tests launch: every check of one world size in one launch (each
launch costs seconds), and bad input met on real ranks. Spawned ranks import this module by
name from the tests folder, which pytest puts on sys.path."""

import warnings

import torch

from nnpar_lite import sharding
from nnpar_lite.experiments import sharding as runs

TIED = dict(model="tied", sizes=(7, 5, 3), steps=4, batch=12)
MEMORY_RUNS = [dict(stage=s, sizes=runs.MEMORY_SIZES) for s in range(4)] + [
    dict(stage=3, sizes=runs.MEMORY_SIZES, compute_dtype="float16"),
    dict(stage=1, sizes=(10, 7, 3), census=False), dict(stage=2, sizes=(10, 7, 3), census=False),
    dict(stage=3, sizes=(10, 7, 3), census=False)]


def everything(rank: int, world_size: int, _=None) -> dict:
    """Every check on the first 2, 3 and 4 ranks (process groups inside one launch of 4): the
    comparisons, the rings, the memory and traffic runs, the bad-input checks. Our code must
    not warn (torch's references may: they run with warnings off). {N: report, or None on a
    rank outside the first N}."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reports = {n: _one_world_size(rank, world_size, n) for n in (2, 3, 4)}
        memory = runs.memory_and_traffic(rank, world_size, [dict(run, N=n, census=run.get("census", n == 4))
                                                            for n in (2, 3, 4) for run in MEMORY_RUNS])
        for n, report in reports.items():
            if report is not None:
                report["memory"] = [row for row in memory if row["N"] == n]
        reports[world_size].update({"bad input": bad_input_on_ranks(rank, world_size),
                                    "behaviour": fsdp_behaviour(rank, world_size)})
    return reports


def _one_world_size(rank: int, world_size: int, n: int) -> dict | None:
    checks = {
        "zero": runs.zero_against_adamw(rank, world_size, dict(TIED, N=n)),
        "zero on rings": runs.zero_against_adamw(rank, world_size, dict(TIED, use_ring=True, steps=2, N=n)),
        "fsdp": runs.fsdp_against_unsharded(rank, world_size, dict(TIED, compute_dtype="float16", N=n)),
        "fsdp layernorm": runs.fsdp_against_unsharded(rank, world_size, dict(model="layernorm", sizes=(6, 5, 4),
                                                                             steps=3, use_ring=True, N=n)),
        "fsdp bfloat16": runs.fsdp_against_unsharded(rank, world_size, dict(TIED, compute_dtype="bfloat16", steps=2,
                                                                            N=n)),
        "rings": runs.rings_against_torch(rank, world_size, dict(lengths=[1, 3, 10], N=n)),
    }
    return None if rank >= n else checks


def _error(fn) -> str:
    try:
        fn()
    except (ValueError, TypeError) as error:
        return f"{type(error).__name__}: {error}"
    return "no error"


def bad_input_on_ranks(rank: int, world_size: int) -> dict:
    """What a rank says to a shard saved elsewhere, to a half-precision unit with float32
    neighbours, and to a group it is not in."""
    model = runs.build_model(dict(model="mlp", sizes=(4, 3, 2)))
    opt = sharding.ShardedOptimizer(model.parameters(), torch.optim.AdamW, lr=0.1)
    foreign = dict(opt.state_dict(), world_size=world_size + 1)
    mixed = torch.nn.Linear(3, 2)
    mixed.bias = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    other = torch.distributed.new_group([0])
    return {"state of another world": _error(lambda: opt.load_state_dict(foreign)),
            "mixed dtypes": _error(lambda: sharding.FullyShardedDataParallel(mixed)),
            "not in the group": _error(lambda: sharding.ShardedOptimizer(torch.nn.Linear(2, 2).parameters(),
                                                                         torch.optim.SGD, lr=0.1, group=other))
            if rank != 0 else "rank 0 is in it"}


def fsdp_behaviour(rank: int, world_size: int) -> dict:
    """An FSDP model evaluated under no_grad gives the unsharded outputs and leaves nothing
    gathered; two backward passes through one graph (retain_graph) give twice the gradient;
    a module called twice in one forward gets both gradients; a layer's gathered weights are
    really freed (no reference hides them) before the next layer runs; a sharded weight read
    outside a forward says where it went."""
    config = dict(model="tied", sizes=(7, 5, 3))
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(3))
    plain, model = runs.build_model(config), sharding.FullyShardedDataParallel(runs.build_model(config))
    with torch.no_grad():
        evaluated = float((model(x) - plain(x)).abs().max())
    loss = model(x).square().mean()
    loss.backward(retain_graph=True)
    once = [p.grad.clone() for p in model.shards if p.grad is not None]
    loss.backward()
    twice = [p.grad for p in model.shards if p.grad is not None]
    twin, reference = sharding.FullyShardedDataParallel(Twice()), Twice()
    z = torch.randn(4, 5, generator=torch.Generator().manual_seed(4))
    twin(z).sum().backward()
    reference(z).sum().backward()
    full_grad = torch.cat([reference.inner.weight.grad.reshape(-1), reference.inner.bias.grad])
    try:
        outside = f"no error: {model.module.first.weight.T}"        # a sharded weight, read between steps
    except RuntimeError as error:
        outside = str(error)
    return {"freed while the next layer runs": _freed_after_forward(), "after a failed forward": _after_failure(),
            "a sharded weight read outside a forward": outside,
            "no_grad outputs": evaluated, "gathered after no_grad": model.gathered_bytes(),
            "retain_graph doubles": max(float((b - 2 * a).abs().max()) for a, b in zip(once, twice)),
            "called twice": float((twin.shards[0].grad
                                   - sharding.padded(full_grad, world_size).view(world_size, -1)[rank]).abs().max())}


class Twice(torch.nn.Module):
    """One layer applied twice: its weights are gathered for each call, and get both gradients."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.inner = torch.nn.Linear(5, 5)

    def forward(self, z):
        return self.inner(torch.tanh(self.inner(z)))


def _freed_after_forward() -> list[bool]:
    """Whether model[0]'s gathered weights are gone (their memory released) when model[2]'s
    forward starts, and when backward has finished."""
    model = sharding.FullyShardedDataParallel(runs.build_model(dict(model="mlp", sizes=(6, 5, 4))))
    first, found = model.units[0], []
    model.module[0].register_forward_pre_hook(lambda m, args: found.append(first.full.untyped_storage()._weak_ref()))
    model.module[2].register_forward_pre_hook(
        lambda m, args: found.append(torch.UntypedStorage._expired(found[0])))
    model(torch.randn(3, 6)).sum().backward()
    model.finish_gradient_synchronization()
    return [found[1], bool(torch.UntypedStorage._expired(found[0]))]


def _after_failure() -> int:
    """A forward that raises (wrong input width) leaves a layer gathered; the next forward
    starts clean: the bytes left gathered after a good step that follows."""
    model = sharding.FullyShardedDataParallel(runs.build_model(dict(model="mlp", sizes=(6, 5, 4))))
    try:
        model(torch.randn(3, 7))
    except RuntimeError:
        pass
    model(torch.randn(3, 6)).sum().backward()
    model.finish_gradient_synchronization()
    return model.gathered_bytes()
