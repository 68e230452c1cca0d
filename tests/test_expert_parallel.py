"""The mixture of experts against its rule written as a loop over tokens, and the expert-parallel
layer on 2, 3 and 4 real ranks against the one-process layer (forward, every gradient, the
same drops), its all-to-alls' bytes against a count from the routing, and a tiny MoE GPT
trained with expert × data parallelism against one process."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from experts_workers import all_checks
from nnpar_lite import costmodel
from nnpar_lite.distributed import launch
from nnpar_lite.expert_parallel import ExpertParallelMoE, MoE, aux_loss, moe_gpt
from nnpar_lite.experiments import experts as runs
from nnpar_lite.gpt import corpus_config, lm_loss

WORLDS = [2, 3, 4]


# ------------------------------------------------------------------ one process
def rule_by_a_loop(moe: MoE, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Token by token: the gate's scores, the k best, their weights (Mixtral: softmax of the k;
    Switch: the full softmax at the k), capacity places given first choices first, then in
    token order; y_t = Σ over the kept choices of w · expert(x_t). Also the drops."""
    logits = x @ moe.gate.weight.t()
    T, k, E = len(x), moe.top_k, moe.num_experts
    chosen = [sorted(range(E), key=lambda e: -logits[t, e].item())[:k] for t in range(T)]
    capacity = math.inf if moe.capacity_factor is None else math.ceil(moe.capacity_factor * T * k / E - 1e-9)
    taken, kept = [0] * E, set()
    for j in range(k):
        for t in range(T):
            if taken[chosen[t][j]] < capacity:
                taken[chosen[t][j]] += 1
                kept.add((t, j))
    out = []
    for t in range(T):
        scores = torch.exp(logits[t])
        denominator = sum(scores[e] for e in chosen[t]) if moe.rule == "mixtral" else scores.sum()
        y = torch.zeros_like(x[t])
        for j, e in enumerate(chosen[t]):
            if (t, j) in kept:
                y = y + scores[e] / denominator * moe.experts[e](x[t])
        out.append(y)
    return torch.stack(out), T * k - len(kept)


def scrambled(moe: MoE, seed: int = 0) -> MoE:
    """Weights N(0, 0.5²) in float64: outputs and gradients of order 1."""
    moe = moe.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moe.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return moe


@pytest.mark.parametrize("rule", ["mixtral", "switch"])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("cf", [None, 0.5, 1.0, 1.25])
def test_the_layer_is_its_rule_written_as_a_loop_over_tokens(rule, k, cf):
    moe = scrambled(MoE(5, 7, 4, top_k=k, capacity_factor=cf, rule=rule))
    x = torch.randn(13, 5, generator=torch.Generator().manual_seed(k), dtype=torch.float64, requires_grad=True)
    c = torch.randn(13, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    params = [x] + list(moe.parameters())
    y = moe(x)
    got = torch.autograd.grad((y * c).sum(), params, allow_unused=True)
    want_y, dropped = rule_by_a_loop(moe, x)
    want = torch.autograd.grad((want_y * c).sum(), params, allow_unused=True)
    assert (y - want_y).abs().max() < 1e-12
    assert moe.routing.dropped == dropped and (dropped > 0 or cf != 0.5)     # half the places: drops for sure
    for a, b in zip(got, want):
        assert (a is None) == (b is None) and (a is None or (a - b).abs().max() < 1e-12)


def test_an_expert_no_token_chooses_computes_nothing_and_gets_no_gradient():
    moe = scrambled(MoE(4, 6, 5, top_k=2))
    with torch.no_grad():
        moe.gate.weight[3] = 0.0
        moe.gate.weight[3, 0] = -100.0
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[:, 0] = 1 + x[:, 0].abs()
    moe(x).sum().backward()
    assert moe.routing.load(5)[3] == 0 and moe.experts[3].c_fc.weight.grad is None
    load = moe.routing.load(5).tolist()
    assert sum(load) == 40 and all((moe.experts[e].c_fc.weight.grad is None) == (load[e] == 0) for e in range(5))


def test_capacity_is_the_ceiling_and_drops_follow_first_choices_then_token_order():
    assert costmodel.expert_capacity(1000, 2, 8, 1.25) == 313            # ⌈312.5⌉
    assert costmodel.expert_capacity(1000, 2, 8, 1.1) == 275             # not 276: 1.1 is not exact in binary
    assert costmodel.expert_capacity(0, 2, 8, 1.0) == 0
    moe = MoE(2, 3, 2, top_k=2, capacity_factor=0.5)                     # C = ⌈0.5 · 4 · 2 / 2⌉ = 2
    with torch.no_grad():
        moe.gate.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # first choices: 0, 1, 0, 0
    moe(x)
    # expert 0: first choices of tokens 0 and 2 fill it (token 3's is dropped); expert 1: token 1's first
    # choice, then the second choices in token order: token 0's fits, tokens 2's and 3's do not
    assert moe.routing.kept.tolist() == [[True, True], [True, False], [True, False], [False, False]]
    assert moe.routing.dropped == 4 and moe.routing.tokens_lost == 1


def test_the_load_balancing_loss_is_E_times_the_sum_of_f_times_P():
    moe = scrambled(MoE(4, 6, 5, top_k=2))
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    moe(x)
    logits = x @ moe.gate.weight.t()
    p = F.softmax(logits, dim=-1)
    top = logits.topk(2, dim=-1).indices
    f = [sum(int(e in top[t]) for t in range(30)) / 60 for e in range(5)]
    expected = 5 * sum(f[e] * p[:, e].mean() for e in range(5))
    assert abs(moe.aux_loss.item() - expected.item()) < 1e-12
    with torch.no_grad():
        moe.gate.weight.zero_()                                          # P_e = 1/E whatever f: loss 1
    moe(x)
    assert abs(moe.aux_loss.item() - 1.0) < 1e-12
    assert moe(x[:0]).shape == (0, 4) and moe.aux_loss.item() == 0.0     # no token: no loss, no NaN


def test_with_mixtrals_rule_top_1_leaves_the_gate_without_gradient_and_switchs_does_not():
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = {}
    for rule in ("mixtral", "switch"):
        moe = scrambled(MoE(4, 6, 4, top_k=1, rule=rule))
        moe(x).square().sum().backward()
        grads[rule] = moe.gate.weight.grad.abs().max().item()
    assert grads["mixtral"] == 0.0 and grads["switch"] > 1e-3


def test_the_parameter_count_and_the_active_count():
    moe = MoE(16, 40, 8, top_k=2)
    assert costmodel.moe_parameters(16, 40, 8) == sum(p.numel() for p in moe.parameters())
    one_expert = sum(p.numel() for p in moe.experts[0].parameters())
    assert costmodel.moe_active_parameters(16, 40, 8, 2) == moe.gate.weight.numel() + 2 * one_expert
    assert costmodel.expert_all_to_all_bytes(40, 2, 16, 4, 4) == 40 * 2 * 3 / 4 * 16 * 4


@pytest.mark.parametrize("build, message", [
    (lambda: MoE(4, 8, 3, top_k=4), "top_k = 4 is more than the 3 experts"),
    (lambda: MoE(4, 8, 3, top_k=0), "top_k must be an integer ≥ 1"),
    (lambda: MoE(4, 8, 3, capacity_factor=0), "capacity_factor must be a positive number"),
    (lambda: MoE(4, 8, 3, capacity_factor=True), "capacity_factor must be a positive number"),
    (lambda: MoE(4, 8, 3, capacity_factor=float("inf")), "capacity_factor must be a positive number"),
    (lambda: MoE(4, 8, 3, rule="gshard"), "rule must be one of"),
    (lambda: MoE(4, 8, 0), "num_experts must be an integer ≥ 1"),
    (lambda: MoE(4, 8, 3)(torch.zeros(2, 5)), "last dimension must be d_model = 4, got shape (2, 5)"),
])
def test_bad_input_is_refused_with_what_is_wrong(build, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_what_is_not_a_moe_or_a_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="wraps a MoE, got Linear"):
        ExpertParallelMoE(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="the input must be a tensor, got list"):
        MoE(2, 3, 2)([[1.0, 2.0]])
    with pytest.raises(ValueError, match="run a forward first"):
        aux_loss(moe_gpt(corpus_config(block_size=4, n_layer=1, n_head=1, n_embd=4), 2))


# ------------------------------------------------------------------ real ranks
CASES = [dict(k=1, counts=[5, 9, 0, 3]),                                   # a rank with no token
         dict(k=2, counts=[7, 4, 11, 6]),
         dict(k=2, cf=1.0, counts=[12, 5, 9, 8]),
         dict(k=1, cf=0.5, rule="switch", counts=[6, 6, 10, 2]),
         dict(k=2, starve=True, per_rank=2, counts=[8, 3, 5, 9]),             # the last expert gets no token
         dict(k=3, cf=1.0, per_rank=2, counts=[9, 4, 7, 5]),
         dict(k=2, cf=1.5, experts=12, counts=[20, 3, 8, 13])]
TRAFFIC = dict(d=16, E=12, k=2, tokens=40, cf=1.0)
GPT_RUNS = [runs.GPT_RUN, dict(runs.GPT_RUN, cf=1.0, k=1)]


@functools.lru_cache(maxsize=None)
def checked_on(world_size: int) -> list[dict]:
    return launch(all_checks, world_size, CASES, TRAFFIC, GPT_RUNS)


@pytest.mark.parametrize("world_size", WORLDS)
def test_forward_and_every_gradient_equal_the_one_process_layer(world_size):
    drops = 0
    for rank, report in enumerate(checked_on(world_size)):
        for case, result in zip(CASES, report["layer"]):
            assert max(result["gaps"].values()) < 1e-12, (rank, case, result["gaps"])
            assert result["same drops"] and result["same unused experts"], (rank, case)
            drops += result["dropped"]
    assert drops > 0                                                       # capacity did drop something
    starved = 2 * world_size - 1                                          # E = 2N: the last expert
    assert starved in checked_on(world_size)[-1]["layer"][4]["unused"]    # its owner is the last rank


@pytest.mark.parametrize("world_size", WORLDS)
def test_the_all_to_alls_send_the_rows_routed_to_other_ranks(world_size):
    reports = [r["traffic"] for r in checked_on(world_size)]
    d, E, row = TRAFFIC["d"], TRAFFIC["E"], TRAFFIC["d"] * 8                 # float64 rows
    owned = [range(r * E // world_size, (r + 1) * E // world_size) for r in range(world_size)]
    for r, report in enumerate(reports):
        out = sum(report["load"][e] for s in range(world_size) if s != r for e in owned[s])
        back = sum(reports[s]["load"][e] for s in range(world_size) if s != r for e in owned[r])
        counts, dispatch, combine, *backward = [sent for _, sent in report["all-to-alls"]]
        assert counts == (world_size - 1) * E // world_size * 8
        assert (dispatch, combine) == (out * row, back * row) and backward == [out * row, back * row]
        assert report["rows to other ranks"] == out


@pytest.mark.parametrize("world_size", WORLDS)
def test_a_moe_gpt_trained_with_expert_and_data_parallelism_equals_one_process(world_size):
    for i, config in enumerate(GPT_RUNS):
        model = moe_gpt(corpus_config(**config["sizes"]), config["experts"], top_k=config["k"],
                        capacity_factor=config["cf"], seed=0, dtype=torch.float64)
        opt, b = torch.optim.SGD(model.parameters(), lr=config["lr"]), config["batch"]
        for idx, targets in runs.corpus_batches(b * world_size, config["sizes"]["block_size"], config["steps"], seed=2):
            opt.zero_grad()
            for r in range(world_size):     # each rank's rows apart: capacity counts a rank's tokens
                loss = lm_loss(model(idx[r * b:(r + 1) * b]), targets[r * b:(r + 1) * b])
                ((loss + config["alpha"] * aux_loss(model)) / world_size).backward()
            opt.step()
        want = dict(model.named_parameters())
        seen = set()
        for report in checked_on(world_size):
            for name, p in report["training"][i]["params"].items():
                assert (p - want[name].detach()).abs().max() < 1e-12, (name, config)
                seen.add(name)
        assert seen == set(want), "every parameter is on some rank"


def test_experts_that_do_not_split_a_gate_that_differs_and_a_wrong_width_are_refused():
    for rank, report in enumerate(checked_on(2)):
        split, gate, width = report["refusals"]
        assert "3 experts do not split evenly over 2 ranks" in split
        assert "the gate differs between the ranks" in gate
        assert f"on rank {rank}: the input's last dimension must be d_model = 4, got shape (3, 5)" in width
