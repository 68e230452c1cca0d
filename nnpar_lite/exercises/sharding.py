"""Chapter 08's exercises: sharding, ZeRO and FSDP (seed 5.3)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..costmodel import zero_communication
from ..sharding import all_gather, chunk_size, reduce_scatter
from .core import Case, Exercise, Probe, model_state_gb, number_exercise, register, same_values
from .ranks import check_on_ranks

number_exercise(
    "08.1", stated={"billions": 3, "gpus": 24}, rel=0.01,
    answer=lambda billions, gpus: model_state_gb(billions, gpus, 2, "mixed"),
    wrong=[(lambda billions, gpus: model_state_gb(billions, gpus, 1, "mixed"),
            ("That is ZeRO-1, which shards only the optimizer state; ZeRO-2 shards the gradients too.",
             "这是 ZeRO-1，它只把优化器状态分片；ZeRO-2 把梯度也分片。")),
           (lambda billions, gpus: model_state_gb(billions, 1, 0, "mixed"),
            ("That is one unsharded copy, 2 + 2 + 12 bytes per parameter; ZeRO-2 divides some of it by the GPUs.",
             "这是不分片的一份，每个参数 2 + 2 + 12 字节；ZeRO-2 把其中一部分除以 GPU 数。")),
           (lambda billions, gpus: model_state_gb(billions, gpus, 3, "mixed"),
            ("That is ZeRO-3, which shards the weights too; ZeRO-2 keeps the fp16 weights whole on every GPU.",
             "这是 ZeRO-3，它把权重也分片；ZeRO-2 在每块 GPU 上保留完整的 fp16 权重。"))],
    hint=("Mixed precision with Adam: 2 + 2 + 12 bytes per parameter (weights, gradients, optimizer state). Which of "
          "the three does ZeRO-2 divide by the GPUs, and which stays whole?",
          "混合精度加 Adam：每个参数 2 + 2 + 12 字节（权重、梯度、优化器状态）。ZeRO-2 把其中哪些除以 GPU 数，"
          "哪些保持完整？"),
    explanation=("(2 + (2 + 12)/{gpus}) × {billions} × 10⁹ bytes = {answer} GB: the fp16 weights stay whole, the "
                 "gradients and Adam's state are divided by the {gpus} GPUs. The ZeRO paper's figure 1 does the same "
                 "for 7.5 B parameters on 64 GPUs: 120, 31.4, 16.6 and 1.9 GB.",
                 "(2 + (2 + 12)/{gpus}) × {billions} × 10⁹ 字节 = {answer} GB：fp16 权重保持完整，梯度和 Adam 状态"
                 "除以 {gpus} 块 GPU。ZeRO 论文图 1 对 64 块 GPU 上的 75 亿参数做了同样的计算：120、31.4、16.6 和 1.9 GB。"))

number_exercise(
    "08.2", stated={"n": 1000, "N": 3, "bytes": 4}, rel=0,
    answer=lambda n, N, bytes: chunk_size(n, N) * bytes,
    wrong=[(lambda n, N, bytes: n / N * bytes, ("A rank stores whole elements: the buffer is padded to N · S.",
                                                "每个进程保存的是整数个元素：缓冲区被补零到 N · S。")),
           (lambda n, N, bytes: n // N * bytes, ("Rounded down, 3 · 333 elements leave one out: round up, and pad.",
                                                 "向下取整后 3 · 333 个元素会漏掉一个：应向上取整，再补零。")),
           (lambda n, N, bytes: n * bytes, ("That is the whole layer; each rank stores one shard of it.",
                                            "这是整个层；每个进程只保存它的一个分片。"))],
    hint=("FSDP flattens the layer, pads it with zeros to a multiple of N, and gives each rank one of N equal "
          "chunks; count that chunk's elements, then its bytes.",
          "FSDP 把层展平，补零到 N 的倍数，再把 N 个相等的块各分给一个进程；数出一块的元素个数，再算字节数。"),
    explanation=("S = ⌈{n} / {N}⌉ elements × {bytes} bytes = {answer} bytes; the {N} shards hold N · S elements, "
                 "the last of them padding.",
                 "S = ⌈{n} / {N}⌉ 个元素 × {bytes} 字节 = {answer} 字节；{N} 个分片共 N · S 个元素，最后几个是填充。"))

number_exercise(
    "08.3", stated={"psi": 1.2e6, "N": 4},
    answer=lambda psi, N: zero_communication(psi, N, zero_stage=3),
    wrong=[(lambda psi, N: zero_communication(psi, N, zero_stage=0),
            ("That is data parallelism's all-reduce; FSDP gathers the weights once more, before the backward pass.",
             "这是数据并行的全归约；FSDP 在反向传播之前还要再收集一次权重。")),
           (lambda psi, N: 3 * psi, ("Each collective sends (N − 1)/N of the elements per rank, not all of them.",
                                     "每次集合通信每个进程发送 (N − 1)/N 的元素，而不是全部。")),
           (lambda psi, N: zero_communication(psi, N, zero_stage=3) / N,
            ("A ring collective sends (N − 1)/N of the layer per rank, not (N − 1)/N of a shard.",
             "环形集合通信每个进程发送该层的 (N − 1)/N，而不是一个分片的 (N − 1)/N。"))],
    hint=("Count the collectives FSDP runs per layer in one step (forward, backward, the gradient), and what a ring "
          "collective sends per rank: (N − 1)/N of the layer's elements.",
          "数一数 FSDP 每一步对每层做几次集合通信（前向、反向、梯度），以及一次环形集合通信每个进程发送多少："
          "该层元素的 (N − 1)/N。"),
    explanation=("3 × (N − 1)/N × Ψ = 3 × ({N} − 1)/{N} × {psi} = {answer} elements: an all-gather before the "
                 "forward pass, another before the backward pass, a reduce-scatter of the gradient; 1.5 times data "
                 "parallelism's 2 (N − 1)/N × Ψ, the price of storing 1/N of the weights.",
                 "3 × (N − 1)/N × Ψ = 3 × ({N} − 1)/{N} × {psi} = {answer} 个元素：前向前一次全收集，反向前再一次，"
                 "梯度一次归约散射；是数据并行 2 (N − 1)/N × Ψ 的 1.5 倍，这是只保存 1/N 权重的代价。"))


def zero1_sgd_step(flat_params, flat_grad, momentum, lr, beta):
    """One ZeRO-1 step of SGD with momentum: average this rank's chunk of the gradient,
    update the chunk and its momentum, share the updated chunks."""
    rank, world = dist.get_rank(), dist.get_world_size()
    chunk = momentum.numel()
    mine = flat_params[rank * chunk:(rank + 1) * chunk]
    average = reduce_scatter(torch.empty_like(momentum), flat_grad) / world
    momentum.mul_(beta).add_(average)
    mine -= lr * momentum
    all_gather(flat_params, mine.clone())


def _sgd_momentum(params, grads, lr: float, beta: float, owned: slice | None = None):
    """SGD with momentum on a flat vector over the given gradients, in one process; with ``owned``,
    only that slice of the parameters changes (the others keep their first values)."""
    result, momentum = params.clone(), torch.zeros_like(params)
    for grad in grads:
        momentum = beta * momentum + grad
        result = result - lr * momentum
    if owned is not None:
        kept = params.clone()
        kept[owned] = result[owned]
        return kept, momentum
    return result, momentum


def zero1_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """Run a learner's ZeRO-1 step for a few steps; the reference is SGD with momentum on the
    average of every rank's gradient, over the whole flat vector: (expected, got, facts), each
    result being (all parameters, this rank's momentum); the facts hold what the common slips
    give (the sum of the gradients, no all-gather) for the probes."""
    chunk, steps = case.args
    n, mine = world_size * chunk, slice(rank * chunk, (rank + 1) * chunk)
    params = torch.randn(n, generator=torch.Generator().manual_seed(7 + chunk), dtype=torch.float64)
    start, momentum, sums = params.clone(), torch.zeros(chunk, dtype=torch.float64), []
    for step in range(steps):
        grad = torch.randn(n, generator=torch.Generator().manual_seed(1000 * rank + 10 * step + chunk),
                           dtype=torch.float64)
        everyone = [torch.empty_like(grad) for _ in range(world_size)]
        dist.all_gather(everyone, grad)
        sums.append(torch.stack(everyone).sum(0))
        fn(params, grad.clone(), momentum, 0.1, 0.9)
    slips = {name: (lambda r: (r[0], r[1][mine]))(_sgd_momentum(start, [s / d for s in sums], 0.1, 0.9, owned))
             for name, d, owned in (("summed", 1, None), ("own only", world_size, mine))}
    expected, full_momentum = _sgd_momentum(start, [s / world_size for s in sums], 0.1, 0.9)
    return (expected, full_momentum[mine]), (params, momentum), slips


NOT_DIVIDED = Probe(lambda expected, got, facts: facts["world_size"] > 1 and same_values(got, facts["summed"]),
                    ("Your steps are {world_size} times too large: the reduce-scatter sums the ranks' gradients; "
                     "divide by N for their average.", "你的步长大了 {world_size} 倍：归约散射求的是各进程梯度之和；"
                                                       "要除以 N 才是平均值。"))
NOT_SHARED = Probe(lambda expected, got, facts: facts["world_size"] > 1 and same_values(got, facts["own only"]),
                   ("Your own chunk is right, the other ranks' chunks never changed: all-gather the updated chunks "
                    "into flat_params.", "你自己的那一块对了，其他进程的块从未改变：请把更新后的块全收集到 flat_params。"))


def check_zero1_step(fn) -> bool:
    """Your ``fn(flat_params, flat_grad, momentum, lr, beta)`` must do one ZeRO-1 step in place;
    run on 1 rank and on 3, for several steps, with chunks of 1 to 5 elements."""
    cases = {1: [Case(("chunks of 5, 2 steps", "每块 5 个元素，2 步"), (5, 2))],
             3: [Case(("chunks of 4, 3 steps", "每块 4 个元素，3 步"), (4, 3)),
                 Case(("chunks of 1, 2 steps", "每块 1 个元素，2 步"), (1, 2))]}
    return check_on_ranks(fn, f"{__name__}:zero1_driver", cases, probes=(NOT_DIVIDED, NOT_SHARED))


register(Exercise("08.4", check_zero1_step, solution=zero1_sgd_step, hint=(
    "Reduce-scatter flat_grad (a sum: divide by N), update momentum and your chunk of flat_params, then all-gather "
    "the chunks into flat_params so that every rank has every update.",
    "对 flat_grad 做归约散射（得到的是和：要除以 N），更新 momentum 和你那一块 flat_params，再把各块全收集到 "
    "flat_params 中，让每个进程都拿到所有更新。"), explanation=(
    "Each rank keeps momentum for its chunk only (1/N of the state), receives only its chunk of the averaged "
    "gradient, and sends its updated chunk to everyone: 2 (N − 1)/N · Ψ elements, as data parallelism's all-reduce.",
    "每个进程只为自己的那一块保存动量（状态的 1/N），只接收平均梯度中自己的那一块，再把更新后的块发给所有进程："
    "共 2 (N − 1)/N · Ψ 个元素，与数据并行的全归约相同。")))
