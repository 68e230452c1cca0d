"""Chapter 10's runs: ring attention and Ulysses against full attention on 2, 3 and 4 ranks of
one launch; a block under Megatron's sequence parallelism, ring attention and Ulysses against
the unsplit block, with the bytes it keeps for its backward pass (saved-tensor hooks) and the
bytes it sends (:func:`nnpar_lite.collectives.count_communication`); the tiny GPT trained with
context parallelism against one process; the differentiable-collective trap. The algorithms
are in :mod:`nnpar_lite.context_parallel` and :mod:`nnpar_lite.tensor_parallel`.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import context_parallel as cp
from .. import tensor_parallel as tp
from ..collectives import allreduce_mean_, count_communication, gather_along
from ..data import corpus_batches
from ..gpt import GPT, Block, GPTConfig, attention_by_the_formula, corpus_config, lm_loss
from ..util import max_abs_difference

# 12 heads divide among 2, 3 and 4 ranks (Megatron and Ulysses split heads); width 48, 4 per head.
BLOCK = GPTConfig(vocab_size=8, block_size=96, n_layer=1, n_head=12, n_embd=48)


def long_sequence_runs(rank: int, world_size: int, runs: list[tuple[str, Any]]) -> list:
    """Several of this module's workers in one launch (each launch costs seconds):
    ``[(worker name, its argument), …]`` → their results, in order."""
    return [globals()[name](rank, world_size, argument) for name, argument in runs]


def first_ranks(world_size: int) -> dict[int, Any]:
    """A process group of ranks 0 … n − 1 for each n = 2 … world_size (None: every rank).
    Every rank creates every group, in the same order, as torch.distributed asks."""
    return {n: (None if n == world_size else dist.new_group(list(range(n)))) for n in range(2, world_size + 1)}


def seeded(shape: tuple, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ============================================================ attention against full attention
def full_attention_and_gradients(q, k, v, coefficients, causal: bool) -> list[torch.Tensor]:
    """The reference: torch's fused attention over the whole sequence in one process, and the
    gradients of Σ out ∘ c (a loss over every position) for q, k and v."""
    q, k, v = (x.clone().requires_grad_(True) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    (out * coefficients).sum().backward()
    return [out.detach(), q.grad, k.grad, v.grad]


def split_attention(method: str, q, k, v, coefficients, causal: bool, layout: str, group) -> list[torch.Tensor]:
    """This rank's output chunk and the gradients of its q, k, v chunks, by ``method``."""
    rank, n = dist.get_rank(group), dist.get_world_size(group)
    mine = [cp.split_sequence(x, rank, n, layout=layout).requires_grad_(True) for x in (q, k, v)]
    out = cp.METHODS[method](*mine, causal=causal, group=group, layout=layout)
    (out * cp.split_sequence(coefficients, rank, n, layout=layout)).sum().backward()
    return [out.detach()] + [x.grad for x in mine]


def attention_against_full(rank: int, world_size: int, config: dict) -> dict:
    """For N = 2 … world_size, ring and Ulysses, contiguous and zigzag, causal and not: the
    largest difference between this rank's output and q, k, v gradients and its chunk of the
    reference's. {(N, method, layout, causal): difference} (ranks outside a group: nothing)."""
    gaps = {}
    for n, group in first_ranks(world_size).items():
        for i, (method, layout, causal) in enumerate([(m, lay, c) for m in cp.METHODS for lay in cp.LAYOUTS
                                                      for c in (False, True)]):
            shape = (config["batch"], config["heads"], n * config["local"], config["head_dim"])
            q, k, v, c = (seeded(shape, 100 * n + 10 * i + j) for j in range(4))
            if rank >= n:
                continue
            expected = full_attention_and_gradients(q, k, v, c, causal)
            got = split_attention(method, q, k, v, c, causal, layout, group)
            gaps[n, method, layout, causal] = max(
                float((g - cp.split_sequence(e, rank, n, layout=layout)).abs().max()) for g, e in zip(got, expected))
    return gaps


# ============================================================ what a block keeps and sends
def saved_activation_bytes(forward: Callable[[], Any], parameters) -> tuple[Any, int]:
    """Run ``forward()`` and add up the bytes of every distinct storage autograd saves for the
    backward pass, the parameters' own aside (``torch.autograd.graph.saved_tensors_hooks``)."""
    weights = {p.untyped_storage().data_ptr() for p in parameters}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = forward()
    return result, sum(kept.values())


def split_block(method: str, group) -> torch.nn.Module:
    """The seeded block of :data:`BLOCK` (the same on every rank), split by ``method``."""
    torch.manual_seed(0)
    block = Block(BLOCK).double()
    if method == "megatron-sp":
        return tp.shard_gpt_block(block, group=group, sequence_parallel=True)
    return cp.use_context_parallel(block, method=method, group=group)


def block_run(method: str, seq_len: int, batch: int, group) -> dict:
    """One forward and backward of a block split by ``method`` on this rank's chunk of the
    sequence: bytes kept for backward, bytes sent forward and backward, and the largest
    difference from the unsplit block (output, input gradient, every parameter's gradient)."""
    rank, n = dist.get_rank(group), dist.get_world_size(group)
    x, c = seeded((batch, seq_len, BLOCK.n_embd), 1), seeded((batch, seq_len, BLOCK.n_embd), 2)
    full = _unsplit_block()
    reference = _forward_backward(full, x, c)
    block = split_block(method, group)
    mine = cp.split_sequence(x, rank, n, dim=1).requires_grad_(True)
    with count_communication() as forward_log:
        y, kept = saved_activation_bytes(lambda: block(mine), list(block.parameters()))
    with count_communication() as backward_log:
        (y * cp.split_sequence(c, rank, n, dim=1)).sum().backward()
    _sum_partial_gradients(block, method, group)
    got = [y.detach(), mine.grad]
    want = [cp.split_sequence(t, rank, n, dim=1) for t in reference[:2]]
    gaps = [float((g - w).abs().max()) for g, w in zip(got, want)] + _parameter_gaps(block, full)
    return {"method": method, "N": n, "seq_len": seq_len, "batch": batch, "kept": kept, "difference": max(gaps),
            "sent forward": sum(e["sent"] for e in forward_log), "sent backward": sum(e["sent"] for e in backward_log),
            "ops": [e["op"] for e in forward_log + backward_log]}


def _unsplit_block() -> torch.nn.Module:
    torch.manual_seed(0)
    return Block(BLOCK).double()


def _forward_backward(block: torch.nn.Module, x: torch.Tensor, c: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = block(x)
    (y * c).sum().backward()
    return [y.detach(), x.grad]


def _sum_partial_gradients(block: torch.nn.Module, method: str, group) -> None:
    """Each rank's gradients cover its chunk of the sequence: Megatron sums the few parameters
    that see a chunk (LayerNorms, row biases); context parallelism sums them all."""
    if method == "megatron-sp":
        tp.sum_sequence_parallel_gradients(block, group=group)
    else:
        for p in block.parameters():
            dist.all_reduce(p.grad, group=group)


def _parameter_gaps(block: torch.nn.Module, full: torch.nn.Module) -> list[float]:
    """Each parameter's gradient against the unsplit block's, the shard's rows or columns of it."""
    modules, whole = dict(block.named_modules()), dict(full.named_parameters())
    gaps = []
    for name, p in block.named_parameters():
        owner, leaf = name.rsplit(".", 1)
        want = whole[name].grad
        if isinstance(modules[owner], tp.ColumnParallelLinear):
            want = want[modules[owner].rows]
        elif isinstance(modules[owner], tp.RowParallelLinear) and leaf == "weight":
            want = want[:, modules[owner].columns]
        gaps.append(float((p.grad - want).abs().max()))
    return gaps


def unsplit_activation_bytes(seq_len: int, batch: int, attention: str = "fused") -> int:
    """Bytes the unsplit block keeps for backward, with torch's fused attention or the formula
    written out (:func:`nnpar_lite.gpt.attention_by_the_formula`, which keeps the s × s softmax)."""
    block = _unsplit_block()
    if attention == "formula":
        block.attn.core = attention_by_the_formula
    x = seeded((batch, seq_len, BLOCK.n_embd), 1).requires_grad_(True)
    return saved_activation_bytes(lambda: block(x), list(block.parameters()))[1]


def activation_growth(seq_lens: list[int], batch: int = 2) -> list[dict]:
    """In this process: the bytes the unsplit block keeps for backward at each sequence length,
    with the fused kernel and with the formula written out."""
    return [{"seq_len": s, "attention": attention, "kept": unsplit_activation_bytes(s, batch, attention)}
            for attention in ("fused", "formula") for s in seq_lens]


def memory_and_traffic(rank: int, world_size: int, config: dict) -> list[dict]:
    """:func:`block_run` for every sequence length in ``config["seq_lens"]``, N = 2 … world_size
    and every method, with the unsplit block's bytes beside (N = 1)."""
    rows, groups = [], first_ranks(world_size)
    for seq_len in config["seq_lens"]:
        rows.append({"method": "none", "N": 1, "seq_len": seq_len, "batch": config["batch"],
                     "kept": unsplit_activation_bytes(seq_len, config["batch"])})
        for n, group in groups.items():
            for method in ("megatron-sp", "ring", "ulysses"):
                if rank < n:
                    rows.append(block_run(method, seq_len, config["batch"], group))
    return rows


# ============================================================ the tiny GPT, its sequences split
def context_parallel_training(rank: int, world_size: int, config: dict) -> dict:
    """The tiny GPT trained with SGD for a few steps on the corpus, each rank holding its part of
    every sequence (``config``: method, layout, steps, batch, seq_len, lr), and in one process on
    whole sequences: after every step, the whole batch's loss both ways and the largest
    difference between their parameters."""
    model_config = corpus_config(block_size=config["seq_len"], n_layer=2, n_head=4, n_embd=32)
    reference = GPT(model_config, seed=0, dtype=torch.float64)
    model = cp.use_context_parallel(copy.deepcopy(reference), method=config["method"], layout=config["layout"])
    optimizers = [torch.optim.SGD(m.parameters(), lr=config["lr"]) for m in (reference, model)]
    report = {"loss": [], "one process": [], "difference": []}
    for x, y in corpus_batches(config["batch"], config["seq_len"], config["steps"], seed=config.get("seed", 0)):
        whole_loss = lm_loss(reference(x), y)
        loss = cp.context_parallel_loss(model, x, y, layout=config["layout"])
        for optimizer in optimizers:
            optimizer.zero_grad()
        whole_loss.backward()
        loss.backward()
        allreduce_mean_([p.grad for p in model.parameters()])       # the mean of the ranks' gradients
        for optimizer in optimizers:
            optimizer.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        report["loss"].append(float(mean) / world_size)
        report["one process"].append(float(whole_loss.detach()))
        report["difference"].append(max_abs_difference(model, reference))
    return report


# ============================================================ the trap
def torch_all_gather_along(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Every rank's ``x`` joined along ``dim`` by ``torch.distributed.nn.functional.all_gather``,
    differentiable, torch's own (deprecated in torch 2.13, still there)."""
    import torch.distributed.nn.functional as distributed_autograd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(distributed_autograd.all_gather(x), dim)


def gathered_kv_attention(rank: int, world_size: int, config: dict) -> dict:
    """Attention whose K and V are all-gathered along the sequence (each rank keeps its queries):
    the largest difference of the output and of the q, k, v gradients from one process, with
    torch's differentiable all-gather and with :func:`nnpar_lite.collectives.gather_along`."""
    shape = (config["batch"], config["heads"], world_size * config["local"], config["head_dim"])
    q, k, v, c = (seeded(shape, j) for j in range(4))
    expected = full_attention_and_gradients(q, k, v, c, causal=False)
    gatherers = {"torch.distributed.nn.functional.all_gather": torch_all_gather_along,
                 "collectives.gather_along": lambda x, dim: gather_along(x, dim)}
    report = {}
    for name, gather in gatherers.items():
        mine = [cp.split_sequence(x, rank, world_size).requires_grad_(True) for x in (q, k, v)]
        out = F.scaled_dot_product_attention(mine[0], gather(mine[1], 2), gather(mine[2], 2))
        (out * cp.split_sequence(c, rank, world_size)).sum().backward()
        got = [out.detach()] + [x.grad for x in mine]
        report[name] = {part: float((g - cp.split_sequence(e, rank, world_size)).abs().max())
                        for part, g, e in zip(("out", "dq", "dk", "dv"), got, expected)}
    return report


def refusals(rank: int, world_size: int, _=None) -> list[str]:
    """What the split attentions say to input they cannot take, before anything is sent:
    Ulysses with heads that do not divide among the ranks, a zigzag layout with an odd chunk."""
    x = seeded((1, world_size + 2, 3, 4), 0)
    messages = []
    for attend, layout in ((cp.ulysses_attention, "contiguous"), (cp.ring_attention, "zigzag")):
        try:
            attend(x, x, x, causal=True, layout=layout)
            messages.append("accepted")
        except ValueError as error:
            messages.append(f"{type(error).__name__}: {error}")
    dist.barrier()
    return messages
