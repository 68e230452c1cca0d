"""Chapter 04's exercises: model averaging, local SGD and FedAvg (seed 3.2)."""

from __future__ import annotations

import re

import torch
import torch.distributed as dist

from ..costmodel import communication_per_epoch
from ..model_averaging import allreduce_parameters_weighted_, permute_hidden_units
from ..models import mlp
from .core import Case, Exercise, Probe, number_exercise, register, same_values, verdict
from .ranks import NOT_IN_PLACE, check_on_ranks

number_exercise(
    "04.1", stated={"P": 2410, "K": 4, "steps": 12, "H": 4},
    answer=lambda P, K, steps, H: communication_per_epoch(P, K, H, steps_per_epoch=steps)["bytes"],
    wrong=[(lambda P, K, steps, H: communication_per_epoch(P, K, H, steps_per_epoch=H)["bytes"],
            ("That is one averaging round; an epoch of 12 local steps averages every H = 4 steps.",
             "这是一个平均回合的量；一个 epoch 有 12 个本地步，每 H = 4 步平均一次。")),
           (lambda P, K, steps, H: communication_per_epoch(P, K, 1, steps_per_epoch=steps)["bytes"],
            ("That is averaging after every step (H = 1); here the models are averaged every 4 steps.",
             "这是每步都平均（H = 1）的量；这里每 4 步才平均一次。")),
           (lambda P, K, steps, H: communication_per_epoch(P, K, H, steps_per_epoch=steps, bytes_per_value=1)["bytes"],
            ("That counts values; each float32 value is 4 bytes.", "这数的是值的个数；每个 float32 值占 4 字节。")),
           (lambda P, K, steps, H: 2 * P * 4 * steps / H,
            ("A ring all-reduce sends 2 (K − 1)/K · P values per worker, not 2P.",
             "环形全归约每个计算单元发送 2 (K − 1)/K · P 个值，而不是 2P。"))],
    hint=("Rounds per epoch = local steps per epoch / H; each round a ring all-reduce sends 2 (K − 1)/K · P values of "
          "4 bytes from each worker.",
          "每个 epoch 的回合数 = 每个 epoch 的本地步数 / H；每个回合，环形全归约让每个计算单元发送 2 (K − 1)/K · P 个值，"
          "每个 4 字节。"),
    explanation=("{steps} / {H} averaging rounds per epoch, each sending 2 · ({K} − 1)/{K} · {P} values of 4 bytes: "
                 "{answer} bytes, 1/{H} of what averaging after every step (H = 1) sends.",
                 "每个 epoch 平均 {steps} / {H} 次，每次发送 2 · ({K} − 1)/{K} · {P} 个 4 字节的值：共 {answer} 字节，"
                 "是每步都平均（H = 1）的 1/{H}。"))


# ------------------------------------------------------------------ 04.2
def check_permutation(answer) -> bool:
    """Does ``answer``, an order of the 16 hidden units of a (64, 16, 10) network, leave its
    function unchanged while moving its parameters? (The identity does not move them.)"""
    model = mlp((64, 16, 10), seed=0, dtype=torch.float64)
    try:
        permuted = permute_hidden_units(model, answer)
    except (ValueError, TypeError, IndexError, RuntimeError):
        return verdict(False, ("", ""), (
            f"{answer!r:.80} is not an order of the 16 hidden units: give the numbers 0 to 15, each once.",
            f"{answer!r:.80} 不是 16 个隐藏单元的一种排列：请给出 0 到 15 的每个数，各一次。"))
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        same_function = torch.allclose(model(x), permuted(x), rtol=1e-12, atol=1e-12)
    moved = any(not torch.equal(p, q) for p, q in zip(model.parameters(), permuted.parameters()))
    return verdict(same_function and moved, (
        "Same function, different parameters: averaging the two would not give back the function.",
        "函数相同，参数不同：把两者平均并不能得回原来的函数。"), (
        "That order leaves every unit where it was (the identity): the parameters have not moved.",
        "这个顺序让每个单元都留在原位（恒等排列）：参数没有移动。"))


register(Exercise("04.2", check_permutation, solution=list(range(15, -1, -1)), hint=(
    "A permutation moves row i of the first layer (and its bias) to place π(i), and column i of the second layer "
    "with it. Which orders move nothing at all?",
    "一个排列把第一层的第 i 行（及其偏置）移到位置 π(i)，第二层的第 i 列也随之移动。哪些顺序什么也没有移动？"), explanation=(
    "Any order but the identity: row i of the first layer and column i of the second move together, so each "
    "hidden unit keeps its inputs and its outputs, only its place changes. There are 16! − 1 such answers.",
    "除恒等排列外的任何顺序都对：第一层的第 i 行与第二层的第 i 列一起移动，每个隐藏单元保留自己的输入和输出，"
    "只是位置变了。这样的答案有 16! − 1 个。")))


# ------------------------------------------------------------------ 04.3
TRUE_STATEMENTS = frozenset("ace")   # measured on the widget's runs; tests/test_exercises_04.py re-measures them
WHY = {
    "a": ("with IID shards every worker's steps point roughly the same way: even 8 workers averaged every 32 steps "
          "end within 0.01 of synchronous SGD",
          "独立同分布时各计算单元的更新方向大致相同：即使 8 个计算单元每 32 步才平均一次，结果也与同步 SGD 相差不到 0.01"),
    "b": ("with label skew more workers means fewer labels per worker and more drift: K = 8 ends below K = 2",
          "标签偏斜时计算单元越多，每个计算单元的标签越少、漂移越大：K = 8 的结果低于 K = 2"),
    "c": ("with α = 0.03 each worker holds one or two labels, and alone none reaches 0.5",
          "α = 0.03 时每个计算单元只有一两个标签，单独训练没有一个达到 0.5"),
    "d": ("averaged only every 32 steps, the model has still learnt from every label and beats each worker alone",
          "即使每 32 步才平均一次，模型也学到了所有标签，胜过每个单独训练的计算单元"),
    "e": ("with H = 1 averaging is exactly synchronous data parallelism, whatever the split",
          "H = 1 时，无论如何划分数据，平均都恰好等于同步数据并行"),
}


def _letters(answer) -> set[str] | None:
    """The statements' letters in ``answer`` ("ade", "a, d, e" or ["a", "d", "e"]), or None."""
    text = answer if isinstance(answer, str) else "".join(str(a) for a in answer) if isinstance(
        answer, (list, tuple, set, frozenset)) else None
    if text is None:
        return None
    cleaned = re.sub(r"[\s,;()\[\]{}'\"]", "", text.lower())
    return set(cleaned) if cleaned and set(cleaned) <= set(WHY) else None


def check_statements(answer) -> bool:
    """Which of the statements (a)–(e) does the widget show? ``answer``: the letters of the true ones."""
    letters = _letters(answer)
    if letters is None:
        return verdict(False, ("", ""), (f"{answer!r:.60} is not a set of the letters a–e: write, e.g., \"bc\".",
                                         f"{answer!r:.60} 不是 a–e 中字母的组合：请写成例如 \"bc\" 的形式。"))
    wrong = sorted(letters ^ TRUE_STATEMENTS)
    if not wrong:
        return verdict(True, ("exactly those: " + "; ".join(WHY[k][0] for k in sorted(letters)) + ".",
                              "正是这些：" + "；".join(WHY[k][1] for k in sorted(letters)) + "。"), ("", ""))
    first = wrong[0]
    judged = ("true", "正确") if first in letters else ("false", "错误")
    return verdict(False, ("", ""), (
        f"look again at ({first}): you judged it {judged[0]}. Set the sliders as it says and read the legend.",
        f"再看看（{first}）：你判断它{judged[1]}。按它所说设置滑块，再读图例。"))


register(Exercise("04.3", check_statements, solution="ace", hint=(
    "Take the statements one at a time: set the sliders as the statement says (η stays 0.5), read the curves' end "
    "points in the legend, and compare the numbers the statement names.",
    "逐条判断：按每条陈述设置滑块（η 保持 0.5），读图例中各曲线的终点数值，再比较陈述里提到的数。"), explanation=(
    "; ".join(f"({k}) {v[0]}" for k, v in WHY.items()) + ".",
    "；".join(f"（{k}）{v[1]}" for k, v in WHY.items()) + "。")))


# ------------------------------------------------------------------ 04.4
def weighted_average_(tensors, weight):
    """θ ← Σ_r w_r θ_r / Σ_r w_r over all ranks, in place; ``weight`` is this rank's w_r."""
    total = torch.tensor([float(weight)], dtype=torch.float64)
    dist.all_reduce(total)                         # Σ_r w_r: every rank takes part, weight 0 too
    for t in tensors:
        weighted = t * weight
        dist.all_reduce(weighted)                  # Σ_r w_r θ_r
        t.copy_(weighted / total)                  # in place: the caller's tensors change


def weighted_average_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """Run a learner's ``fn(tensors, weight)`` on this rank's tensors (float64, 23 values in all,
    which neither 2 nor 3 ranks divide) and the package's ``allreduce_parameters_weighted_`` on a
    copy: (expected, got, facts), each flattened to one vector; the facts are the tensors before,
    their plain mean over the ranks and the total weight, for the probes."""
    weights, shapes = case.args
    gen = torch.Generator().manual_seed(100 * world_size + rank)
    mine = [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in shapes]
    expected = [t.clone() for t in mine]
    allreduce_parameters_weighted_(expected, weights[rank])
    before = torch.cat([t.reshape(-1) for t in mine])
    plain = before.clone()
    dist.all_reduce(plain)
    originals = list(mine)                         # the caller's tensors: a model's parameters
    fn(mine, weights[rank])
    return (torch.cat([t.reshape(-1) for t in expected]), torch.cat([t.reshape(-1) for t in originals]),
            {"input": before, "plain mean": plain / world_size, "total weight": float(sum(weights)),
             "list entries": torch.cat([torch.as_tensor(t).reshape(-1) for t in mine])})


PLAIN_MEAN = Probe(lambda expected, got, facts: same_values(got, facts["plain mean"], rtol=1e-7, atol=1e-10),
                   ("That is the plain mean over the ranks, right only when every weight is the same: weigh each "
                    "rank's tensors by its weight.", "这是各进程的简单平均，只有权重都相同时才对：用每个进程的权重给它的张量加权。"))
NOT_DIVIDED = Probe(lambda expected, got, facts: same_values(got, expected * facts["total weight"],
                                                             rtol=1e-7, atol=1e-10),
                    ("That is Σ_r w_r θ_r: divide it by the total weight Σ_r w_r = {total weight:g}.",
                     "这是 Σ_r w_r θ_r：还要除以总权重 Σ_r w_r = {total weight:g}。"))


ENTRIES_REPLACED = Probe(lambda expected, got, facts: same_values(facts["list entries"], expected, rtol=1e-10)
                         and same_values(got, facts["input"], rtol=0, atol=0),
                         ("Your list holds the right tensors, but new ones (tensors[i] = ...): the caller's tensors, "
                          "a model's parameters, are unchanged. Write into each of them: t.copy_(...).",
                          "你的列表里是正确的张量，但它们是新张量（tensors[i] = ...）：调用者的张量（模型的参数）没有变。"
                          "要写进每个原有的张量：t.copy_(...)。"))


def check_your_weighted_average(fn) -> bool:
    """Your ``fn(tensors, weight)`` must replace this rank's tensors, in place, by the weighted
    average over all ranks; run on 2, 3 and 1 ranks, uneven weights, a rank of weight 0."""
    shapes = ((5, 3), (7,), (1,))                  # 23 values: no number of ranks divides them
    cases = {k: [Case((f"weights {list(w)}", f"权重 {list(w)}"), (w, shapes))]
             for k, w in ((2, (1, 3)), (3, (2, 0, 5)), (1, (4,)))}
    return check_on_ranks(fn, f"{__name__}:weighted_average_driver", cases,
                          same=lambda got, expected: same_values(got, expected, rtol=1e-10),
                          probes=(ENTRIES_REPLACED, NOT_IN_PLACE, PLAIN_MEAN, NOT_DIVIDED))


register(Exercise("04.4", check_your_weighted_average, solution=weighted_average_, hint=(
    "Weigh your tensors by your weight, all-reduce the products and the weights, divide by the total weight "
    "Σ_r w_r, and write the result into each tensor in place (t.copy_(...)); a rank of weight 0 still takes part "
    "in every all_reduce.",
    "用本进程的权重乘以张量，对乘积和权重分别做全归约，再除以总权重 Σ_r w_r，并把结果原地写回每个张量"
    "（t.copy_(...)）；权重为 0 的进程也要参加每一次 all_reduce。"), explanation=(
    "One all-reduce for the weights and one per tensor is clear but pays the latency of each; the package's "
    "allreduce_parameters_weighted_ flattens every tensor and the weight into one vector and needs a single one.",
    "权重一次全归约、每个张量各一次，写法清楚，但每次都要付出延迟；本包的 allreduce_parameters_weighted_ "
    "把所有张量和权重拼成一个向量，只需一次全归约。")))
