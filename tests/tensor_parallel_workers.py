"""Workers for a GPT block split by tensor (and sequence) parallelism, compared with the
unsplit block in the same process: every rank builds the same full block and input (seeded)."""

import copy

import torch
import torch.distributed as dist

from nnpar_lite import collectives as co
from nnpar_lite import tensor_parallel as tp
from nnpar_lite.gpt import Block, GPTConfig

CONFIG = GPTConfig(vocab_size=8, block_size=12, n_layer=1, n_head=12, n_embd=24)


def _unsplit(block, x, c):
    x = x.clone().requires_grad_(True)
    y = block(x)
    (y * c).sum().backward()
    return y.detach(), x.grad


def _full_slice(full_param: torch.Tensor, shard: torch.nn.Module, name: str) -> torch.Tensor:
    if isinstance(shard, tp.ColumnParallelLinear):
        return full_param[shard.rows]
    if isinstance(shard, tp.RowParallelLinear) and name == "weight":
        return full_param[:, shard.columns]
    return full_param


def block_against_unsplit(rank: int, world_size: int, sequence_parallel: bool) -> dict:
    """Output, input gradient and every parameter gradient of this rank's shard against the
    unsplit block, for a loss Σ <y, c> over the whole sequence; and the collectives it ran."""
    torch.manual_seed(0)
    full = Block(CONFIG).double()
    x = torch.randn(2, 12, 24, dtype=torch.float64)
    c = torch.randn(2, 12, 24, dtype=torch.float64)
    y_full, dx_full = _unsplit(full, x, c)
    shard = tp.shard_gpt_block(copy.deepcopy(full), sequence_parallel=sequence_parallel)
    shard.zero_grad()
    chunk = slice(rank * 12 // world_size, (rank + 1) * 12 // world_size) if sequence_parallel else slice(None)
    mine = x[:, chunk].clone().requires_grad_(True)
    with co.count_communication() as log:
        y = shard(mine)
        (y * c[:, chunk]).sum().backward()
    if sequence_parallel:
        tp.sum_sequence_parallel_gradients(shard)
    modules = dict(shard.named_modules())
    full_params = dict(full.named_parameters())
    gaps = {"output": float((y - y_full[:, chunk]).abs().max()), "input": float((mine.grad - dx_full[:, chunk]).abs().max())}
    for name, p in shard.named_parameters():
        owner, leaf = name.rsplit(".", 1)
        want = _full_slice(full_params[name].grad, modules[owner], leaf)
        gaps[name] = float((p.grad - want).abs().max())
    return {"gaps": gaps, "ops": [e["op"] for e in log]}


def refuses_heads_that_do_not_divide(rank: int, world_size: int) -> str:
    block = Block(GPTConfig(vocab_size=8, n_layer=1, n_head=5, n_embd=10))
    try:
        tp.shard_gpt_block(block)
    except ValueError as error:
        dist.barrier()
        return str(error)
    return "accepted"
