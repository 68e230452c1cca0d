"""Workers that check nnpar_lite.context_parallel on real ranks against one process: every rank
builds the same whole q, k, v (seeded), computes full attention with torch's fused kernel and
one-process autograd, and compares its own chunk of the output and of the gradients."""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from nnpar_lite import context_parallel as cp
from nnpar_lite.experiments import long_sequences as runs

GROUP_SIZES = (2, 3, 4)


def whole(shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference(q, k, v, coefficients, causal: bool):
    """Full attention on the whole sequence and the gradients of Σ out ∘ c (a loss over every position)."""
    q, k, v = (x.clone().requires_grad_(True) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    (out * coefficients).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def cases(n: int) -> list:
    """(method, causal, layout, batch, heads, local_seq, head_dim): heads that do not divide by
    N for ring attention, odd local lengths where the layout allows them."""
    return [(method, causal, layout, 2, 2 * n if method == "ulysses" else 3, 4 if layout == "zigzag" else 3, 5)
            for method in ("ring", "ulysses") for causal in (False, True) for layout in ("contiguous", "zigzag")]


def split_attention_gaps(rank: int, world_size: int, group=None) -> list[dict]:
    """For each case: the largest difference between this rank's output and q, k, v gradients and
    its chunk of the reference's."""
    n = dist.get_world_size(group)
    gaps = []
    for i, (method, causal, layout, batch, heads, local, dim) in enumerate(cases(n)):
        q, k, v, c = (whole((batch, heads, n * local, dim), 10 * i + j) for j in range(4))
        expected = reference(q, k, v, c, causal)
        mine = [cp.split_sequence(x, rank, n, layout=layout).requires_grad_(True) for x in (q, k, v)]
        out = cp.METHODS[method](*mine, causal=causal, layout=layout, group=group)
        (out * cp.split_sequence(c, rank, n, layout=layout)).sum().backward()
        got = [out.detach()] + [x.grad for x in mine]
        gaps.append({name: float((g - cp.split_sequence(e, rank, n, layout=layout)).abs().max())
                     for name, g, e in zip(("out", "dq", "dk", "dv"), got, expected)})
    return gaps


def everything(rank: int, world_size: int, _=None) -> dict:
    """On the groups of the first 2, 3 and 4 ranks: attention against full attention, and one
    block under Megatron SP, ring attention and Ulysses (its differences from the unsplit block,
    the bytes it keeps and sends); then the trap and the refusals on all ranks."""
    report = {}
    for n, group in runs.first_ranks(world_size).items():
        if rank < n:
            report[n] = {"attention": split_attention_gaps(rank, world_size, group),
                         "blocks": [runs.block_run(method, seq_len, 2, group) for seq_len in (24, 48)
                                    for method in ("megatron-sp", "ring", "ulysses")]}
    report["trap"] = runs.gathered_kv_attention(rank, world_size, dict(batch=2, heads=3, local=3, head_dim=5))
    report["refused"] = refused(rank, world_size)
    return report


def refused(rank: int, world_size: int) -> list:
    """The errors a rank gets for bad input, before any message is sent."""
    messages = []
    x = whole((1, 2 * world_size + 1, 3, 2), 0)
    for bad in (lambda: cp.ulysses_attention(x, x, x),
                lambda: cp.ring_attention(x, x, x, layout="zigzag"),
                lambda: cp.ring_attention(x, x[..., :1], x),
                lambda: cp.ring_attention(x[0], x[0], x[0]),
                lambda: cp.ring_attention(x, x, x, layout="striped")):
        try:
            bad()
            messages.append(None)
        except ValueError as error:
            messages.append(str(error))
    dist.barrier()
    return messages
