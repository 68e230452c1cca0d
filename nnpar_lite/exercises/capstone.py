"""Chapter 12's exercises: the capstone, a GPT on a dp × tp × pp mesh."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import torch.distributed as dist

from .. import costmodel, rank_budget
from ..mesh import Mesh
from .core import Case, Exercise, Probe, number_exercise, register, report, run_cases
from .ranks import check_on_ranks


# ------------------------------------------------------------------ 12.1: a layout under a memory budget
def largest_data_parallel(billions: float, gpus: int, gigabytes: float, bytes_per_parameter: float | None = None) -> int:
    """The largest d, a power of 2 dividing the GPU count, for which t · p = gpus / d model-parallel
    ranks bring Adam's mixed-precision model states (costmodel.training_memory) under the budget;
    ``bytes_per_parameter`` replaces the calculator's 16 (what a wrong belief counts)."""
    def per_gpu(d: int) -> float:
        if bytes_per_parameter is not None:
            return bytes_per_parameter * billions * 1e9 * d / gpus
        return costmodel.training_memory(billions * 1e9, precision="mixed", optimizer="adam", data_parallel=d,
                                         tensor_parallel=gpus // d)["total"]

    fits = [d for d in (2 ** k for k in range(gpus.bit_length())) if gpus % d == 0 and per_gpu(d) <= gigabytes * 1e9]
    return max(fits, default=0)


number_exercise(
    "12.1", stated={"billions": 13, "gpus": 16, "gigabytes": 80}, answer=largest_data_parallel, rel=0,
    wrong=[(lambda billions, gpus, gigabytes: largest_data_parallel(billions, gpus, gigabytes, 2),
            ("That counts the fp16 weights alone: the gradients and Adam's state are on the GPU too.",
             "这只算了 fp16 权重：梯度和 Adam 的状态也在 GPU 上。")),
           (lambda billions, gpus, gigabytes: largest_data_parallel(billions, gpus, gigabytes, 12),
            ("Mixed-precision Adam keeps 12 bytes of state per parameter (the fp32 master copy, momentum and "
             "variance) on top of the 2 + 2 of fp16 weights and gradients.",
             "混合精度 Adam 每个参数有 12 字节状态（fp32 主权重、动量和方差），另加 fp16 权重和梯度的 2 + 2。")),
           (lambda billions, gpus, gigabytes: math.floor(gigabytes / billions),
            ("d must divide the GPUs: d · t · p = 16 with whole t and p.",
             "d 必须整除 GPU 数：d · t · p = 16，t 和 p 都是整数。"))],
    hint=("Each GPU holds the model states of its 1/(t · p) of the parameters, 2 + 2 + 12 bytes per parameter "
          "(fp16 weights and gradients; the fp32 master copy and Adam's two moments), and d · t · p is the number "
          "of GPUs: try d from the largest down.",
          "每块 GPU 保存它负责的 1/(t · p) 个参数的模型状态，每个参数 2 + 2 + 12 字节（fp16 权重和梯度；fp32 主权重和 "
          "Adam 的两个矩），且 d · t · p 等于 GPU 数：从最大的 d 往下试。"),
    explanation=("16 bytes × {billions} × 10⁹ / (t · p) ≤ {gigabytes} × 10⁹ needs t · p ≥ 2.6, so t · p = 4 and "
                 "d = {answer}: 52 GB per GPU. With d = 8 (t · p = 2) each GPU would hold 104 GB. ZeRO-1 over d = "
                 "{gpus} would fit as well: 4 × 13 + 12 × 13/16 = 61.75 GB.",
                 "16 字节 × {billions} × 10⁹ / (t · p) ≤ {gigabytes} × 10⁹ 要求 t · p ≥ 2.6，所以 t · p = 4，"
                 "d = {answer}：每块 GPU 52 GB。d = 8（t · p = 2）时每块 GPU 要 104 GB。在 d = {gpus} 上用 ZeRO-1 "
                 "也放得下：4 × 13 + 12 × 13/16 = 61.75 GB。"))


# ------------------------------------------------------------------ 12.2: what tensor parallelism sends
def tp_bytes(batch: int, seq: int, width: int, layers: int, dp: int, tp: int, pp: int) -> float:
    """Bytes rank 0 of train_gpt's dp × tp × pp mesh sends per step in its tp group (rank_budget)."""
    config = SimpleNamespace(vocab_size=1, block_size=seq, n_layer=layers, n_head=tp, n_embd=width, tie_weights=True)
    return rank_budget.predicted_bytes_sent(config, Mesh(dp=dp, tp=tp, pp=pp), 0, global_batch=batch)["tp"]


def _fewer(fraction: float):
    return lambda **stated: tp_bytes(**stated) * fraction


number_exercise(
    "12.2", stated={"batch": 8, "seq": 16, "width": 32, "layers": 4, "dp": 2, "tp": 4, "pp": 2},
    answer=tp_bytes, rel=0,
    wrong=[(_fewer(1 / 2), ("Four all-reduces per block and micro-batch, not two: attention and the MLP each have "
                            "an f and a g; each g all-reduces in the forward pass, each f in the backward pass.",
                            "每个块、每个微批次四次全归约，不是两次：注意力和 MLP 各有一个 f 和一个 g；"
                            "g 在前向传播中全归约，f 在反向传播中全归约。")),
           (_fewer(2), ("Rank 0 is on stage 0 of 2: it holds half of the blocks.", "rank 0 在 2 个阶段中的第 0 个："
                        "它只持有一半的块。")),
           (_fewer(1 / 4), ("That counts float32 values; each is 4 bytes.", "这数的是 float32 值的个数；每个值 4 字节。"))],
    hint=("Rank 0 holds the blocks of stage 0. Per block and micro-batch, attention and the MLP each have an f and "
          "a g: g all-reduces the activations in the forward pass, f their gradient in the backward pass; a ring "
          "all-reduce of n bytes over t ranks sends 2 (t − 1)/t · n per rank, and the micro-batches together are "
          "the rank's B / dp sequences of seq × width floats.",
          "rank 0 持有阶段 0 的块。每个块、每个微批次，注意力和 MLP 各有一个 f 和一个 g：g 在前向传播中对激活值做全归约，"
          "f 在反向传播中对它的梯度做全归约；t 个进程上 n 字节的环形全归约每个进程发送 2 (t − 1)/t · n，"
          "各微批次合起来是该进程的 B / dp 条序列，每条 seq × width 个浮点数。"),
    explanation=("{layers}/{pp} blocks × 4 all-reduces (two g forward, two f backward) × 2 ({tp} − 1)/{tp} × "
                 "({batch}/{dp} × {seq} × {width} × 4 bytes) = {answer} bytes per step, what train_gpt --report "
                 "measures on such a run. It grows with the batch and the width, not with the parameters: tensor "
                 "parallelism's traffic is activations, in every block, so it stays inside a machine.",
                 "{layers}/{pp} 个块 × 4 次全归约（前向两个 g，反向两个 f）× 2 ({tp} − 1)/{tp} × "
                 "({batch}/{dp} × {seq} × {width} × 4 字节) = 每步 {answer} 字节，也就是 train_gpt --report "
                 "在这样的运行中测得的值。它随批量和宽度增长，与参数量无关：张量并行传的是每个块的激活值，所以它留在一台机器内。"))


# ------------------------------------------------------------------ 12.3: a rank's coordinates and groups
def mesh_place(rank, dp, tp, pp):
    """Rank ``rank``'s coordinates (d, p, t) on a dp × pp × tp mesh, tp fastest, and its three groups."""
    d, p, t = rank // (pp * tp), rank // tp % pp, rank % tp

    def at(d, p, t):                                   # r = (d · pp + p) · tp + t
        return (d * pp + p) * tp + t

    return {"coordinates": (d, p, t), "tp": [at(d, p, k) for k in range(tp)],
            "pp": [at(d, k, t) for k in range(pp)], "dp": [at(k, p, t) for k in range(dp)]}


def _reference_place(rank, dp, tp, pp) -> dict:
    mesh = Mesh(dp=dp, tp=tp, pp=pp)
    c = mesh.coordinates(rank)
    return {"coordinates": (c["dp"], c["pp"], c["tp"]), **{k: mesh.group_of(rank, k) for k in ("tp", "pp", "dp")}}


def same_place(got, expected) -> bool:
    try:
        return tuple(got["coordinates"]) == expected["coordinates"] and \
            all(list(got[k]) == expected[k] for k in ("tp", "pp", "dp"))
    except (TypeError, KeyError):
        return False


def _placed_as(order: str):
    """A probe's test: does ``got`` number the mesh in another order of its axes (``order``, slowest first)?"""
    def test(expected, got, facts):
        rank, dp, tp, pp = facts["args"]
        sizes, axes = {"dp": dp, "pp": pp, "tp": tp}, order.split("-")
        coords, rest = {}, rank
        for axis in reversed(axes):
            coords[axis], rest = rest % sizes[axis], rest // sizes[axis]

        def at(c: dict) -> int:
            return functools.reduce(lambda r, axis: r * sizes[axis] + c[axis], axes, 0)

        groups = {k: [at({**coords, k: i}) for i in range(sizes[k])] for k in ("tp", "pp", "dp")}
        return same_place(got, {"coordinates": (coords["dp"], coords["pp"], coords["tp"]), **groups})
    return test


PLACE_PROBES = (
    Probe(_placed_as("pp-dp-tp"), ("That is Megatron-LM's default order, pipeline slowest, r = (p · dp + d) · tp + t; "
                                   "this chapter's mesh is dp × pp × tp, r = (d · pp + p) · tp + t.",
                                   "这是 Megatron-LM 的默认顺序，流水线最慢，r = (p · dp + d) · tp + t；本章的网格是 "
                                   "dp × pp × tp，r = (d · pp + p) · tp + t。")),
    Probe(_placed_as("tp-pp-dp"), ("That numbers the ranks with dp fastest; here tp is fastest, so a stage's tp ranks "
                                   "are neighbours.", "这样编号时 dp 变化最快；这里 tp 最快，同一阶段的 tp rank 才相邻。")))

PLACE_CASES = [Case((f"rank {r} of dp = {d}, tp = {t}, pp = {p}", f"dp = {d}，tp = {t}，pp = {p} 中的 rank {r}"),
                    (r, d, t, p)) for r, d, t, p in
               [(0, 1, 1, 1), (5, 2, 2, 2), (6, 2, 2, 2), (3, 1, 4, 1), (3, 4, 1, 1), (3, 1, 1, 4), (7, 3, 2, 2),
                (11, 3, 2, 2), (13, 2, 3, 4), (22, 2, 3, 4), (4, 3, 1, 2), (9, 2, 4, 3)]]


def check_mesh_place(fn) -> bool:
    """Your ``fn(rank, dp, tp, pp)`` against nnpar_lite.mesh.Mesh on meshes you have not seen."""
    return report(run_cases(fn, _reference_place, PLACE_CASES), same=same_place, probes=PLACE_PROBES)


register(Exercise("12.3", check_mesh_place, solution=mesh_place, hint=(
    "r = (d · pp + p) · tp + t, so t = r mod tp, p = ⌊r / tp⌋ mod pp, d = ⌊r / (pp · tp)⌋. A group holds the ranks "
    "whose other two coordinates equal this rank's, in the order of its own coordinate.",
    "r = (d · pp + p) · tp + t，所以 t = r mod tp，p = ⌊r / tp⌋ mod pp，d = ⌊r / (pp · tp)⌋。一个组里是另外两个坐标"
    "与本 rank 相同的那些 rank，按该维自身的坐标排序。"), explanation=(
    "The same as nnpar_lite.mesh.Mesh: tp fastest, so a stage's tp ranks are neighbours (one machine, its fast "
    "links); dp slowest, so a replica's ranks are contiguous. The tp group is consecutive ranks, the pp group "
    "strides by tp, the dp group by pp · tp.",
    "与 nnpar_lite.mesh.Mesh 相同：tp 变化最快，所以同一阶段的 tp rank 相邻（在一台机器上，用它的高速互连）；dp 最慢，"
    "所以一个副本的 rank 连续。tp 组是相邻的 rank，pp 组步长为 tp，dp 组步长为 pp · tp。")))


# ------------------------------------------------------------------ 12.4: bug hunt, the tied embedding
def sync_tied_embedding(stage, group=None):
    """After backward, before the optimizer: the tied embedding's gradient on the first and last stage."""
    if stage.num_stages == 1 or not (stage.first or stage.last):
        return                       # one stage: one tensor, autograd summed both uses; middle stages hold none
    weight = stage.wte.weight if stage.first else stage.lm_head.weight
    dist.all_reduce(weight.grad, group=group)       # dL/dW = its use as wte + its use as lm_head


def _first_stage_broadcast(stage, group=None):
    if stage.num_stages > 1 and (stage.first or stage.last):
        weight = stage.wte.weight if stage.first else stage.lm_head.weight
        dist.broadcast(weight.grad, src=dist.get_global_rank(group, 0), group=group)


def _averaged(stage, group=None):
    if stage.num_stages > 1 and (stage.first or stage.last):
        weight = stage.wte.weight if stage.first else stage.lm_head.weight
        dist.all_reduce(weight.grad, group=group)
        weight.grad /= 2


def _left_alone(stage, group=None):
    """Each copy keeps the gradient of its own use."""


TIED_SIZES = dict(steps=3, batch=4, heads=2, width=16, micro_batches=2)     # one block per stage
SLIPS = {"left alone": _left_alone, "broadcast": _first_stage_broadcast, "averaged": _averaged}


def _run_with(fn, argv: list[str]) -> list[float]:
    """train_gpt's losses and ‖θ‖ (rounded to 6 digits) with ``fn`` summing the tied gradient."""
    from .. import gpt_pipeline
    from ..train_gpt import main

    right, gpt_pipeline.sum_tied_embedding_gradient = gpt_pipeline.sum_tied_embedding_gradient, fn
    try:
        run = main(argv)
    finally:
        gpt_pipeline.sum_tied_embedding_gradient = right
    return [round(x, 6) for x in run["losses"] + [run["param_norm"]]]


def tied_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """train_gpt on these ranks with ``fn`` in place of the package's tied-gradient sum: (one
    process's losses and ‖θ‖, the mesh's, and what the common slips give)."""
    from ..data import corpus_batches
    from ..train_gpt import check_layout, parse_args, train_one_process

    argv = case.args[0]
    args = parse_args(argv)
    _, config = check_layout(args, world_size)
    reference = train_one_process(args, config, corpus_batches(args.batch, config.block_size, args.steps,
                                                               seed=args.seed))
    got = _run_with(fn, argv)
    slips = {name: _run_with(slip, argv) for name, slip in SLIPS.items()}
    return [round(x, 6) for x in reference["losses"] + [reference["param_norm"]]], got, slips


def _argv(dp: int, pp: int) -> list[str]:
    from ..experiments.capstone import program_arguments
    return program_arguments(dp, 1, pp, layers=pp, quiet=True, **TIED_SIZES)


def same_run(got, expected) -> bool:
    return got is not None and len(got) == len(expected) and \
        all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got, expected))


TIED_PROBES = (
    Probe(lambda expected, got, facts: same_run(got, facts["broadcast"]),
          ("Both copies now hold the first stage's gradient, equal to each other but without the head's use of the "
           "matrix: sum the two, do not copy one over the other.", "两个副本现在都持有第一个阶段的梯度，彼此相等，"
           "却少了输出头对这个矩阵的那份使用：应把两份相加，而不是用一份覆盖另一份。")),
    Probe(lambda expected, got, facts: same_run(got, facts["averaged"]),
          ("Half the tied gradient: the matrix is used twice, so its gradient is the sum of both uses, not their "
           "average.", "绑定梯度只有一半：这个矩阵被用了两次，它的梯度是两处使用之和，不是平均值。")),
    Probe(lambda expected, got, facts: same_run(got, facts["left alone"]),
          ("Each copy learns only from its own use: nothing crossed between the first and the last stage.",
           "每个副本只从自己那一处使用中学习：第一个和最后一个阶段之间什么也没有传递。")))


def check_tied_embedding(fn) -> bool:
    """Your ``fn(stage, group)`` in train_gpt on real ranks: its losses and ‖θ‖ against one process."""
    return check_on_ranks(fn, f"{__name__}:tied_driver", {
        2: [Case(("dp = 1, pp = 2", "dp = 1，pp = 2"), (_argv(1, 2),))],
        3: [Case(("dp = 1, pp = 3 (a middle stage)", "dp = 1，pp = 3（有一个中间阶段）"), (_argv(1, 3),))]},
        same=same_run, probes=TIED_PROBES)


register(Exercise("12.4", check_tied_embedding, solution=sync_tied_embedding, hint=(
    "The tied matrix gets a gradient from each of its two uses, wte on the first stage and lm_head on the last; "
    "each stage's copy holds only its own. What must both copies hold before the optimizer steps?",
    "绑定的矩阵从两处使用各得一份梯度：第一个阶段的 wte 和最后一个阶段的 lm_head；每个阶段的副本只持有自己那一份。"
    "在优化器更新之前，两个副本都应持有什么？"), explanation=(
    "An all-reduce (a sum) over the first and last stage: Megatron-LM's embedding group. Broadcasting the first "
    "stage's gradient keeps the two copies equal, so a check that only compares them passes, but both learn "
    "without the head's gradient; averaging halves the tied gradient, which SGD shows and Adam hides.",
    "在第一个和最后一个阶段之间做全归约（求和）：即 Megatron-LM 的 embedding 组。广播第一个阶段的梯度能让两个副本"
    "保持相等，只比较两者的检查会通过，但它们都学不到输出头的梯度；取平均会让绑定梯度减半，SGD 看得出，Adam 看不出。")))
