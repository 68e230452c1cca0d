"""Expert parallelism: a mixture of experts whose experts live on different processes.

A *mixture-of-experts* (MoE) layer replaces one MLP by E of them, the *experts*, and a *gate*
(the router) that sends each token to k of them (Shazeer et al., ICLR 2017):

    logits = x W_gᵀ                              the gate: a score per expert (a Linear, no bias)
    i_1 … i_k = the experts of the k largest logits                      (top-k routing)
    w_j = exp(logits_{i_j}) / Σ_{j'} exp(logits_{i_j'})   softmax over the k chosen only
    y = Σ_j w_j · expert_{i_j}(x)

This is Mixtral's rule (Jiang et al. 2024, "Mixtral of Experts", eq. 1 and 2); GShard's top-2
(Lepikhin et al., ICLR 2021) normalises the two chosen probabilities the same way, but sends a
token to its second expert only at random, in proportion to its weight. The Switch
Transformer (Fedus et al., JMLR 2022) routes each token to one expert and weighs it by
p_i = softmax(all E logits)_i, not renormalised: ``rule="switch"`` (for k > 1, the k chosen
probabilities as they are). With Mixtral's rule and k = 1 the weight
is always 1, and the gate learns nothing from the loss; with Switch's it is p_i < 1.

Each token costs the compute of k experts, whatever E: E multiplies the parameters, not the
work per token.

**Capacity.** With ``capacity_factor`` each expert takes at most C = ⌈factor · T · k / E⌉ of
a batch's T tokens (:func:`nnpar_lite.costmodel.expert_capacity`). Places are given first
choices first (every token's first choice before any token's second), then in token order,
as GShard does; an assignment that finds its expert full is *dropped*: it contributes
nothing, and its weight is not given to the other choices (the residual connection around
the layer still carries the token).

**Expert parallelism** (GShard; DeepSpeed-MoE, Rajbhandari et al., ICML 2022): rank r of N
keeps experts [r·E/N, (r+1)·E/N) and a copy of the gate. Each rank routes its own tokens,
sends each (token, expert) row to the expert's rank by an all-to-all (the *dispatch*), runs
its experts on what arrives, and sends the results back by a second all-to-all (the
*combine*). Capacity is counted on each rank's own tokens, so a rank drops exactly what the
one-process layer drops on that rank's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from . import costmodel
from .collectives import all_to_all, allreduce_mean_, exchange, rank_and_size
from .gpt import GPT, GPTConfig, initialise
from .util import whole_number

RULES = ("mixtral", "switch")


class Expert(nn.Module):
    """One expert: a two-layer MLP, c_proj(GELU(c_fc(x))), d → h → d (the GPT's MLP, h wide)."""

    def __init__(self, d_model: int, d_hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(d_model, d_hidden)
        self.c_proj = nn.Linear(d_hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


# ================================================================ routing
@dataclass
class Routing:
    """Where a batch of T tokens goes: ``experts`` (T, k), the chosen experts, best first;
    ``weights`` (T, k), their weights (differentiable); ``kept`` (T, k), False where capacity
    dropped the assignment; ``probabilities`` (T, E), the softmax of all E logits (for the
    load-balancing loss); ``capacity``, C or None."""
    experts: torch.Tensor
    weights: torch.Tensor
    kept: torch.Tensor
    probabilities: torch.Tensor
    capacity: int | None

    def wanted(self, num_experts: int) -> torch.Tensor:
        """Assignments each expert was chosen for, before capacity."""
        return torch.bincount(self.experts.reshape(-1), minlength=num_experts)

    def load(self, num_experts: int) -> torch.Tensor:
        """Assignments each expert computes: the tokens it takes (its *load*)."""
        return torch.bincount(self.experts[self.kept], minlength=num_experts)

    @property
    def dropped(self) -> int:
        """Assignments (token, expert) that found their expert full."""
        return int((~self.kept).sum())

    @property
    def tokens_lost(self) -> int:
        """Tokens all of whose assignments were dropped: the layer gives them 0."""
        return int((~self.kept).all(dim=-1).sum())


def top_k_weights(logits: torch.Tensor, top_k: int, rule: str = "mixtral") -> tuple[torch.Tensor, torch.Tensor]:
    """(experts, weights), each (T, k): the k largest logits' experts and

        mixtral: w = softmax(logits of the k chosen)          (Σ_j w_j = 1)
        switch:  w = softmax(all E logits) at the k chosen    (Σ_j w_j ≤ 1)
    """
    top, experts = logits.topk(top_k, dim=-1)
    if rule == "mixtral":
        return experts, top.softmax(dim=-1)
    return experts, logits.softmax(dim=-1).gather(-1, experts)


def within_capacity(experts: torch.Tensor, num_experts: int, capacity: int | None) -> torch.Tensor:
    """kept (T, k): True for the assignments that find a place. Each expert takes at most C,
    first choices first (every token's first choice before any second choice), then in
    token order; the others are dropped."""
    if capacity is None:
        return torch.ones_like(experts, dtype=torch.bool)
    by_priority = experts.t().reshape(-1)                  # first choices of tokens 0 … T−1, then second …
    one_hot = F.one_hot(by_priority, num_experts)
    place = (one_hot.cumsum(dim=0) * one_hot).sum(dim=-1)  # 1 for the first to reach its expert, 2 …
    return (place <= capacity).view(experts.shape[1], experts.shape[0]).t()


def route(logits: torch.Tensor, top_k: int, capacity_factor: float | None = None, rule: str = "mixtral") -> Routing:
    """Route T tokens by their gate logits (T, E): top-k, the rule's weights, then capacity
    C = ⌈factor · T · k / E⌉ counted over these T tokens (none without a factor)."""
    tokens, num_experts = logits.shape
    experts, weights = top_k_weights(logits, top_k, rule)
    capacity = None if capacity_factor is None else costmodel.expert_capacity(tokens, top_k, num_experts,
                                                                              capacity_factor)
    return Routing(experts, weights, within_capacity(experts, num_experts, capacity), logits.softmax(dim=-1),
                   capacity)


def load_balancing_loss(routing: Routing, num_experts: int) -> torch.Tensor:
    """The Switch Transformer's auxiliary loss (Fedus et al. 2022, eq. 4-6):

        E · Σ_e f_e · P_e,   f_e = the fraction of the T·k assignments that chose expert e
                             P_e = the mean over the tokens of softmax(logits)_e

    1 when the load is even (f_e = P_e = 1/E), up to E when every token picks one expert.
    f_e counts choices before capacity and carries no gradient; P_e carries it to the gate.
    No token: 0 (still a function of the gate, for autograd)."""
    if routing.experts.numel() == 0:
        return routing.probabilities.sum() * 0
    fraction = routing.wanted(num_experts).to(routing.probabilities.dtype) / routing.experts.numel()
    return num_experts * (fraction * routing.probabilities.mean(dim=0)).sum()


# ================================================================ dispatch and combine
@dataclass
class Dispatch:
    """The rows a layer computes, one per kept (token, expert) assignment, sorted by expert
    and, for one expert, in token order: ``token`` and ``slot`` (which of the token's k
    choices) of each row, and ``per_expert`` (E,), the rows of each expert."""
    token: torch.Tensor
    slot: torch.Tensor
    per_expert: torch.Tensor


def dispatch_order(experts: torch.Tensor, kept: torch.Tensor, num_experts: int) -> Dispatch:
    """Sort the kept assignments by expert (a stable sort keeps token order within one)."""
    top_k = experts.shape[1]
    flat = torch.arange(experts.numel(), device=experts.device)[kept.reshape(-1)]   # t·k + j
    chosen = experts.reshape(-1)[flat]
    order = chosen.sort(stable=True).indices
    flat = flat[order]
    return Dispatch(flat // top_k, flat % top_k, torch.bincount(chosen, minlength=num_experts))


def run_experts(experts: Sequence[nn.Module], rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Expert e on its ``counts[e]`` consecutive rows, the results in the same order. An
    expert with no row is not run (its parameters get no gradient)."""
    outputs = [expert(part) for expert, part in zip(experts, rows.split(counts.tolist())) if len(part)]
    return torch.cat(outputs) if outputs else rows * 0    # no row: still a function of rows, for autograd


def combine(rows: torch.Tensor, dispatch: Dispatch, weights: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """y_t = Σ_j w_{t,j} · expert_{i_{t,j}}(x_t) over the kept choices j of each token t."""
    weighted = weights[dispatch.token, dispatch.slot].unsqueeze(-1) * rows
    return weighted.new_zeros(num_tokens, rows.shape[-1]).index_add(0, dispatch.token, weighted)


def as_tokens(x: torch.Tensor, d_model: int, who: str) -> torch.Tensor:
    """x (…, d) as a (tokens, d) view; ValueError naming ``who`` when the last size is not d."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: the input must be a tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != d_model:
        raise ValueError(f"{who}: the input's last dimension must be d_model = {d_model}, got shape {tuple(x.shape)}")
    return x.reshape(-1, d_model)


# ================================================================ the layer, on one process
class MoE(nn.Module):
    """A mixture-of-experts layer: ``.gate`` (Linear d → E, no bias), ``.experts`` (E two-layer
    MLPs d → h → d). ``MoE(…)(x)`` maps (…, d) to (…, d); after a forward, ``.routing`` tells
    where the tokens went and ``.aux_loss`` is the Switch load-balancing loss. The same
    ``seed`` gives the same weights on every rank (GPT-2's initialisation)."""

    def __init__(self, d_model: int, d_hidden: int, num_experts: int, *, top_k: int = 2,
                 capacity_factor: float | None = None, rule: str = "mixtral", seed: int = 0):
        super().__init__()
        self.d_model, self.num_experts = whole_number("d_model", d_model), whole_number("num_experts", num_experts)
        self.top_k = whole_number("top_k", top_k)
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k = {top_k} is more than the {num_experts} experts")
        if capacity_factor is not None:
            costmodel.expert_capacity(1, 1, 1, capacity_factor)        # the factor's own check
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.capacity_factor, self.rule = capacity_factor, rule
        self.gate = nn.Linear(d_model, num_experts, bias=False)
        self.experts = nn.ModuleList(Expert(d_model, whole_number("d_hidden", d_hidden)) for _ in range(num_experts))
        initialise(self, seed)
        self.routing: Routing | None = None
        self.aux_loss: torch.Tensor | None = None

    def route(self, tokens: torch.Tensor) -> Routing:
        """The gate's logits for (T, d) tokens, routed by this layer's k, capacity and rule."""
        return route(self.gate(tokens), self.top_k, self.capacity_factor, self.rule)

    def remember(self, routing: Routing) -> None:
        self.routing, self.aux_loss = routing, load_balancing_loss(routing, self.num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = as_tokens(x, self.d_model, "MoE")
        routing = self.route(tokens)
        order = dispatch_order(routing.experts, routing.kept, self.num_experts)
        rows = run_experts(self.experts, tokens[order.token], order.per_expert)
        self.remember(routing)
        return combine(rows, order, routing.weights, len(tokens)).view_as(x)


# ================================================================ the layer, over N ranks
class ExpertParallelMoE(nn.Module):
    """``moe`` split over the ranks of ``group``: this rank keeps experts [r·E/N, (r+1)·E/N)
    (``.local_experts``, the first of them numbered ``.first``) and the gate, replicated.
    ``forward(x_local)`` returns what ``moe(x_local)`` returns, on every rank, and sets
    ``.routing``, ``.aux_loss`` and ``.received`` (rows each local expert computed).
    Every rank must build ``moe`` alike (the same seed); the gates are compared here."""

    def __init__(self, moe: MoE, *, group=None):
        super().__init__()
        if not isinstance(moe, MoE):
            raise TypeError(f"ExpertParallelMoE wraps a MoE, got {type(moe).__name__}")
        self.group = group
        self.rank, self.world_size = rank_and_size(group)
        if moe.num_experts % self.world_size:
            raise ValueError(f"{moe.num_experts} experts do not split evenly over {self.world_size} ranks: rank r "
                             f"keeps experts [r·E/N, (r+1)·E/N), so E must be a multiple of N = {self.world_size}")
        self.per_rank = moe.num_experts // self.world_size
        self.first = self.rank * self.per_rank
        self.d_model, self.num_experts, self.top_k = moe.d_model, moe.num_experts, moe.top_k
        self.capacity_factor, self.rule = moe.capacity_factor, moe.rule
        self.gate = moe.gate
        self.local_experts = nn.ModuleList(moe.experts[self.first:self.first + self.per_rank])
        self._check_gate_is_replicated()
        self.routing, self.aux_loss, self.received = None, None, None

    @torch.no_grad()
    def _check_gate_is_replicated(self) -> None:
        """The largest and the smallest value of each gate weight over the ranks must agree."""
        w = self.gate.weight.detach().reshape(-1)
        extremes = torch.cat([w, -w])
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX, group=self.group)
        if not torch.equal(extremes[:len(w)], -extremes[len(w):]):
            raise ValueError("the gate differs between the ranks: build the MoE with the same seed on every rank")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = as_tokens(x, self.d_model, f"ExpertParallelMoE on rank {self.rank}")
        if torch.is_grad_enabled() and not tokens.requires_grad:   # so that every rank takes part in both
            tokens = tokens.detach().requires_grad_()              # all-to-alls of backward
        routing = route(self.gate(tokens), self.top_k, self.capacity_factor, self.rule)
        order = dispatch_order(routing.experts, routing.kept, self.num_experts)
        to_each = order.per_expert.view(self.world_size, self.per_rank)          # rows for rank s's experts
        from_each = all_to_all(order.per_expert, [self.per_rank] * self.world_size,   # the counts first
                               [self.per_rank] * self.world_size, group=self.group).view(self.world_size, -1)
        send, receive = to_each.sum(dim=1).tolist(), from_each.sum(dim=1).tolist()
        received = exchange(tokens[order.token], send, receive, group=self.group)        # dispatch
        computed = self._run_local_experts(received, from_each)
        returned = exchange(computed, receive, send, group=self.group)                   # combine
        self.routing, self.aux_loss = routing, load_balancing_loss(routing, self.num_experts)
        self.received = from_each.sum(dim=0)
        return combine(returned, order, routing.weights, len(tokens)).view_as(x)

    def _run_local_experts(self, received: torch.Tensor, from_each: torch.Tensor) -> torch.Tensor:
        """The rows arrive by source rank, and from each source by expert: regroup them by
        expert (source order kept), run each expert once, and put the results back in the
        order they arrived, the order the combine returns them in."""
        local = torch.arange(self.per_rank, device=received.device).repeat(self.world_size)
        by_expert = local.repeat_interleave(from_each.reshape(-1)).sort(stable=True).indices
        computed = run_experts(self.local_experts, received[by_expert], from_each.sum(dim=0))
        return computed[by_expert.argsort()]


# ================================================================ expert × data parallelism
def expert_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters of every ExpertParallelMoE's local experts in ``model``."""
    return {id(p) for m in model.modules() if isinstance(m, ExpertParallelMoE) for p in m.local_experts.parameters()}


def average_gradients(model: nn.Module, *, group=None) -> None:
    """Expert × data parallelism, for the loss L = 1/N Σ_r L_r of N ranks' equal batches:

        every parameter but the experts (replicated): g ← 1/N Σ_r g_r, as data parallelism
        each expert (on one rank):                    g ← g / N

    An expert's gradient is already Σ_r ∂L_r/∂θ over every rank's tokens (the backward of the
    dispatch brings them to its owner); averaging it over the ranks would mix different experts.
    A replicated parameter that got no gradient here is given zeros: every rank must send
    the same tensors."""
    _, world_size = rank_and_size(group)
    experts = expert_parameters(model)
    shared = [p for p in model.parameters() if p.requires_grad and id(p) not in experts]
    for p in shared:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    allreduce_mean_([p.grad for p in shared], group=group)
    for p in model.parameters():
        if id(p) in experts and p.grad is not None:
            p.grad.div_(world_size)


def named_parameters_as_in_one_process(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """This rank's parameters under their names in the unsplit model: a local expert i of a
    layer whose experts start at ``first`` is ``experts.{first + i}``."""
    experts = expert_parameters(model)
    for name, p in model.named_parameters():
        if id(p) not in experts:
            yield name, p
    for name, m in model.named_modules():
        if isinstance(m, ExpertParallelMoE):
            for i, expert in enumerate(m.local_experts):
                for sub, p in expert.named_parameters():
                    yield f"{name}.experts.{m.first + i}.{sub}", p


# ================================================================ a tiny MoE GPT
def moe_gpt(config: GPTConfig, num_experts: int, *, top_k: int = 2, capacity_factor: float | None = None,
            rule: str = "mixtral", seed: int = 0, dtype: torch.dtype = torch.float32) -> GPT:
    """The chapter-10 GPT with each block's MLP replaced by a MoE of ``num_experts`` experts as
    wide as the MLP (4·n_embd), seeded from ``seed`` and the block's index: the same on every rank."""
    model = GPT(config, seed=seed)
    for i, block in enumerate(model.blocks):
        block.mlp = MoE(config.n_embd, 4 * config.n_embd, num_experts, top_k=top_k,
                        capacity_factor=capacity_factor, rule=rule, seed=1000 * seed + i + 1)
    return model.to(dtype)


def expert_parallel_gpt(model: GPT, *, group=None) -> GPT:
    """The MoE GPT made this rank's part, in place: every block's MoE becomes its
    ExpertParallelMoE (this rank's experts, the gate and everything else replicated)."""
    for block in model.blocks:
        if not isinstance(block.mlp, MoE):
            raise TypeError(f"expert_parallel_gpt needs a GPT whose MLPs are MoE layers (moe_gpt), got "
                            f"{type(block.mlp).__name__}")
        block.mlp = ExpertParallelMoE(block.mlp, group=group)
    return model


def aux_loss(model: nn.Module) -> torch.Tensor:
    """Σ over the model's MoE layers of their load-balancing loss, from the last forward."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, (MoE, ExpertParallelMoE))]
    if any(loss is None for loss in losses) or not losses:
        raise ValueError("aux_loss: run a forward first (and the model must hold MoE layers)")
    return torch.stack(losses).sum()
