"""Chapter 08's exercises: sharding, ZeRO and FSDP (seed 5.3)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..sharding import all_gather, reduce_scatter
from .core import Case, Exercise, check_number, check_on_ranks, register

register(Exercise(
    "08.1",
    lambda answer: check_number(answer, (2 + (2 + 12) / 24) * 3, rel=0.01, hint=(
        "Mixed precision with Adam: 2 + 2 + 12 bytes per parameter. ZeRO-2 shards the gradients and the optimizer "
        "state over the 24 GPUs, and keeps the fp16 weights whole.",
        "混合精度加 Adam：每个参数 2 + 2 + 12 字节。ZeRO-2 把梯度和优化器状态分片到 24 块 GPU 上，fp16 权重保持完整。")),
    solution=7.75,
    explanation=("(2 + (2 + 12)/24) × 3e9 bytes = 7.75 GB (48 GB without sharding, 13.5 GB with ZeRO-1, 2 GB with "
                 "ZeRO-3). The ZeRO paper's figure 1 does the same for 7.5 B parameters on 64 GPUs: 120, 31.4, 16.6 "
                 "and 1.9 GB.",
                 "(2 + (2 + 12)/24) × 3e9 字节 = 7.75 GB（不分片 48 GB，ZeRO-1 为 13.5 GB，ZeRO-3 为 2 GB）。"
                 "ZeRO 论文图 1 对 64 块 GPU 上的 75 亿参数做了同样的计算：120、31.4、16.6 和 1.9 GB。")))

register(Exercise(
    "08.2",
    lambda answer: check_number(answer, 4 * -(-1000 // 3), hint=(
        "Each rank stores S = ⌈n / N⌉ elements of the flat, zero-padded buffer, 4 bytes each.",
        "每个进程保存扁平、补零后的缓冲区中的 S = ⌈n / N⌉ 个元素，每个 4 字节。")),
    solution=1336,
    explanation=("⌈1000 / 3⌉ = 334 elements × 4 bytes = 1,336 bytes; the three shards hold 1,002 elements, two of "
                 "them padding.",
                 "⌈1000 / 3⌉ = 334 个元素 × 4 字节 = 1,336 字节；三个分片共 1,002 个元素，其中 2 个是填充。")))

register(Exercise(
    "08.3",
    lambda answer: check_number(answer, 3 * 3 / 4 * 1_200_000, hint=(
        "Three collectives per layer: all-gather before forward, all-gather again before backward, reduce-scatter "
        "of the gradient; each sends (N − 1)/N of the layer's elements per rank.",
        "每层三次集合通信：前向前全收集、反向前再全收集、梯度归约散射；每次每个进程发送该层元素的 (N − 1)/N。")),
    solution=2_700_000,
    explanation=("3 × (N − 1)/N × Ψ = 3 × 3/4 × 1,200,000 = 2,700,000 elements: 1.5 times data parallelism's "
                 "2 (N − 1)/N × Ψ, the price of storing 1/N of the weights.",
                 "3 × (N − 1)/N × Ψ = 3 × 3/4 × 1,200,000 = 2,700,000 个元素：是数据并行 2 (N − 1)/N × Ψ 的 1.5 倍，"
                 "这是只保存 1/N 权重的代价。")))


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


def zero1_driver(fn, rank: int, world_size: int, case: Case) -> tuple:
    """Run a learner's ZeRO-1 step for a few steps; the reference is SGD with momentum on the
    average of every rank's gradient, over the whole flat vector: (expected, got), where each
    is (all parameters, this rank's momentum)."""
    chunk, steps = case.args
    n = world_size * chunk
    params = torch.randn(n, generator=torch.Generator().manual_seed(7 + chunk), dtype=torch.float64)
    expected, full_momentum, momentum = params.clone(), torch.zeros(n, dtype=torch.float64), torch.zeros(
        chunk, dtype=torch.float64)
    for step in range(steps):
        grad = torch.randn(n, generator=torch.Generator().manual_seed(1000 * rank + 10 * step + chunk),
                           dtype=torch.float64)
        everyone = [torch.empty_like(grad) for _ in range(world_size)]
        dist.all_gather(everyone, grad)
        full_momentum = 0.9 * full_momentum + torch.stack(everyone).mean(0)
        expected -= 0.1 * full_momentum
        fn(params, grad.clone(), momentum, 0.1, 0.9)
    return (expected, full_momentum[rank * chunk:(rank + 1) * chunk]), (params, momentum)


def _same_step(got, expected) -> bool:
    return got is not None and all(isinstance(g, torch.Tensor) and g.shape == e.shape
                                   and bool(torch.allclose(g, e, atol=1e-12)) for g, e in zip(got, expected))


def check_zero1_step(fn) -> bool:
    """Your ``fn(flat_params, flat_grad, momentum, lr, beta)`` must do one ZeRO-1 step in place;
    run on 1 rank and on 3, for several steps, with chunks of 1 to 5 elements."""
    cases = {1: [Case("chunks of 5, 2 steps", (5, 2))],
             3: [Case("chunks of 4, 3 steps", (4, 3)), Case("chunks of 1, 2 steps", (1, 2))]}
    return check_on_ranks(fn, f"{__name__}:zero1_driver", cases, same=_same_step, hint=(
        "Reduce-scatter flat_grad (a sum: divide by N), update momentum and your chunk of flat_params, then "
        "all-gather the chunks into flat_params so that every rank has every update.",
        "对 flat_grad 做归约散射（得到的是和：要除以 N），更新 momentum 和你那一块 flat_params，再把各块全收集到 "
        "flat_params 中，让每个进程都拿到所有更新。"), timeout=60)


register(Exercise("08.4", check_zero1_step, solution=zero1_sgd_step, explanation=(
    "Each rank keeps momentum for its chunk only (1/N of the state), receives only its chunk of the averaged "
    "gradient, and sends its updated chunk to everyone: 2 (N − 1)/N · Ψ elements, as data parallelism's all-reduce.",
    "每个进程只为自己的那一块保存动量（状态的 1/N），只接收平均梯度中自己的那一块，再把更新后的块发给所有进程："
    "共 2 (N − 1)/N · Ψ 个元素，与数据并行的全归约相同。")))
