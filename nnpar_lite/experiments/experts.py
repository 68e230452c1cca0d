"""Chapter 11's runs: the MoE layer against its rule written as a loop; the expert-parallel
layer against the one-process layer on 2, 3 and 4 ranks; the bytes of its all-to-alls,
counted; a tiny MoE GPT trained with expert × data parallelism against one process; the
load of the experts over a training run with and without the load-balancing loss; a
skewed router's work per rank; the routing table the widget draws. The algorithm is in
:mod:`nnpar_lite.expert_parallel`.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from .. import costmodel
from ..collectives import count_communication
from ..data import corpus_batches
from ..formulas import sgd_step
from ..expert_parallel import (ExpertParallelMoE, MoE, average_gradients, aux_loss, expert_parallel_gpt, moe_gpt,
                               named_parameters_as_in_one_process, route, run_experts)
from ..gpt import corpus_config, lm_loss
from ..util import one_thread
from .sharding import first_ranks


def moe_by_a_loop(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """The rule, token by token, in plain Python: the reference the layer is checked against.
    Each expert has C places (none without a capacity factor); they go to first choices
    first, then in token order."""
    tokens = x.reshape(-1, moe.d_model)
    logits = moe.gate(tokens)
    k, num_experts = moe.top_k, moe.num_experts
    choices = [sorted(range(num_experts), key=lambda e: -float(row[e]))[:k] for row in logits.detach()]
    capacity = (len(tokens) * k if moe.capacity_factor is None
                else costmodel.expert_capacity(len(tokens), k, num_experts, moe.capacity_factor))
    taken, kept = [0] * num_experts, set()
    for j in range(k):
        for t in range(len(tokens)):
            if taken[choices[t][j]] < capacity:
                taken[choices[t][j]] += 1
                kept.add((t, j))
    rows = []
    for t, chosen in enumerate(choices):
        p = logits[t].softmax(-1)
        w = logits[t, chosen].softmax(-1) if moe.rule == "mixtral" else p[chosen]
        y = tokens[t] * 0
        for j, e in enumerate(chosen):
            if (t, j) in kept:
                y = y + w[j] * moe.experts[e](tokens[t])
        rows.append(y)
    return torch.stack(rows).view_as(x) if rows else x * 0


def experts_runs(rank: int, world_size: int, runs: list[tuple[str, Any]]) -> list:
    """Several of this module's workers in one launch: ``[(worker name, argument), …]``."""
    return [globals()[name](rank, world_size, argument) for name, argument in runs]


# ------------------------------------------------------------ the layer against one process
def layer_for_case(case: dict, num_experts: int, *, d_model: int = 6, d_hidden: int = 10, seed: int = 3,
                   weight_seed: int = 7) -> MoE:
    """The case's MoE in float64 (``case``: k, and optionally cf, rule, starve), its weights
    redrawn N(0, 0.5²) so that outputs and gradients are of order 1 (a difference of 1e-12 then
    means something). With ``starve`` the last expert's gate row scores −100 on feature 0, which
    the tokens keep ≥ 1: it gets no token."""
    moe = MoE(d_model, d_hidden, num_experts, top_k=case["k"], capacity_factor=case.get("cf"),
              rule=case.get("rule", "mixtral"), seed=seed).double()
    g = torch.Generator().manual_seed(weight_seed)
    with torch.no_grad():
        for p in moe.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        if case.get("starve"):
            moe.gate.weight[-1] = 0.0
            moe.gate.weight[-1, 0] = -100.0
    return moe


def check_tokens(rank: int, case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank r's tokens (``case["counts"][r]`` of them) and the c_r of its loss Σ <y_r, c_r>."""
    g = torch.Generator().manual_seed(50 + rank)
    x = torch.randn(case["counts"][rank], 6, generator=g, dtype=torch.float64)
    if case.get("starve"):
        x[:, 0] = 1.0 + x[:, 0].abs()
    return x.requires_grad_(), torch.randn(x.shape, generator=g, dtype=torch.float64)


def _grads(loss: torch.Tensor, params: list) -> list:
    return list(torch.autograd.grad(loss, params, allow_unused=True))


def _largest(pairs) -> float:
    return max((float((a - b).detach().abs().max()) for a, b in pairs if a is not None and a.numel()), default=0.0)


def against_one_process(rank: int, world_size: int, config: dict) -> dict | None:
    """On the first ``config["N"]`` ranks, for each case: output, input, gate and expert
    gradients of the ExpertParallelMoE against the MoE in one process on every rank's tokens
    (loss Σ_r <y_r, c_r> + 0.1 · aux_r; an expert's gradient summed over the ranks), and
    whether the same assignments were dropped and the same experts got no gradient."""
    group, rank, n = first_ranks(config, rank, world_size)
    if rank is None:
        return None
    gaps, same, dropped = {"output": 0.0, "input gradient": 0.0, "gate gradient": 0.0, "expert gradients": 0.0}, True, 0
    for case in config["cases"]:
        moe = layer_for_case(case, case["per_rank"] * n)
        ep = ExpertParallelMoE(copy.deepcopy(moe), group=group)
        x, c = check_tokens(rank, case)
        y = ep(x)
        ((y * c).sum() + 0.1 * ep.aux_loss).backward()
        expert_grads = None
        for r in range(n):
            xr, cr = check_tokens(r, case)
            yr = moe(xr)
            params = [xr, moe.gate.weight] + [p for e in moe.experts[ep.first:ep.first + ep.per_rank]
                                              for p in e.parameters()]
            grads = _grads((yr * cr).sum() + 0.1 * moe.aux_loss, params)
            expert_grads = grads[2:] if expert_grads is None else [
                b if a is None else a if b is None else a + b for a, b in zip(expert_grads, grads[2:])]
            if r == rank:
                mine, kept = (yr, grads[0], grads[1]), moe.routing.kept
        got = [p.grad for e in ep.local_experts for p in e.parameters()]
        same &= torch.equal(ep.routing.kept, kept) and [g is None for g in got] == [g is None for g in expert_grads]
        for key, pairs in zip(gaps, ([(y, mine[0])], [(x.grad, mine[1])], [(ep.gate.weight.grad, mine[2])],
                                     zip(got, expert_grads))):
            gaps[key] = max(gaps[key], _largest(pairs))
        dropped += ep.routing.dropped
    return {"N": n, "gaps": gaps, "same drops and unused experts": same, "dropped": dropped}


# ------------------------------------------------------------ what the all-to-alls send
def traffic(rank: int, world_size: int, config: dict) -> dict | None:
    """One forward and backward of an ExpertParallelMoE (float64) on the first N ranks, every
    collective logged: each all-to-all's bytes sent, beside the rows this rank routed to
    experts of other ranks and what the layer's routing says."""
    group, rank, n = first_ranks(config, rank, world_size)
    if rank is None:
        return None
    moe = MoE(config["d"], 2 * config["d"], config["E"], top_k=config["k"], capacity_factor=config.get("cf"),
              seed=0).double()
    ep = ExpertParallelMoE(moe, group=group)
    x = torch.randn(config["tokens"], config["d"], generator=torch.Generator().manual_seed(rank), dtype=torch.float64)
    with count_communication() as log:
        ep(x).square().sum().backward()
    routing = ep.routing
    remote = int((routing.kept & (routing.experts // ep.per_rank != rank)).sum())
    return {"N": n, "rank": rank, "all-to-alls": [(e["bytes"], e["sent"]) for e in log if e["op"] == "all_to_all"],
            "rows to other ranks": remote, "load": routing.load(config["E"]).tolist(),
            "dropped": routing.dropped, "received": ep.received.tolist()}


# ------------------------------------------------------------ a tiny MoE GPT, trained
GPT_RUN = dict(sizes=dict(block_size=16, n_layer=2, n_head=2, n_embd=16), experts=12, k=2, cf=None, alpha=0.1,
               batch=2, steps=3, lr=0.5)


def _model(config: dict) -> torch.nn.Module:
    return moe_gpt(corpus_config(**config["sizes"]), config["experts"], top_k=config["k"],
                   capacity_factor=config["cf"], seed=0, dtype=torch.float64)


def _batches(config: dict, world_size: int) -> list:
    return corpus_batches(config["batch"] * world_size, config["sizes"]["block_size"], config["steps"], seed=2)


@torch.no_grad()
def sgd_update(model: torch.nn.Module, lr: float) -> None:
    """The article's step θ ← θ − η g (:func:`nnpar_lite.formulas.sgd_step`) on every parameter
    that has a gradient (an expert no token reached has none, and keeps its weights), then
    the gradients cleared. (Written out rather than torch.optim.SGD, whose first use in a
    fresh process imports torch's compiler: seconds.)"""
    used = [p for p in model.parameters() if p.grad is not None]
    sgd_step(used, [p.grad for p in used], lr, out=used)
    for p in used:
        p.grad = None


def train_expert_parallel(rank: int, world_size: int, config: dict) -> dict | None:
    """Expert × data parallelism on the first N ranks: rank r trains on rows [r·b, (r+1)·b) of
    each global batch, loss lm + α·aux, SGD; gradients by :func:`average_gradients`. Returns
    the losses and this rank's parameters under their one-process names."""
    group, rank, n = first_ranks(config, rank, world_size)
    if rank is None:
        return None
    model = expert_parallel_gpt(_model(config), group=group)
    losses, b = [], config["batch"]
    for idx, targets in _batches(config, n):
        loss = lm_loss(model(idx[rank * b:(rank + 1) * b]), targets[rank * b:(rank + 1) * b])
        (loss + config["alpha"] * aux_loss(model)).backward()
        average_gradients(model, group=group)
        sgd_update(model, config["lr"])
        losses.append(loss.item())
    return {"losses": losses, "params": {k: p.detach().clone() for k, p in named_parameters_as_in_one_process(model)}}


def train_one_process(config: dict, world_size: int) -> dict:
    """The reference: the unsplit MoE GPT in one process, loss 1/N Σ_r (lm_r + α·aux_r) over the
    N ranks' rows of each batch, each run apart (capacity counts each rank's tokens), SGD."""
    model = _model(config)
    b, losses = config["batch"], []
    with one_thread():
        for idx, targets in _batches(config, world_size):
            for r in range(world_size):
                loss = lm_loss(model(idx[r * b:(r + 1) * b]), targets[r * b:(r + 1) * b])
                ((loss + config["alpha"] * aux_loss(model)) / world_size).backward()
                losses.append(loss.item())
            sgd_update(model, config["lr"])
    return {"losses": losses, "params": {k: p.detach().clone() for k, p in model.named_parameters()}}


# ------------------------------------------------------------ balance over a training run
BALANCE_RUN = dict(sizes=dict(block_size=32, n_layer=2, n_head=2, n_embd=32), experts=8, k=2, cf=1.0,
                   batch=8, steps=120, lr=3e-3, last=20)


def balance_run(config: dict, alpha: float) -> dict:
    """One process trains the MoE GPT (AdamW, float64) with loss lm + α·aux; after every step,
    each layer's load (tokens each expert takes), what each expert was chosen for, and the
    assignments capacity dropped. Routing is per token: the same on any number of ranks."""
    model = moe_gpt(corpus_config(**config["sizes"]), config["experts"], top_k=config["k"],
                    capacity_factor=config["cf"], seed=0, dtype=torch.float64)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.0)
    layers = [m for m in model.modules() if isinstance(m, MoE)]
    history = {"wanted": [], "load": [], "dropped": [], "loss": []}
    with one_thread():
        for idx, targets in corpus_batches(config["batch"], config["sizes"]["block_size"], config["steps"], seed=1):
            loss = lm_loss(model(idx), targets)
            opt.zero_grad()
            (loss + alpha * aux_loss(model)).backward()
            opt.step()
            history["wanted"].append([m.routing.wanted(config["experts"]).tolist() for m in layers])
            history["load"].append([m.routing.load(config["experts"]).tolist() for m in layers])
            history["dropped"].append([m.routing.dropped for m in layers])
            history["loss"].append(loss.item())
    return dict(history, alpha=alpha, capacity=layers[0].routing.capacity,
                assignments=config["batch"] * config["sizes"]["block_size"] * config["k"])


# ------------------------------------------------------------ a skewed router
def skewed_router(rank: int, world_size: int, config: dict) -> dict | None:
    """A router that favours expert 0 by ``skew`` (its gate weight on a feature every token
    has at 1): the rows each rank's experts compute, and the seconds they take (measured)."""
    group, rank, n = first_ranks(config, rank, world_size)
    if rank is None:
        return None
    d, repeats = config["d"], config.get("repeats", 5)
    moe = MoE(d, 4 * d, config["E"], top_k=config["k"], seed=0).double()
    with torch.no_grad():
        moe.gate.weight[0, 0] = config["skew"]
    ep = ExpertParallelMoE(moe, group=group)
    x = torch.randn(config["tokens"], d, generator=torch.Generator().manual_seed(rank), dtype=torch.float64)
    x[:, 0] = 1.0
    with torch.no_grad():
        ep(x)
        rows = torch.randn(int(ep.received.sum()), d, dtype=torch.float64)
        start = time.perf_counter()
        for _ in range(repeats):
            run_experts(ep.local_experts, rows, ep.received)
    return {"N": n, "skew": config["skew"], "rows": len(rows), "seconds": (time.perf_counter() - start) / repeats}


# ------------------------------------------------------------ what the widget draws
WIDGET_GRID = dict(experts=(4, 8, 16), top_k=(1, 2), factors=(None, 1.0, 1.25, 1.5, 2.0), ranks=(1, 2, 4, 8),
                   skews=(0.0, 1.0, 2.0), tokens=1024, d_model=4096, bytes_per_element=2)


def routing_table(grid: dict = WIDGET_GRID) -> list[dict]:
    """For every setting (E, k, capacity factor, N ranks dividing E, skew): route ``tokens``
    tokens, 1/N on each rank, by logits N(0, 1) plus skew · (1 − e/E) for expert e (a router
    that favours the first experts), capacity counted per rank as the layer does. Each row:
    what each expert was chosen for and took (summed over the ranks), the assignments dropped,
    and the bytes each rank sends in one all-to-all (rows to other ranks · d · bytes)."""
    rows = []
    with one_thread():
        for E in grid["experts"]:
            for skew in grid["skews"]:
                logits = torch.randn(grid["tokens"], E, generator=torch.Generator().manual_seed(0),
                                     dtype=torch.float64) + skew * (1 - torch.arange(E, dtype=torch.float64) / E)
                rows += [_routed(logits, dict(E=E, k=k, cf=cf, N=n, skew=skew), grid) for k in grid["top_k"]
                         for cf in grid["factors"] for n in grid["ranks"] if E % n == 0]
    return rows


def _routed(logits: torch.Tensor, setting: dict, grid: dict) -> dict:
    """One row of :func:`routing_table`: the logits routed on N ranks of T/N tokens each."""
    E, k, n = setting["E"], setting["k"], setting["N"]
    wanted, load, sent, dropped = torch.zeros(E, dtype=torch.long), torch.zeros(E, dtype=torch.long), [], 0
    for rank, part in enumerate(logits.chunk(n)):
        routing = route(part, k, setting["cf"])
        wanted += routing.wanted(E)
        load += routing.load(E)
        dropped += routing.dropped
        remote = int((routing.kept & (routing.experts // (E // n) != rank)).sum())
        sent.append(remote * grid["d_model"] * grid["bytes_per_element"])
    balanced = costmodel.expert_all_to_all_bytes(len(logits) // n, k, grid["d_model"], n, grid["bytes_per_element"])
    return dict(setting, wanted=wanted.tolist(), load=load.tolist(), dropped=dropped, assignments=len(logits) * k,
                capacity=None if setting["cf"] is None else costmodel.expert_capacity(len(logits) // n, k, E,
                                                                                       setting["cf"]),
                sent=sent, balanced=balanced)


def dispatch_example(tokens: tuple = (5, 4, 3), num_experts: int = 6, top_k: int = 2, capacity_factor: float = 1.0,
                     seed: int = 0) -> dict:
    """A routing small enough to draw: a MoE's gate routes each rank's tokens (rank r holds
    ``tokens[r]`` of them; capacity counted on each rank's own): N, E and, per rank, each
    token's chosen experts and whether each choice was kept."""
    moe = MoE(8, 8, num_experts, top_k=top_k, capacity_factor=capacity_factor, seed=seed).double()
    ranks = []
    for r, count in enumerate(tokens):
        x = torch.randn(count, 8, generator=torch.Generator().manual_seed(seed + r), dtype=torch.float64)
        routing = moe.route(x)
        ranks.append([(e.tolist(), k.tolist()) for e, k in zip(routing.experts, routing.kept)])
    return {"N": len(tokens), "E": num_experts, "ranks": ranks}
