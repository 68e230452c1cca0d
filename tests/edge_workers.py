"""The training edge cases a real script meets, each run over real processes against its
reference: parameters that no rank, or only some ranks, use; a learning-rate scheduler resumed
from a saved ZeRO state; BatchNorm's buffers under DataParallel; a second backward after one
forward; FSDP with a weight tied to the parent's own forward, with the root selected as one
unit, and with fp16 compute beside float32 norms; PowerSGD on half-precision gradients.

Each worker takes ``config["N"]``: the run uses the first N ranks as a process group (every
rank must call it; a rank outside returns None), so one launch of 3 processes runs each case
on 2 and on 3 ranks. The tests import these workers; ``python tests/edge_workers.py`` runs each
case in a launch of its own and prints the figure it measures, so that a case that crashes its
ranks is reported rather than fatal (with ``PYTHONPATH`` pointing at another checkout, it
measures that checkout's code). Spawned ranks import this module by name from the tests folder.
"""

from __future__ import annotations

import copy
import functools
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from nnpar_lite import sharding
from nnpar_lite.data_parallel import DataParallel, allreduce_gradients
from nnpar_lite.experiments import sharding as runs
from nnpar_lite.models import mlp
from nnpar_lite.util import even_bounds, max_abs_difference

STEPS = 4


def run_many(rank: int, world_size: int, cases: list[tuple[str, dict]]) -> list:
    """Several cases in one launch: ``[(worker name, config), …]`` → their results, in order."""
    return [globals()[name](rank, world_size, config) for name, config in cases]


def _batches(sizes: tuple, batch: int = 11, steps: int = STEPS, seed: int = 1) -> list:
    """The same random global batches on every rank: inputs of sizes[0] features, sizes[-1] classes."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, sizes[0], generator=gen), torch.randint(0, sizes[-1], (batch,), generator=gen))
            for _ in range(steps)]


def _rows(batch: tuple, rank: int, n: int) -> tuple:
    """Rank ``rank``'s rows of a batch cut into n near-equal parts (11 rows: 6 + 5, or 4 + 4 + 3)."""
    start, stop = even_bounds(len(batch[0]), n)[rank]
    return tuple(t[start:stop] for t in batch)


def _error(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


# ------------------------------------------------------------ parameters without a gradient
class Branchy(nn.Module):
    """``extra`` runs only when asked (on some ranks), ``never`` never runs. Sizes 5 → 4 → 3:
    tensors of 20, 4, 16, 4, 16, 4, 12 and 3 numbers, most uneven over 2 or 3 ranks."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.extra, self.never, self.last = nn.Linear(5, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x, use_extra: bool = False):
        h = torch.tanh(self.first(x))
        return self.last(torch.tanh(self.extra(h)) if use_extra else h)


def _optimizer(params, config: dict):
    if config.get("optimizer", "sgd") == "adamw":
        return torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)
    return torch.optim.SGD(params, lr=0.2)


def _scheme(config: dict, group) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Branchy wrapped (or not) and its optimizer, for ``config["scheme"]``."""
    from torch.nn.parallel import DistributedDataParallel

    scheme, model = config["scheme"], Branchy()
    if scheme in ("ZeRO-1", "ZeRO-2"):
        cls, hyper = (torch.optim.AdamW, dict(lr=0.05, weight_decay=0.1)) if config.get("optimizer") == "adamw" \
            else (torch.optim.SGD, dict(lr=0.2))
        return model, sharding.ShardedOptimizer(model.parameters(), cls, shard_gradients=scheme == "ZeRO-2",
                                                group=group, **hyper)
    if scheme == "DataParallel":
        model = DataParallel(model, bucket_mb=60 / 2 ** 20, group=group)        # a bucket per layer or two
    elif scheme == "DDP":
        model = DistributedDataParallel(model, find_unused_parameters=True, process_group=group)
    return model, _optimizer(model.parameters(), config)


def _train_step(scheme: str, model, opt, x, y, use_extra: bool, group) -> None:
    opt.zero_grad()
    F.cross_entropy(model(x, use_extra), y).backward()
    if scheme == "allreduce_gradients":
        allreduce_gradients(model, group=group)
    elif scheme == "DataParallel":
        model.finish_gradient_synchronization()
    opt.step()


def unused_parameters(rank: int, world_size: int, config: dict) -> dict | None:
    """``config``: scheme ("allreduce_gradients", "DataParallel", "ZeRO-1", "ZeRO-2"), optimizer
    ("sgd" or "adamw"), users (the ranks that run ``extra``), N. Branchy trains for 4 steps with
    the scheme and, side by side, with DDP (``find_unused_parameters=True``) and in one process
    on every rank's rows, each rank's rows through the layers that rank runs, the loss the mean
    of the ranks' losses (what DDP averages). Per step, the largest parameter difference from
    each; and how far ``never`` moved (a parameter that no rank uses must not move)."""
    group, rank, n = runs.first_ranks(config, rank, world_size)
    if rank is None:
        return None
    users = set(config["users"])
    (ours, opt), (ddp, ddp_opt) = _scheme(config, group), _scheme(dict(config, scheme="DDP"), group)
    reference = Branchy()
    reference_opt = _optimizer(reference.parameters(), config)
    report = {"vs one process": [], "vs DDP": []}
    for batch in _batches((5, 3)):
        for scheme, model, optimizer in ((config["scheme"], ours, opt), ("DDP", ddp, ddp_opt)):
            _train_step(scheme, model, optimizer, *_rows(batch, rank, n), rank in users, group)
        reference_opt.zero_grad()
        losses = [F.cross_entropy(reference(x, r in users), y) for r, (x, y) in
                  enumerate(_rows(batch, r, n) for r in range(n))]
        (sum(losses) / n).backward()
        reference_opt.step()
        plain = getattr(ours, "module", ours)
        report["vs one process"].append(max_abs_difference(plain, reference))
        report["vs DDP"].append(max_abs_difference(plain, ddp.module))
    report["never moved"] = max_abs_difference(list(getattr(ours, "module", ours).never.parameters()),
                                               list(Branchy().never.parameters()))
    dist.barrier(group=group)
    return report


# ------------------------------------------------------------ a scheduler resumed from a ZeRO state
def scheduler_resume(rank: int, world_size: int, config: dict) -> dict | None:
    """ZeRO-1 (ZeRO-2 with ``config["zero2"]``), AdamW and StepLR(step_size=1, gamma=0.5) on
    mlp(7, 5, 3): 6 steps without a break; and 3 steps, the model, the optimizer's shard and the
    scheduler saved, a fresh model, optimizer and scheduler loading them, 3 more steps. Beside
    them AdamW with the same scheduler in one process. Returns the largest parameter difference
    of the resumed run from the uninterrupted one and from one process, and the learning rate
    ``param_groups`` holds after loading against the inner optimizer's and the scheduler's."""
    group, rank, n = runs.first_ranks(config, rank, world_size)
    if rank is None:
        return None
    batches = _batches((7, 3), batch=12, steps=6)          # 12 rows: equal parts, the mean of means is the mean

    def build(lr=0.05):
        model = mlp((7, 5, 3), seed=0)
        opt = sharding.ShardedOptimizer(model.parameters(), torch.optim.AdamW, lr=lr, weight_decay=0.1,
                                        shard_gradients=config.get("zero2", False), group=group)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def train(model, opt, scheduler, part):
        for x, y in part:
            opt.zero_grad()
            F.cross_entropy(model(*_rows((x, y), rank, n)[:1]), _rows((x, y), rank, n)[1]).backward()
            opt.step()
            scheduler.step()

    whole, first, resumed = build(), build(), build()
    train(*whole, batches)
    train(*first, batches[:3])
    saved = [copy.deepcopy(part.state_dict()) for part in first]
    for part, state in zip(resumed, saved):
        part.load_state_dict(state)
    after_load = [resumed[1].param_groups[0]["lr"], resumed[1].optim.param_groups[0]["lr"],
                  resumed[2].get_last_lr()[0]]
    train(*resumed, batches[3:])
    reference = mlp((7, 5, 3), seed=0)
    _one_process_adamw(reference, batches)
    return {"resumed vs uninterrupted": max_abs_difference(resumed[0], whole[0]),
            "uninterrupted vs one process": max_abs_difference(whole[0], reference),
            "resumed vs one process": max_abs_difference(resumed[0], reference),
            "lr after loading: ours, inner, scheduler's": after_load}


def _one_process_adamw(model: nn.Module, batches: list) -> None:
    """The reference of :func:`scheduler_resume`: the whole batch in one process, AdamW, StepLR(1, 0.5)."""
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        scheduler.step()


# ------------------------------------------------------------ DataParallel: buffers, a second backward
def batchnorm_buffers(rank: int, world_size: int, config: dict) -> dict | None:
    """DataParallel and DDP, both broadcasting buffers as DDP does by default, train
    mlp(6, 5, 3) with BatchNorm side by side on uneven rows, ``config["micro_steps"]`` (default
    2) micro-batches accumulated under no_sync, and a forward under no_grad after every other
    step (DDP then skips the next broadcast). Per step, on this rank: the largest difference of
    the buffers (running mean, running variance, batches tracked) and of the parameters."""
    from torch.nn.parallel import DistributedDataParallel

    group, rank, n = runs.first_ranks(config, rank, world_size)
    if rank is None:
        return None
    models = {"ours": DataParallel(mlp((6, 5, 3), seed=rank, batch_norm=True), group=group),
              "ddp": DistributedDataParallel(mlp((6, 5, 3), seed=rank, batch_norm=True), process_group=group)}
    opts = {name: torch.optim.SGD(m.parameters(), lr=0.2) for name, m in models.items()}
    k, report = config.get("micro_steps", 2), {"buffers": [], "parameters": []}
    for step, batch in enumerate(_batches((6, 3), batch=22 * k, steps=STEPS)):
        for name, model in models.items():
            opts[name].zero_grad()
            for micro in range(k):
                x, y = _rows(tuple(t[micro::k] for t in batch), rank, n)
                with model.no_sync() if micro < k - 1 else torch.enable_grad():
                    (F.cross_entropy(model(x), y) / k).backward()
            if name == "ours":
                model.finish_gradient_synchronization()
            opts[name].step()
            if step % 2:
                with torch.no_grad():
                    model(x)                        # updates the running statistics, not synchronised after
        report["buffers"].append(max_abs_difference(list(models["ours"].module.buffers()),
                                                    list(models["ddp"].module.buffers())))
        report["parameters"].append(max_abs_difference(models["ours"].module, models["ddp"].module))
    dist.barrier(group=group)
    return report


def second_backward(rank: int, world_size: int, config: dict) -> dict | None:
    """DataParallel: one forward, two backward passes through it (``retain_graph``), then the
    synchronisation. What it says; if it says nothing, how far the gradients are from twice the
    ranks' average (what two backward passes through one graph add up to)."""
    group, rank, n = runs.first_ranks(config, rank, world_size)
    if rank is None:
        return None
    model, plain = DataParallel(mlp((6, 5, 3), seed=0), bucket_mb=40 / 2 ** 20, group=group), mlp((6, 5, 3), seed=0)
    x, y = _rows(_batches((6, 3))[0], rank, n)
    expected = torch.autograd.grad(F.cross_entropy(plain(x), y), list(plain.parameters()))
    expected = [g.clone() for g in expected]
    for g in expected:
        dist.all_reduce(g, group=group)
        g.mul_(2 / n)
    loss = F.cross_entropy(model(x), y)
    try:
        loss.backward(retain_graph=True)
        loss.backward()
        model.finish_gradient_synchronization()
    except RuntimeError as error:
        return {"error": _error(error)}
    finally:
        dist.barrier(group=group)
    return {"gradients vs twice the average": max_abs_difference([p.grad for p in model.module.parameters()],
                                                                 expected)}


# ------------------------------------------------------------ FSDP
class TiedToParent(nn.Module):
    """GPT-2's tied embedding: ``wte`` embeds the tokens, and the parent's own forward reuses
    its weight as the output layer, ``h @ self.wte.weight.T``. 11 tokens of width 6."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.wte, self.block = nn.Embedding(11, 6), nn.Linear(6, 6)

    def forward(self, tokens):
        return torch.tanh(self.block(self.wte(tokens))) @ self.wte.weight.T


def _token_batches(steps: int = STEPS) -> list:
    gen = torch.Generator().manual_seed(3)
    return [(torch.randint(0, 11, (12, 5), generator=gen), torch.randint(0, 11, (12, 5), generator=gen))
            for _ in range(steps)]


def _sgd_steps(model: nn.Module, batches: list, rank: int, n: int, after_backward=None, full=None) -> list[dict]:
    """SGD (lr 0.5) on this rank's rows of each batch (the whole batch when n == 1); the full
    parameters after each step, read by ``full`` (a function of the model) when given."""
    opt, history = torch.optim.SGD(model.parameters(), lr=0.5), []
    for batch in batches:
        x, y = _rows(batch, rank, n)
        opt.zero_grad()
        logits = model(x)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
        if after_backward is not None:
            after_backward()
        opt.step()
        if full is None and isinstance(model, sharding.FullyShardedDataParallel):
            full = sharding.gather_full_params
        history.append(full(model) if full else {name: p.detach().clone() for name, p in model.named_parameters()})
    return history


def fsdp_tied_to_parent(rank: int, world_size: int, config: dict) -> dict | None:
    """FSDP of TiedToParent, each module holding parameters its own unit (``wte``, ``block``):
    the parent's forward reads ``self.wte.weight`` after wte's unit was freed. Against one
    process on the whole batch, SGD: the largest parameter difference per step, or the error."""
    group, rank, n = runs.first_ranks(config, rank, world_size)
    if rank is None:
        return None
    reference = _sgd_steps(TiedToParent(), _token_batches(), 0, 1)
    try:
        model = sharding.FullyShardedDataParallel(TiedToParent(), group=group)
        ours = _sgd_steps(model, _token_batches(), rank, n, model.finish_gradient_synchronization)
    except (AttributeError, RuntimeError, TypeError) as error:
        return {"error": _error(error)}
    finally:
        dist.barrier(group=group)
    return {"vs one process": [max_abs_difference(a, [b[name] for name in a]) for a, b in zip(ours, reference)],
            "units": [u.name for u in model.units]}


def fsdp_root_unit(rank: int, world_size: int, config: dict) -> dict | None:
    """FSDP of mlp(7, 5, 3) with ``shard_module`` selecting the root only. The units it made,
    the bytes of weights this rank holds against the whole model's, and, per step (SGD), the
    largest parameter difference from one process and from FSDP2's ``fully_shard(root)``."""
    group, rank, n = runs.first_ranks(config, rank, world_size)
    if rank is None:
        return None
    batches = _batches((7, 3), batch=12)
    model = mlp((7, 5, 3), seed=0)
    ours = sharding.FullyShardedDataParallel(model, shard_module=lambda m: m is model, group=group)
    held = sum(p.numel() * p.element_size() for p in ours.parameters())
    whole = sum(p.numel() * p.element_size() for p in mlp((7, 5, 3), seed=0).parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # torch's FSDP2 may warn about its internals
        theirs = _sgd_steps(runs._fully_shard(mlp((7, 5, 3), seed=0), n, group), batches, rank, n,
                            full=runs._fsdp2_full)
    ours_history = _sgd_steps(ours, batches, rank, n, ours.finish_gradient_synchronization)
    reference = _sgd_steps(mlp((7, 5, 3), seed=0), batches, 0, 1)
    dist.barrier(group=group)
    return {"units": [u.name for u in ours.units], "held bytes": held, "whole model bytes": whole,
            "vs one process": [max_abs_difference(a, [b[k] for k in a]) for a, b in zip(ours_history, reference)],
            "vs FSDP2": [max_abs_difference(a, [b[k] for k in a]) for a, b in zip(ours_history, theirs)]}


def fsdp_mixed_precision_with_whole_norms(rank: int, world_size: int, config: dict) -> dict | None:
    """FSDP with ``compute_dtype`` (``config["dtype"]``, default float16) of Linear, LayerNorm,
    Tanh, Linear, only the Linear layers sharded. Against the same mixed precision written out
    in one process (:func:`mixed_reference_forward`), SGD: the largest parameter difference per
    step, or the error; the dtype each module computed in, and the LayerNorm's parameters' and
    gradients' dtypes. The first outputs, against the written-out forward and against the whole
    model cast to the compute dtype (norm included: the recipe this contract replaces)."""
    group, rank, n = runs.first_ranks(config, rank, world_size)
    if rank is None:
        return None
    dtype = getattr(torch, config.get("dtype", "float16"))
    build = lambda: runs.build_model(dict(model="layernorm", sizes=(6, 5, 4)))      # noqa: E731
    batches = _batches((6, 4), batch=12)
    try:
        model = sharding.FullyShardedDataParallel(build(), compute_dtype=dtype, group=group,
                                                  shard_module=lambda m: isinstance(m, nn.Linear))
    except ValueError as error:
        dist.barrier(group=group)
        return {"error": _error(error)}
    seen: dict[str, tuple] = {}

    def note(name: str, module: nn.Module, args: tuple, output) -> None:      # returns None: output unchanged
        seen.setdefault(name, (str(args[0].dtype), str(getattr(module, "weight", args[0]).dtype)))

    for name, m in model.module.named_children():
        m.register_forward_hook(functools.partial(note, name))
    x = _rows(batches[0], rank, n)[0]
    with torch.no_grad():
        outputs = {"written out": mixed_reference_forward(build(), x, dtype),
                   "all in the compute dtype": copy.deepcopy(build()).to(dtype)(x.to(dtype)).float()}
        first = model(x)
    ours = _sgd_steps(model, batches, rank, n, model.finish_gradient_synchronization)
    reference = _mixed_reference(build(), batches, dtype)
    norm = model.module[1]
    dist.barrier(group=group)
    return {"vs one process": [max_abs_difference(a, [b[k] for k in a]) for a, b in zip(ours, reference)],
            "outputs vs": {name: max_abs_difference(first, out) for name, out in outputs.items()},
            "computed in (input, weight)": seen,
            "norm dtypes": {str(norm.weight.dtype), str(norm.weight.grad.dtype), str(norm.bias.dtype)}}


def mixed_reference_forward(model: nn.Sequential, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The mixed precision FSDP2's ``MixedPrecisionPolicy`` gives a model whose Linear layers
    are sharded and whose LayerNorm is not, written out: each Linear casts its input and its
    weights to ``dtype``; the LayerNorm and what follows it compute in float32."""
    first, norm, _, last = model
    h = F.linear(x.to(dtype), first.weight.to(dtype), first.bias.to(dtype))
    h = torch.tanh(F.layer_norm(h.float(), norm.normalized_shape, norm.weight, norm.bias, norm.eps))
    return F.linear(h.to(dtype), last.weight.to(dtype), last.bias.to(dtype)).float()


def _mixed_reference(model: nn.Sequential, batches: list, dtype: torch.dtype) -> list[dict]:
    opt, history = torch.optim.SGD(model.parameters(), lr=0.5), []
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(mixed_reference_forward(model, x, dtype), y).backward()
        opt.step()
        history.append({name: p.detach().clone() for name, p in model.named_parameters()})
    return history


# ------------------------------------------------------------ PowerSGD in half precision
def powersgd_half(rank: int, world_size: int, config: dict) -> dict | None:
    """PowerSGD over the ranks on ``config["dtype"]`` gradients (default float16): at full rank
    (min_compression_rate 0) the largest difference of its output from the exact average, and at
    rank 2 whether it ran; or the error. Also our orthogonalisation against torch's hook's on the
    same half-precision matrix."""
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook

    from nnpar_lite import compression

    group, rank, n = runs.first_ranks(config, rank, world_size)
    if rank is None:
        return None
    dtype = getattr(torch, config.get("dtype", "float16"))
    gen = torch.Generator().manual_seed(rank)
    grads = [torch.randn(shape, generator=gen).to(dtype) for shape in ((7, 5), (5,), (12, 9))]
    exact = [g.float() for g in grads]
    for g in exact:
        dist.all_reduce(g, group=group)
        g /= n
    try:
        full = [g.clone() for g in grads]
        compression.PowerSGD(100, min_compression_rate=0).allreduce_(full, group=group)
        compression.PowerSGD(2).allreduce_([g.clone() for g in grads], group=group)
    except RuntimeError as error:
        dist.barrier(group=group)
        return {"error": _error(error)}
    matrix = torch.randn(12, 3, generator=torch.Generator().manual_seed(7)).to(dtype)
    theirs = matrix.clone().unsqueeze(0)
    powerSGD_hook._orthogonalize(theirs)
    return {"full rank vs exact": max_abs_difference([f.float() for f in full], exact),
            "orthogonalisation vs torch's hook": max_abs_difference(compression._orthonormal(matrix).float(),
                                                                    theirs[0].float())}


# ------------------------------------------------------------ the table
CASES = [
    ("ZeRO-1, AdamW, a parameter no rank uses: |ZeRO-1 − one process|", "unused_parameters",
     dict(scheme="ZeRO-1", optimizer="adamw", users=[0, 1]), "vs one process"),
    ("ZeRO-2, AdamW, a parameter no rank uses: |ZeRO-2 − one process|", "unused_parameters",
     dict(scheme="ZeRO-2", optimizer="adamw", users=[0, 1]), "vs one process"),
    ("allreduce_gradients, a parameter used on rank 0 only: |ours − DDP|", "unused_parameters",
     dict(scheme="allreduce_gradients", users=[0]), "vs DDP"),
    ("ZeRO-2, a parameter used on rank 0 only: |ours − DDP|", "unused_parameters",
     dict(scheme="ZeRO-2", users=[0]), "vs DDP"),
    ("DataParallel, a parameter used on rank 0 only: |ours − DDP|", "unused_parameters",
     dict(scheme="DataParallel", users=[0]), "vs DDP"),
    ("ZeRO-1 + StepLR, resumed from its state: |resumed − uninterrupted|", "scheduler_resume",
     dict(), "resumed vs uninterrupted"),
    ("DataParallel + BatchNorm: |buffers − DDP's| on any rank", "batchnorm_buffers", dict(), "buffers"),
    ("DataParallel, a second backward after one forward", "second_backward", dict(), None),
    ("FSDP, a weight tied to the parent's forward: |FSDP − one process|", "fsdp_tied_to_parent", dict(),
     "vs one process"),
    ("FSDP, shard_module selects the root: weight bytes held by a rank", "fsdp_root_unit", dict(), "held bytes"),
    ("FSDP, compute_dtype with a whole LayerNorm: |FSDP − one process|", "fsdp_mixed_precision_with_whole_norms",
     dict(), "vs one process"),
    ("PowerSGD on float16 gradients, full rank: |output − exact average|", "powersgd_half", dict(),
     "full rank vs exact"),
]


def _figure(reports: list, key: str | None) -> str:
    """One case's figure over the ranks: the error if a rank reported one, else the largest value."""
    errors = [r["error"] for r in reports if r and "error" in r]
    if errors:
        return errors[0][:150]
    if key is None:
        return "; ".join(f"{k}: {v:.3g}" for k, v in reports[0].items())
    values = [v for r in reports if r for v in (r[key] if isinstance(r[key], list) else [r[key]])]
    return f"{max(values):.3g}"


def main(world_size: int = 2) -> None:
    """Each case in its own launch of ``world_size`` ranks; a launch that fails prints its error."""
    from nnpar_lite.distributed import launch

    for title, worker, config, key in CASES:
        try:
            figure = _figure(launch(globals()[worker], world_size, dict(config, N=world_size), timeout=60), key)
        except Exception as error:                   # a rank crashed or hung: that is the figure
            figure = f"{type(error).__name__}: " + str(error).strip().splitlines()[0][:150]
        print(f"{title:<75} {figure}", flush=True)
    from nnpar_lite import asynchronous
    model = Branchy()
    try:
        asynchronous.stale_sgd(model, [(torch.randn(4, 5), torch.randint(0, 3, (4,)))], 0.1, 0)
        print(f"{'stale_sgd, a parameter without a gradient':<75} no error")
    except (TypeError, ValueError) as error:
        print(f"{'stale_sgd, a parameter without a gradient':<75} {_error(error)[:150]}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import edge_workers                              # the ranks import the workers from this module by name

    edge_workers.main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
