"""Workers that check nnpar_lite.expert_parallel on real ranks against one process: every rank
rebuilds the same MoE and every rank's tokens (seeded by rank), so each rank computes, with
the one-process layer and plain autograd, what it should get."""

import copy

import torch
import torch.distributed as dist

from nnpar_lite.expert_parallel import ExpertParallelMoE, MoE
from nnpar_lite.experiments.experts import layer_for_case

D, H = 6, 10


def layer(case: dict, world_size: int) -> MoE:
    """The case's MoE (the chapter's builder, at this file's sizes and seeds): E experts, or
    ``per_rank`` per rank."""
    num_experts = case.get("per_rank", 1) * world_size if "experts" not in case else case["experts"]
    return layer_for_case(case, num_experts, d_model=D, d_hidden=H, seed=5, weight_seed=11)


def tokens_of(rank: int, case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank r's tokens (its count from the case: uneven, possibly 0) and the coefficients
    c_r of its loss Σ <y_r, c_r>: every rank's gradient differs."""
    count = case["counts"][rank]
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(count, D, generator=g, dtype=torch.float64)
    if case.get("starve"):
        x[:, 0] = 1.0 + x[:, 0].abs()               # feature 0 positive: the starved expert's logit is < −100
    return x, torch.randn(count, D, generator=g, dtype=torch.float64)


def loss_of(y, c, layer_, alpha=0.1):
    return (y * c).sum() + alpha * layer_.aux_loss


def one_process(case: dict, world_size: int, rank: int) -> dict:
    """The reference: the unsplit MoE on each rank's tokens apart (capacity is counted per
    rank); this rank's output, dropped assignments and own gradients (of its loss alone), and
    each expert's gradient of Σ_r loss_r (None for an expert no token reached)."""
    moe = layer(case, world_size)
    expert_grads = [None] * moe.num_experts
    for r in range(world_size):
        x, c = tokens_of(r, case)
        x.requires_grad_(True)
        y = moe(x)
        params = [x, moe.gate.weight] + [p for e in moe.experts for p in e.parameters()]
        grads = torch.autograd.grad(loss_of(y, c, moe), params, allow_unused=True)
        per_expert = len(list(moe.experts[0].parameters()))
        for e in range(moe.num_experts):
            got = grads[2 + e * per_expert: 2 + (e + 1) * per_expert]
            if got[0] is not None:
                expert_grads[e] = got if expert_grads[e] is None else [a + b for a, b in zip(expert_grads[e], got)]
        if r == rank:
            mine = {"y": y.detach(), "x grad": grads[0], "gate grad": grads[1], "kept": moe.routing.kept.clone(),
                    "aux": float(moe.aux_loss.detach())}
    return dict(mine, experts=expert_grads)


def largest(a, b) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def against_one_process(rank: int, world_size: int, cases: list) -> list[dict]:
    """For each case, this rank's gaps between the ExpertParallelMoE and the one-process
    reference: output, input gradient, gate gradient, each local expert's gradients;
    whether the same assignments were dropped and the same experts got no gradient."""
    results = []
    for case in cases:
        expected = one_process(case, world_size, rank)
        ep = ExpertParallelMoE(copy.deepcopy(layer(case, world_size)))
        x, c = tokens_of(rank, case)
        x.requires_grad_(True)
        y = ep(x)
        loss_of(y, c, ep).backward()
        gaps = {"y": largest(y.detach(), expected["y"]), "x grad": largest(x.grad, expected["x grad"]),
                "gate grad": largest(ep.gate.weight.grad, expected["gate grad"]),
                "aux": abs(float(ep.aux_loss.detach()) - expected["aux"]), "experts": 0.0}
        same_unused = True
        for i, expert in enumerate(ep.local_experts):
            want = expected["experts"][ep.first + i]
            got = [p.grad for p in expert.parameters()]
            same_unused &= (want is None) == (got[0] is None)
            if want is not None and got[0] is not None:
                gaps["experts"] = max(gaps["experts"], *(largest(a, b) for a, b in zip(got, want)))
        results.append({"gaps": gaps, "same drops": torch.equal(ep.routing.kept, expected["kept"]),
                        "same unused experts": same_unused, "dropped": ep.routing.dropped,
                        "unused": [ep.first + i for i, e in enumerate(ep.local_experts) if e.c_fc.weight.grad is None]})
    return results


def refusals(rank: int, world_size: int) -> list[str]:
    """Each rank's message for: experts that do not divide by N; gates built with different
    seeds on different ranks; tokens of the wrong width."""
    messages = []
    for build in (lambda: ExpertParallelMoE(MoE(4, 8, world_size + 1, top_k=1)),
                  lambda: ExpertParallelMoE(MoE(4, 8, world_size, top_k=1, seed=rank)),
                  lambda: ExpertParallelMoE(MoE(4, 8, world_size, top_k=1))(torch.zeros(3, 5))):
        try:
            build()
            messages.append("accepted")
        except (ValueError, TypeError) as error:
            messages.append(str(error))
    dist.barrier()
    return messages


def all_checks(rank: int, world_size: int, cases: list, traffic_config: dict, gpt_runs: list) -> dict:
    """Everything the tests check on real ranks, in one launch (each launch costs seconds)."""
    from nnpar_lite.experiments import experts
    return {"layer": against_one_process(rank, world_size, cases),
            "traffic": experts.traffic(rank, world_size, traffic_config),
            "training": [experts.train_expert_parallel(rank, world_size, run) for run in gpt_runs],
            "refusals": refusals(rank, world_size)}
