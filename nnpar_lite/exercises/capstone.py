"""Chapter 12's exercises: the capstone, a GPT on a dp × tp × pp mesh."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch.distributed as dist

from .. import costmodel, rank_budget
from ..mesh import Mesh
from .core import Case, Exercise, check_number, check_on_ranks, register, report, run_cases

# ------------------------------------------------------------------ 12.1: a layout under a memory budget
BUDGET = dict(num_params=13e9, gpus=16, gigabytes=80)


def largest_data_parallel(num_params: float, gpus: int, gigabytes: float) -> int:
    """The largest d (a power of 2 dividing the GPU count) for which t · p = gpus / d model-parallel
    ranks bring Adam's mixed-precision model states under the budget (costmodel.training_memory)."""
    fits = [d for d in (2 ** k for k in range(gpus.bit_length())) if gpus % d == 0 and costmodel.training_memory(
        num_params, precision="mixed", optimizer="adam", data_parallel=d, tensor_parallel=gpus // d)["total"]
        <= gigabytes * 1e9]
    return max(fits) if fits else 0


register(Exercise(
    "12.1",
    lambda answer: check_number(answer, largest_data_parallel(**BUDGET), hint=(
        "Each GPU holds 16 bytes per parameter of its 1/(t·p) of the model (fp16 weights and gradients, fp32 master "
        "copy and Adam's two moments: 2 + 2 + 12), and d · t · p = 16; try d = 16, 8, 4, … in turn.",
        "每块 GPU 为它负责的 1/(t·p) 个参数每个保存 16 字节（fp16 权重和梯度，fp32 主副本和 Adam 的两个矩："
        "2 + 2 + 12），且 d · t · p = 16；依次试 d = 16、8、4……"),
        known={16: ("That counts the fp16 weights alone: gradients and Adam's state are on the GPU too.",
                    "这只算了 fp16 权重：梯度和 Adam 的状态也在 GPU 上。"),
               8: ("Mixed-precision Adam keeps 12 bytes of state per parameter (the fp32 master copy, momentum and "
                   "variance), on top of 2 + 2.", "混合精度 Adam 每个参数有 12 字节状态（fp32 主副本、动量和方差），"
                   "另加 2 + 2。")}),
    solution=4,
    explanation=("16 bytes × 13e9 / (t·p) ≤ 80e9 needs t·p ≥ 2.6, so t·p = 4 and d = 4: 52 GB per GPU. With d = 8 "
                 "(t·p = 2) each GPU would hold 104 GB. ZeRO-1 over d = 16 would fit too: 4 × 13 + 12 × 13/16 = "
                 "61.75 GB.",
                 "16 字节 × 13e9 / (t·p) ≤ 80e9 要求 t·p ≥ 2.6，所以 t·p = 4，d = 4：每块 GPU 52 GB。d = 8（t·p = 2）"
                 "时每块 GPU 要 104 GB。在 d = 16 上用 ZeRO-1 也放得下：4 × 13 + 12 × 13/16 = 61.75 GB。")))

# ------------------------------------------------------------------ 12.2: what tensor parallelism sends
PROGRAM = SimpleNamespace(vocab_size=1, block_size=16, n_layer=4, n_head=4, n_embd=32, tie_weights=True)

register(Exercise(
    "12.2",
    lambda answer: check_number(answer, rank_budget.predicted_bytes_sent(PROGRAM, Mesh(2, 2, 2), 0,
                                                                         global_batch=8)["tp"], hint=(
        "Rank 0 holds 2 of the 4 blocks; per block and micro-batch, f and g all-reduce the activations once each "
        "in forward and once each in backward; a ring all-reduce of n bytes over t ranks sends 2 (t − 1)/t · n, "
        "and the micro-batches add up to the rank's 4 sequences of 16 × 32 floats.",
        "rank 0 持有 4 个块中的 2 个；每个块、每个微批次，f 和 g 在前向各全归约激活一次，在反向也各一次；"
        "t 个进程上 n 字节的环形全归约每个进程发送 2 (t − 1)/t · n，各微批次合起来是该进程的 4 条 16 × 32 个浮点数的序列。"),
        known={32768: ("Four all-reduces per block, not two: f and g each run one in forward or backward, and "
                       "the other direction's gradient or activation too.", "每个块四次全归约，不是两次："
                       "f 和 g 在前向和反向中各有一次。"),
               131072: ("Rank 0 is on stage 0 of 2: it holds 2 blocks, not 4.", "rank 0 在 2 个阶段中的第 0 个："
                        "它持有 2 个块，不是 4 个。")}),
    solution=65536,
    explanation=("2 blocks × 4 all-reduces × 2 (2 − 1)/2 × (4 × 16 × 32 × 4 bytes) = 65,536 bytes per step, as "
                 "train_gpt --report measures. It grows with the batch and the width, not with the parameters: "
                 "tensor parallelism's traffic is activations, on every block, so it stays inside a node.",
                 "2 个块 × 4 次全归约 × 2 (2 − 1)/2 × (4 × 16 × 32 × 4 字节) = 每步 65,536 字节，与 train_gpt --report "
                 "测得的一致。它随批量和宽度增长，与参数量无关：张量并行传的是每个块的激活，所以它留在节点内。")))


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


PLACE_CASES = [Case(f"rank {r} of dp = {d}, tp = {t}, pp = {p}", (r, d, t, p)) for r, d, t, p in
               [(0, 1, 1, 1), (5, 2, 2, 2), (6, 2, 2, 2), (3, 1, 4, 1), (3, 4, 1, 1), (3, 1, 1, 4), (7, 3, 2, 2),
                (11, 3, 2, 2), (13, 2, 3, 4), (22, 2, 3, 4), (4, 3, 1, 2), (9, 2, 4, 3)]]


def same_place(got, expected) -> bool:
    try:
        return tuple(got["coordinates"]) == expected["coordinates"] and \
            all(list(got[k]) == expected[k] for k in ("tp", "pp", "dp"))
    except (TypeError, KeyError):
        return False


def check_mesh_place(fn) -> bool:
    """Your ``fn(rank, dp, tp, pp)`` against nnpar_lite.mesh.Mesh on meshes you have not seen."""
    return report(run_cases(fn, _reference_place, PLACE_CASES), same=same_place, hint=(
        "r = (d · pp + p) · tp + t: t = r mod tp, p = ⌊r / tp⌋ mod pp, d = ⌊r / (pp · tp)⌋. A group holds the "
        "ranks whose other two coordinates equal this rank's, in the order of its own coordinate.",
        "r = (d · pp + p) · tp + t：t = r mod tp，p = ⌊r / tp⌋ mod pp，d = ⌊r / (pp · tp)⌋。一个组里是另外两个坐标"
        "与本 rank 相同的那些 rank，按该维自身的坐标排序。"))


register(Exercise("12.3", check_mesh_place, solution=mesh_place, explanation=(
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


TIED_SIZES = dict(steps=3, batch=4, heads=2, width=16, micro_batches=2)     # one block per stage


def tied_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """train_gpt on these ranks with ``fn`` in place of the package's tied-gradient sum: (one
    process's losses and ‖θ‖, the mesh's)."""
    from .. import gpt_pipeline
    from ..data import corpus_batches
    from ..train_gpt import check_layout, main, parse_args, train_one_process

    argv = case.args[0]
    args = parse_args(argv)
    _, config = check_layout(args, world_size)
    reference = train_one_process(args, config, corpus_batches(args.batch, config.block_size, args.steps,
                                                               seed=args.seed))
    right, gpt_pipeline.sum_tied_embedding_gradient = gpt_pipeline.sum_tied_embedding_gradient, fn
    try:
        run = main(argv)
    finally:
        gpt_pipeline.sum_tied_embedding_gradient = right
    return ([round(x, 6) for x in reference["losses"] + [reference["param_norm"]]],
            [round(x, 6) for x in run["losses"] + [run["param_norm"]]])


def _argv(dp: int, pp: int, **extra) -> list[str]:
    from ..experiments.capstone import program_arguments
    return program_arguments(dp, 1, pp, layers=pp, **{**TIED_SIZES, **extra})


def same_run(got, expected) -> bool:
    return got is not None and len(got) == len(expected) and \
        all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got, expected))


def check_tied_embedding(fn) -> bool:
    """Your ``fn(stage, group)`` in train_gpt on real ranks: its losses and ‖θ‖ against one process."""
    return check_on_ranks(fn, "nnpar_lite.exercises.capstone:tied_driver", {
        2: [Case("dp = 1, pp = 2", (_argv(1, 2),))],
        3: [Case("dp = 1, pp = 3 (a middle stage)", (_argv(1, 3),))]}, same=same_run, hint=(
        "The tied matrix gets a gradient from each of its two uses, wte on the first stage and lm_head on the "
        "last; each stage's copy holds one of them. Both copies need their sum.",
        "绑定的矩阵从两处使用各得一份梯度：第一个阶段的 wte 和最后一个阶段的 lm_head；每个阶段的副本只持有其中一份。"
        "两个副本都需要它们的和。"))


register(Exercise("12.4", check_tied_embedding, solution=sync_tied_embedding, explanation=(
    "An all-reduce (a sum) over the first and last stage: Megatron-LM's embedding group. Broadcasting the first "
    "stage's gradient keeps the two copies equal, so a check that only compares them passes, but both learn "
    "without the head's gradient; averaging halves the tied gradient, which SGD shows and Adam hides.",
    "在第一个和最后一个阶段之间做全归约（求和）：即 Megatron-LM 的 embedding 组。广播第一个阶段的梯度能让两个副本"
    "保持相等，只比较两者的检查会通过，但它们都学不到输出头的梯度；取平均会让绑定梯度减半，SGD 看得出，Adam 看不出。")))
