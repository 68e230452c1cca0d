"""Workers that check nnpar_lite.context_parallel on real ranks against one process: every rank
builds the same whole q, k, v (seeded), computes full attention with torch's fused kernel and
one-process autograd, and compares its own chunk of the output and of the gradients."""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from nnpar_lite import context_parallel as cp


def whole(shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference(q, k, v, coefficients, causal: bool):
    """Full attention on the whole sequence and the gradients of Σ out ∘ c (a loss over every position)."""
    q, k, v = (x.clone().requires_grad_(True) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    (out * coefficients).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def split_attention_gaps(rank: int, world_size: int, cases: list) -> list[dict]:
    """For each case (method, causal, layout, batch, heads, local_seq, head_dim): the largest
    difference between this rank's output and q, k, v gradients and its chunk of the reference's."""
    methods = {"ring": cp.ring_attention, "ulysses": cp.ulysses_attention}
    gaps = []
    for i, (method, causal, layout, batch, heads, local, dim) in enumerate(cases):
        shape = (batch, heads, world_size * local, dim)
        q, k, v, c = (whole(shape, 10 * i + j) for j in range(4))
        expected = reference(q, k, v, c, causal)
        mine = [cp.split_sequence(x, rank, world_size, layout=layout).requires_grad_(True) for x in (q, k, v)]
        out = methods[method](*mine, causal=causal, layout=layout)
        (out * cp.split_sequence(c, rank, world_size, layout=layout)).sum().backward()
        got = [out.detach()] + [x.grad for x in mine]
        gaps.append({name: float((g - cp.split_sequence(e, rank, world_size, layout=layout)).abs().max())
                     for name, g, e in zip(("out", "dq", "dk", "dv"), got, expected)})
    return gaps


def refused(rank: int, world_size: int) -> list:
    """The errors a rank gets for bad input, before any message is sent."""
    messages = []
    x = whole((1, world_size + 1, 3, 2), 0)
    for bad in (lambda: cp.ulysses_attention(x, x, x),
                lambda: cp.ring_attention(x, x, x, layout="zigzag"),
                lambda: cp.ring_attention(x, x[..., :1], x),
                lambda: cp.ring_attention(x[0], x[0], x[0])):
        try:
            bad()
            messages.append(None)
        except ValueError as error:
            messages.append(str(error))
    dist.barrier()
    return messages
