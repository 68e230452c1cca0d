"""Chapter 11's exercises: expert parallelism, a mixture of experts and its all-to-alls."""

from __future__ import annotations

import torch
import torch.distributed as dist

from .. import costmodel
from ..collectives import all_to_all
from ..expert_parallel import dispatch_order
from .core import Case, Exercise, check_number, check_on_ranks, register, report, run_cases

# The numbers the prompts state.
CAPACITY_PROMPT = dict(tokens=1000, top_k=2, num_experts=8, capacity_factor=1.25)
BYTES_PROMPT = dict(tokens=512, top_k=2, d_model=1024, world_size=4, bytes_per_element=2)

register(Exercise(
    "11.1",
    lambda answer: check_number(answer, costmodel.expert_capacity(**CAPACITY_PROMPT), hint=(
        "C = ⌈capacity_factor · T · k / E⌉: the k choices of the T tokens shared evenly by the E experts, with "
        "room to spare, rounded up to a whole token.",
        "C = ⌈capacity_factor · T · k / E⌉：T 个 token 的 k 个选择平均分给 E 个专家，留出余量，再向上取整到整数个 token。"),
        known={312.5: ("Round up: an expert takes whole tokens, and C is a ceiling.",
                       "要向上取整：专家接收的是整数个 token，C 取上整。"),
               157: ("Each token makes k = 2 choices: count T · k assignments, not T.",
                     "每个 token 选 k = 2 个专家：要数 T · k 次分配，而不是 T 次。"),
               250: ("That is the even share T · k / E; the capacity factor 1.25 leaves room above it.",
                     "这是平均份额 T · k / E；容量因子 1.25 在此之上留出余量。")}),
    solution=313,
    explanation=("⌈1.25 · 1000 · 2 / 8⌉ = ⌈312.5⌉ = 313 tokens: the even share is 250, the factor leaves 25 % room. "
                 "An expert chosen by more than 313 of this rank's assignments drops the rest.",
                 "⌈1.25 · 1000 · 2 / 8⌉ = ⌈312.5⌉ = 313 个 token：平均份额是 250，容量因子多留出 25 % 的余量。"
                 "某个专家若被这个 rank 的超过 313 次分配选中，多出的部分就被丢弃。")))

register(Exercise(
    "11.2",
    lambda answer: check_number(answer, costmodel.expert_all_to_all_bytes(**BYTES_PROMPT), hint=(
        "Each token goes to k experts; a fraction (N − 1)/N of them live on other ranks; each row is d numbers of "
        "2 bytes. One all-to-all only: the dispatch.",
        "每个 token 发往 k 个专家；其中 (N − 1)/N 在其他 rank 上；每行是 d 个 2 字节的数。只算一次全互换：分发。"),
        known={2_097_152: ("The rows meant for experts on this rank stay here: only (N − 1)/N of them are sent.",
                           "发往本 rank 上专家的行留在本地：只有 (N − 1)/N 被发送出去。"),
               786_432: ("Top-2: each token is sent to two experts, two rows.",
                         "top-2：每个 token 发给两个专家，是两行。"),
               3_145_728: ("That counts the combine too; the question asks for the dispatch alone.",
                           "这把合并也算进去了；题目只问分发。")}),
    solution=1_572_864,
    explanation=("T · k · (N − 1)/N · d · 2 = 512 · 2 · 3/4 · 1024 · 2 = 1,572,864 bytes (1.5 MiB). The combine sends "
                 "as much back, and backward repeats both: four times this per layer and step.",
                 "T · k · (N − 1)/N · d · 2 = 512 · 2 · 3/4 · 1024 · 2 = 1,572,864 字节（1.5 MiB）。合并再发回同样多，"
                 "反向传播又把两者各做一次：每层每步共四倍。")))


# ------------------------------------------------------------------ 11.3: the dispatch, on one process
def dispatch(experts, kept, num_experts, world_size):
    """The send buffer of one rank: the token of each row (rows sorted by expert; for one
    expert, in token order; dropped assignments left out) and the rows for each rank."""
    numbers = torch.arange(experts.numel())[kept.reshape(-1)]      # t·k + j: token t's j-th choice, if kept
    chosen = experts.reshape(-1)[numbers]
    numbers = numbers[chosen.sort(stable=True).indices]             # stable: token order within an expert
    per_rank = torch.bincount(chosen // (num_experts // world_size), minlength=world_size)
    return (numbers // experts.shape[1]).tolist(), per_rank.tolist()


def package_dispatch(experts, kept, num_experts, world_size):
    """The expected answer: the layer's own :func:`nnpar_lite.expert_parallel.dispatch_order`."""
    order = dispatch_order(experts, kept, num_experts)
    return order.token.tolist(), order.per_expert.view(world_size, -1).sum(dim=1).tolist()


def _routing_case(tokens: int, top_k: int, num_experts: int, world_size: int, drop_every: int, seed: int,
                  unused: int | None = None) -> tuple:
    """Random distinct choices per token (never ``unused``), every ``drop_every``-th assignment dropped."""
    g = torch.Generator().manual_seed(seed)
    allowed = [e for e in range(num_experts) if e != unused]
    picks = [torch.randperm(len(allowed), generator=g)[:top_k].tolist() for _ in range(tokens)]
    experts = torch.tensor([[allowed[i] for i in row] for row in picks], dtype=torch.long).view(tokens, top_k)
    kept = (torch.arange(tokens * top_k) % drop_every != drop_every - 1).view(tokens, top_k) if drop_every else \
        torch.ones(tokens, top_k, dtype=torch.bool)
    return experts, kept, num_experts, world_size


DISPATCH_CASES = [Case("T = 6, k = 1, E = 2, N = 1", _routing_case(6, 1, 2, 1, 0, 1)),
                  Case("T = 7, k = 2, E = 4, N = 2", _routing_case(7, 2, 4, 2, 0, 2)),
                  Case("T = 9, k = 2, E = 6, N = 3, some dropped", _routing_case(9, 2, 6, 3, 4, 3)),
                  Case("T = 5, k = 3, E = 8, N = 4, expert 5 unused, some dropped", _routing_case(5, 3, 8, 4, 3, 4, 5)),
                  Case("T = 1, k = 2, E = 2, N = 2", _routing_case(1, 2, 2, 2, 0, 5)),
                  Case("T = 0, k = 2, E = 4, N = 2", _routing_case(0, 2, 4, 2, 0, 6))]


def _as_lists(value):
    """(order, counts) as two lists of ints, or None when it is not that shape."""
    try:
        order, counts = value
        return [int(v) for v in (order.tolist() if hasattr(order, "tolist") else order)], \
            [int(v) for v in (counts.tolist() if hasattr(counts, "tolist") else counts)]
    except (TypeError, ValueError):
        return None


def check_dispatch(fn) -> bool:
    """Your ``fn(experts, kept, num_experts, world_size)`` must return (the token of each row
    of the send buffer, the rows for each rank); run on cases you do not see."""
    results = run_cases(fn, package_dispatch, DISPATCH_CASES)
    return report(results, same=lambda got, expected: _as_lists(got) == expected,
                  hint=("Keep the assignments whose kept is True; sort them by expert, and for one expert by token; "
                        "rank r's rows are those of experts r·E/N … (r+1)·E/N − 1, so send_counts "
                        "has N numbers, not E.",
                        "只保留 kept 为 True 的分配；按专家排序，同一专家内按 token 排序；rank r 的行来自专家 "
                        "r·E/N … (r+1)·E/N − 1，所以 send_counts 有 N 个数，而不是 E 个。"))


register(Exercise("11.3", check_dispatch, solution=dispatch, explanation=(
    "Number the assignments t·k + j (token t's j-th choice), keep the kept ones, sort them by expert with a stable "
    "sort (which keeps token order within one expert), and the token of each is its number // k. Experts are "
    "numbered rank by rank, so sorting by expert also groups the rows by destination rank.",
    "把分配编号为 t·k + j（token t 的第 j 个选择），保留 kept 的那些，按专家做稳定排序（同一专家内保持 token 顺序），"
    "每行的 token 就是编号 // k。专家按 rank 依次编号，所以按专家排序也就把各行按目标 rank 分好了组。")))


# ------------------------------------------------------------------ 11.4: the dispatch, over real processes
def send_to_experts(x, expert, num_experts):
    """Send each of this rank's tokens to the rank that holds its expert; return what arrives."""
    world = dist.get_world_size()
    order = expert.sort(stable=True).indices
    send = torch.bincount(expert // (num_experts // world), minlength=world)
    receive = all_to_all(send, [1] * world, [1] * world)
    return all_to_all(x[order], send.tolist(), receive.tolist())


def _tokens_of(rank: int, case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    counts, num_experts, unused = case.args
    g = torch.Generator().manual_seed(300 + rank + 10 * num_experts)
    x = torch.randn(counts[rank], 3, generator=g, dtype=torch.float64)
    allowed = torch.tensor([e for e in range(num_experts) if e != unused])
    return x, allowed[torch.randint(0, len(allowed), (counts[rank],), generator=g)]


def send_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """(expected, got): the tokens of every rank routed to this rank's experts, rank 0's first,
    from each rank sorted by expert then token, against what the learner's function returns."""
    num_experts, per_rank = case.args[1], case.args[1] // world_size
    expected = []
    for source in range(world_size):
        x, expert = _tokens_of(source, case)
        order = sorted(range(len(expert)), key=lambda t: (int(expert[t]), t))
        expected += [x[t] for t in order if int(expert[t]) // per_rank == rank]
    x, expert = _tokens_of(rank, case)
    got = fn(x.clone(), expert.clone(), num_experts)
    return (torch.stack(expected) if expected else x[:0]), got


def _same_rows(got, expected) -> bool:
    return isinstance(got, torch.Tensor) and got.shape == expected.shape and bool(torch.equal(got, expected))


def check_send_to_experts(fn) -> bool:
    """Your ``fn(x, expert, num_experts)`` runs on every rank; run on 2, 3 and 1 ranks with
    uneven token counts, a rank with no token and an expert no token chooses."""
    cases = {2: [Case("tokens (5, 2), E = 4", ((5, 2), 4, None))],
             3: [Case("tokens (4, 0, 7), E = 3", ((4, 0, 7), 3, None)),
                 Case("tokens (6, 3, 5), E = 6, expert 2 unused", ((6, 3, 5), 6, 2))],
             1: [Case("tokens (4,), E = 2", ((4,), 2, None))]}
    return check_on_ranks(fn, f"{__name__}:send_driver", cases, same=_same_rows, hint=(
        "Sort the tokens by expert (stable), count the rows for each rank, exchange those counts first (an "
        "all-to-all of one number per rank: this rank cannot know what it will receive), then all_to_all the rows.",
        "按专家对 token 做稳定排序，数出发给每个 rank 的行数，先交换这些计数（每个 rank 一个数的全互换：本 rank "
        "无从知道自己将收到多少），再对各行做 all_to_all。"), timeout=45)


register(Exercise("11.4", check_send_to_experts, solution=send_to_experts, explanation=(
    "Three steps, as ExpertParallelMoE.forward takes them: sort by expert so that each rank's rows are contiguous; "
    "an all-to-all of the counts, because the receive sizes are the other ranks' send sizes; the all-to-all of the "
    "rows with those uneven counts. The combine is the same call with the two count lists swapped.",
    "三步，与 ExpertParallelMoE.forward 相同：按专家排序，使发往每个 rank 的行连续；对计数做一次全互换，"
    "因为接收的大小就是其他 rank 发送的大小；再按这些不均匀的计数对各行做全互换。合并是同一个调用，只是两个计数列表对调。")))
