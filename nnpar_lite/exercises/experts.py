"""Chapter 11's exercises: expert parallelism, a mixture of experts and its all-to-alls.

11.1 the capacity · 11.2 the bytes of the dispatch · 11.3 one rank's send buffer · 11.4 the
dispatch over real ranks, its all-to-alls checked before they run.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist

from .. import costmodel
from ..collectives import all_to_all
from ..expert_parallel import dispatch_order
from ..language import say
from .core import Case, Exercise, Probe, number_exercise, register, report, run_cases
from .ranks import check_on_ranks

# ------------------------------------------------------------------ 11.1: the capacity
number_exercise(
    "11.1", stated={"tokens": 1000, "top_k": 2, "num_experts": 8, "capacity_factor": 1.25},
    answer=costmodel.expert_capacity, rel=0,
    wrong=[(lambda tokens, top_k, num_experts, capacity_factor: capacity_factor * tokens * top_k / num_experts,
            ("Round up: an expert takes whole tokens, and C is a ceiling.",
             "要向上取整：专家接收的是整数个词元，C 取上整。")),
           (lambda tokens, top_k, num_experts, capacity_factor:
            math.floor(capacity_factor * tokens * top_k / num_experts),
            ("Rounded down, an expert would drop an assignment the capacity factor leaves room for: C is a ceiling.",
             "向下取整会让专家丢掉容量因子本来留有余地的分配：C 取上整。")),
           (lambda tokens, top_k, num_experts, capacity_factor:
            costmodel.expert_capacity(tokens, 1, num_experts, capacity_factor),
            ("Each token makes k = 2 choices: count T · k assignments, not T.",
             "每个词元选 k = 2 个专家：要数 T · k 次分配，而不是 T 次。")),
           (lambda tokens, top_k, num_experts, capacity_factor:
            costmodel.expert_capacity(tokens, top_k, num_experts, 1),
            ("That is the even share T · k / E; the capacity factor leaves room above it.",
             "这是平均份额 T · k / E；容量因子在此之上留出余量。"))],
    hint=("Count the assignments the rank makes, share them evenly among the experts, leave the room the capacity "
          "factor asks for, and remember that an expert takes whole tokens.",
          "数一数这个 rank 一共做了多少次分配，把它们平均分给各个专家，再按容量因子留出余量；别忘了专家接收的是整数个词元。"),
    explanation=("C = ⌈capacity_factor · T · k / E⌉ = ⌈{capacity_factor} · {tokens} · {top_k} / {num_experts}⌉ = "
                 "{answer} tokens: the even share T · k / E, with the factor's room above it, rounded up. An expert "
                 "chosen by more of this rank's assignments drops the rest.",
                 "C = ⌈capacity_factor · T · k / E⌉ = ⌈{capacity_factor} · {tokens} · {top_k} / {num_experts}⌉ = "
                 "{answer} 个词元：平均份额 T · k / E，加上容量因子留出的余量，再向上取整。某个专家若被这个 rank 的"
                 "更多分配选中，多出的部分就被丢弃。"))


# ------------------------------------------------------------------ 11.2: the bytes of the dispatch
def _times(factor: float, **changed):
    """A belief: the package's bytes with some numbers changed, times ``factor``."""
    return lambda **stated: costmodel.expert_all_to_all_bytes(**{**stated, **changed}) * factor


number_exercise(
    "11.2", stated={"tokens": 512, "top_k": 2, "d_model": 1024, "world_size": 4, "bytes_per_element": 4},
    answer=costmodel.expert_all_to_all_bytes, rel=0,
    wrong=[(lambda world_size, **rest: costmodel.expert_all_to_all_bytes(world_size=world_size, **rest)
            * world_size / (world_size - 1),
            ("The rows meant for experts on this rank stay here: only (N − 1)/N of them are sent.",
             "发往本 rank 上专家的行留在本地：只有 (N − 1)/N 被发送出去。")),
           (_times(1, top_k=1), ("Top-2: each token is sent to two experts, two rows.",
                                 "top-2：每个词元发给两个专家，是两行。")),
           (_times(1, bytes_per_element=1), ("That counts numbers; each is 4 bytes.",
                                             "这数的是数的个数；每个数 4 字节。")),
           (_times(2), ("That counts the combine too; the question asks for the dispatch alone.",
                        "这把合并也算进去了；题目只问分发。")),
           (_times(4), ("That counts all four all-to-alls of a step (dispatch and combine, forward and backward); the "
                        "question asks for the dispatch alone.",
                        "这数的是一步中的全部四次全对全（分发与合并，前向与反向）；题目只问分发。"))],
    hint=("Count the rows this rank sends: one per token and choice, except those whose expert lives on this rank; "
          "then the bytes of one row.",
          "数一数本 rank 发送多少行：每个词元的每个选择一行，但专家就在本 rank 上的不算；再算一行有多少字节。"),
    explanation=("T · k · (N − 1)/N · d · bytes = {tokens} · {top_k} · ({world_size} − 1)/{world_size} · {d_model} · "
                 "{bytes_per_element} = {answer} bytes. The combine sends as much back, and backward repeats both: "
                 "four times this per layer and step.",
                 "T · k · (N − 1)/N · d · 字节数 = {tokens} · {top_k} · ({world_size} − 1)/{world_size} · {d_model} · "
                 "{bytes_per_element} = {answer} 字节。合并再发回同样多，反向传播又把两者各做一次：每层每步共四倍。"))


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


DISPATCH_CASES = [Case(("T = 6, k = 1, E = 2, N = 1", "T = 6，k = 1，E = 2，N = 1"), _routing_case(6, 1, 2, 1, 0, 1)),
                  Case(("T = 7, k = 2, E = 4, N = 2", "T = 7，k = 2，E = 4，N = 2"), _routing_case(7, 2, 4, 2, 0, 2)),
                  Case(("T = 9, k = 2, E = 6, N = 3, some dropped", "T = 9，k = 2，E = 6，N = 3，有分配被丢弃"),
                       _routing_case(9, 2, 6, 3, 4, 3)),
                  Case(("T = 5, k = 3, E = 8, N = 4, expert 5 unused, some dropped",
                        "T = 5，k = 3，E = 8，N = 4，专家 5 没被选中，有分配被丢弃"), _routing_case(5, 3, 8, 4, 3, 4, 5)),
                  Case(("T = 1, k = 2, E = 2, N = 2", "T = 1，k = 2，E = 2，N = 2"), _routing_case(1, 2, 2, 2, 0, 5)),
                  Case(("T = 0, k = 2, E = 4, N = 2", "T = 0，k = 2，E = 4，N = 2"), _routing_case(0, 2, 4, 2, 0, 6))]


def _as_lists(value):
    """(order, counts) as two lists of ints, or None when it is not that shape."""
    try:
        order, counts = value
        return [int(v) for v in (order.tolist() if hasattr(order, "tolist") else order)], \
            [int(v) for v in (counts.tolist() if hasattr(counts, "tolist") else counts)]
    except (TypeError, ValueError):
        return None


def _kept_experts(facts) -> torch.Tensor:
    experts, kept = facts["args"][:2]
    return experts[kept]


DISPATCH_PROBES = (
    Probe(lambda expected, got, facts: len(_as_lists(got)[0]) == facts["args"][0].numel() > len(expected[0]),
          ("You sent the assignments capacity dropped too: keep only those whose kept is True.",
           "你把容量限制丢弃的分配也发送了：只保留 kept 为 True 的那些。")),
    Probe(lambda expected, got, facts: len(_as_lists(got)[1]) == facts["args"][2] != facts["args"][3],
          ("You counted the rows of each expert (E numbers); the counts are one number per rank: rank r's rows are "
           "those of all its experts together.",
           "你数的是每个专家的行数（E 个数）；计数应是每个 rank 一个数：rank r 的行是它所有专家的行之和。")),
    Probe(lambda expected, got, facts: _as_lists(got)[1] != expected[1] and _as_lists(got)[1] == torch.bincount(
        _kept_experts(facts) % facts["args"][3], minlength=facts["args"][3]).tolist(),
          ("Rank r holds experts r·E/N … (r+1)·E/N − 1, a contiguous range, not the experts e with e mod N = r.",
           "rank r 保存的是专家 r·E/N … (r+1)·E/N − 1，一段连续的编号，而不是满足 e mod N = r 的专家 e。")),
    Probe(lambda expected, got, facts: _as_lists(got)[1] == expected[1] and _as_lists(got)[0] != expected[0]
          and sorted(_as_lists(got)[0]) == sorted(expected[0]),
          ("The right rows, in another order: sorted by expert, and for one expert in token order. Number the "
           "assignments t·k + j and sort them by expert with a stable sort (a loop over the choices first would put "
           "every second choice after every first one).",
           "行是对的，顺序不对：按专家排序，同一专家内按词元顺序。把分配编号为 t·k + j，再按专家做稳定排序"
           "（先循环各个选择，会把所有第二选择排在所有第一选择之后）。")),
)


def check_dispatch(fn) -> bool:
    """Your ``fn(experts, kept, num_experts, world_size)`` must return (the token of each row
    of the send buffer, the rows for each rank); run on cases you do not see."""
    results = run_cases(fn, package_dispatch, DISPATCH_CASES)
    return report(results, same=lambda got, expected: _as_lists(got) == expected, probes=DISPATCH_PROBES)


register(Exercise("11.3", check_dispatch, solution=dispatch, hint=(
    "Which assignments are sent at all? In what order must the rows be so that each rank's rows are contiguous in "
    "the buffer, and what keeps token order among the rows of one expert? Which experts does rank r hold?",
    "哪些分配需要发送？各行要按什么顺序排列，才能让发往每个 rank 的行在缓冲区中连续？什么能让同一专家的各行保持"
    "词元顺序？rank r 保存哪些专家？"), explanation=(
    "Number the assignments t·k + j (token t's j-th choice), keep the kept ones, sort them by expert with a stable "
    "sort (which keeps token order within one expert), and the token of each is its number // k. Experts are "
    "numbered rank by rank, so sorting by expert also groups the rows by destination rank, and rank r's count is "
    "that of its experts r·E/N … (r+1)·E/N − 1 together: N numbers.",
    "把分配编号为 t·k + j（词元 t 的第 j 个选择），保留 kept 的那些，按专家做稳定排序（同一专家内保持词元顺序），"
    "每行的词元就是编号 // k。专家按 rank 依次编号，所以按专家排序也就把各行按目标 rank 分好了组；rank r 的计数是它的"
    "专家 r·E/N … (r+1)·E/N − 1 的行数之和：共 N 个数。")))


# ------------------------------------------------------------------ 11.4: the dispatch, over real processes
def send_to_experts(x, expert, num_experts):
    """Send each of this rank's tokens to the rank that holds its expert; return what arrives."""
    world = dist.get_world_size()
    order = expert.sort(stable=True).indices
    send = torch.bincount(expert // (num_experts // world), minlength=world)
    receive = all_to_all(send, [1] * world, [1] * world)
    return all_to_all(x[order], send.tolist(), receive.tolist())


class ReceiveCountsMismatch(ValueError):
    """An all-to-all whose receive counts are not what the other ranks send: gloo would abort on it."""


def _values(tensor: torch.Tensor, splits, world: int) -> list[int]:
    """The values of each rank's piece of ``tensor`` in an all-to-all (rows cut at ``splits``, or
    ``world`` equal parts)."""
    rows = [int(r) for r in splits] if splits else [tensor.shape[0] // world if tensor.dim() else 0] * world
    return [r * _row(tensor) for r in rows]


def _row(tensor: torch.Tensor) -> int:
    """The values one row of ``tensor`` holds."""
    return math.prod(tensor.shape[1:]) if tensor.dim() else 1


def _agree(sent: list[int], received: list[int], row: int, group=None) -> None:
    """Before an all-to-all: every rank learns how many values every rank sends and expects (and the
    values in a row of what it receives), and all raise the same :class:`ReceiveCountsMismatch` when
    some rank expects other counts than it is sent."""
    world = dist.get_world_size(group)
    if len(sent) != world or len(received) != world:
        return                                      # torch refuses counts of another length itself
    table = [torch.empty(2 * world + 1, dtype=torch.long) for _ in range(world)]
    dist.all_gather(table, torch.tensor(sent + received + [row], dtype=torch.long), group=group)
    for rank in range(world):
        expects, given = table[rank][world:2 * world].tolist(), [int(table[k][rank]) for k in range(world)]
        if expects != given:
            width = int(table[rank][-1]) or 1       # the receiving rank's row: say how many rows, not values
            expects, given = [v // width for v in expects], [v / width if v % width else v // width for v in given]
            raise ReceiveCountsMismatch(say(
                f"the check stopped an all-to-all that gloo would abort: rank {rank} expects {expects} rows from "
                f"the {world} ranks (rank 0's first), and they send it {given}. The receive counts are what the other "
                "ranks send to this one, not what this rank sends; it cannot know them without asking.",
                f"核对程序拦下了一次 gloo 会中止的全对全：rank {rank} 期望从 {world} 个 rank 分别收到 {expects} 行"
                f"（rank 0 在前），而它们发给它的是 {given} 行。接收计数是其他 rank 发给本 rank 的数目，而不是本 rank 发出的数目；"
                "不去询问，本 rank 无从知道它们。"))


@contextlib.contextmanager
def counts_checked():
    """Within it, every all-to-all first checks that each rank receives what the others send it."""
    single, listed = dist.all_to_all_single, dist.all_to_all

    def checked_single(output, input, output_split_sizes=None, input_split_sizes=None, group=None, async_op=False):
        world = dist.get_world_size(group)
        _agree(_values(input, input_split_sizes, world), _values(output, output_split_sizes, world), _row(output),
               group)
        return single(output, input, output_split_sizes, input_split_sizes, group=group, async_op=async_op)

    def checked_list(output_tensor_list, input_tensor_list, group=None, async_op=False):
        _agree([t.numel() for t in input_tensor_list], [t.numel() for t in output_tensor_list],
               _row(output_tensor_list[0]) if output_tensor_list else 1, group)
        return listed(output_tensor_list, input_tensor_list, group=group, async_op=async_op)

    dist.all_to_all_single, dist.all_to_all = checked_single, checked_list
    try:
        yield
    finally:
        dist.all_to_all_single, dist.all_to_all = single, listed


def _tokens_of(rank: int, case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    counts, num_experts, unused = case.args
    g = torch.Generator().manual_seed(300 + rank + 10 * num_experts)
    x = torch.randn(counts[rank], 3, generator=g, dtype=torch.float64)
    allowed = torch.tensor([e for e in range(num_experts) if e != unused])
    return x, allowed[torch.randint(0, len(allowed), (counts[rank],), generator=g)]


def _arriving(rank: int, world_size: int, case: Case, sort: bool, place) -> torch.Tensor:
    """What reaches ``rank`` when every rank sends its rows, sorted by expert (stably) or in token order,
    cut by the counts of ``place(expert)``, the rank each row is meant for: what a slip delivers."""
    pieces = []
    for source in range(world_size):
        x, expert = _tokens_of(source, case)
        order = expert.sort(stable=True).indices if sort else torch.arange(len(expert))
        counts = torch.bincount(place(expert), minlength=world_size).tolist()
        pieces.append(torch.split(x[order], counts)[rank])
    return torch.cat(pieces)


def send_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """(expected, got, slips): the tokens of every rank routed to this rank's experts, rank 0's
    first, from each rank sorted by expert then token; what the learner's function returns, its
    all-to-alls checked before they run; what the common slips deliver."""
    num_experts, per_rank = case.args[1], case.args[1] // world_size
    expected = []
    for source in range(world_size):
        x, expert = _tokens_of(source, case)
        order = sorted(range(len(expert)), key=lambda t: (int(expert[t]), t))
        expected += [x[t] for t in order if int(expert[t]) // per_rank == rank]
    slips = {"unsorted": _arriving(rank, world_size, case, False, lambda e: e // per_rank),
             "modulo": _arriving(rank, world_size, case, True, lambda e: e % world_size)}
    x, expert = _tokens_of(rank, case)
    with counts_checked():
        got = fn(x.clone(), expert.clone(), num_experts)
    return (torch.stack(expected) if expected else x[:0]), got, slips


def _same_rows(got, expected) -> bool:
    return isinstance(got, torch.Tensor) and got.shape == expected.shape and bool(torch.equal(got, expected))


def _same_set_of_rows(got, expected) -> bool:
    return isinstance(got, torch.Tensor) and got.shape == expected.shape and \
        sorted(map(tuple, got.tolist())) == sorted(map(tuple, expected.tolist()))


def _slip(name: str, message: tuple[str, str]) -> Probe:
    return Probe(lambda expected, got, facts: not _same_rows(facts[name], expected) and _same_rows(got, facts[name]),
                 message)


SEND_PROBES = (
    _slip("unsorted", ("The right number of rows from each rank, but not the right rows: the rows for one rank must "
                       "be contiguous in the send buffer, so sort the tokens by expert before the all-to-all.",
                       "从每个 rank 收到的行数是对的，行却不对：发往同一个 rank 的行在发送缓冲区中必须连续，"
                       "所以在全对全之前要按专家对词元排序。")),
    _slip("modulo", ("Rank r holds experts r·E/N … (r+1)·E/N − 1, a contiguous range: expert e lives on rank "
                     "e // (E/N), not e mod N.",
                     "rank r 保存专家 r·E/N … (r+1)·E/N − 1，一段连续的编号：专家 e 在 rank e // (E/N) 上，"
                     "而不是 e mod N。")),
    Probe(lambda expected, got, facts: not _same_rows(got, expected) and _same_set_of_rows(got, expected),
          ("The right rows, in another order: rank 0's first, then rank 1's, …; from each rank sorted by expert, and "
           "for one expert in token order (a stable sort).",
           "行是对的，顺序不对：先是 rank 0 的，再是 rank 1 的，……；来自每个 rank 的行按专家排序，同一专家内按词元"
           "顺序（稳定排序）。")),
)


def check_send_to_experts(fn) -> bool:
    """Your ``fn(x, expert, num_experts)`` runs on every rank; run on 2, 3 and 1 ranks with
    uneven token counts, a rank with no token and an expert no token chooses. Every all-to-all
    it calls first checks its receive counts against what the other ranks send."""
    cases = {2: [Case(("tokens (5, 2), E = 4", "词元数 (5, 2)，E = 4"), ((5, 2), 4, None))],
             3: [Case(("tokens (4, 0, 7), E = 3", "词元数 (4, 0, 7)，E = 3"), ((4, 0, 7), 3, None)),
                 Case(("tokens (6, 3, 5), E = 6, expert 2 unused", "词元数 (6, 3, 5)，E = 6，专家 2 没被选中"),
                      ((6, 3, 5), 6, 2))],
             1: [Case(("tokens (4,), E = 2", "词元数 (4,)，E = 2"), ((4,), 2, None))]}
    return check_on_ranks(fn, f"{__name__}:send_driver", cases, same=_same_rows, probes=SEND_PROBES, timeout=45)


register(Exercise("11.4", check_send_to_experts, solution=send_to_experts, hint=(
    "Which rows go to which rank, and in what order must they lie in the buffer you send? all_to_all needs the "
    "counts this rank receives too: who knows them, and how can this rank learn them?",
    "哪些行发往哪个 rank？它们在发送缓冲区里要按什么顺序排列？all_to_all 还需要本 rank 接收的计数：谁知道这些计数？"
    "本 rank 怎样才能得到它们？"), explanation=(
    "Three steps, as ExpertParallelMoE.forward takes them: sort by expert (stably) so that each rank's rows are "
    "contiguous; an all-to-all of the counts, one number per rank, because the receive sizes are the other ranks' "
    "send sizes; the all-to-all of the rows with those uneven counts. The combine is the same call with the two "
    "count lists swapped.",
    "三步，与 ExpertParallelMoE.forward 相同：按专家（稳定）排序，使发往每个 rank 的行连续；对计数做一次全对全，"
    "每个 rank 一个数，因为接收的大小就是其他 rank 发送的大小；再按这些不均匀的计数对各行做全对全。合并是同一个调用，"
    "只是两个计数列表对调。")))
