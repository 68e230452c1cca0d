"""Chapter 10's typical wrong answers (tests/test_exercises.py proves each check with them)."""

import torch
import torch.distributed as dist


def merge_by_averaging(out_a, lse_a, out_b, lse_b):
    """Averages the two outputs, as if both blocks held as much of the softmax's mass."""
    return (out_a + out_b) / 2, torch.maximum(lse_a, lse_b)


def merge_without_the_maximum(out_a, lse_a, out_b, lse_b):
    """Right on paper, but e^lse overflows for scores near 1000: inf / inf."""
    a, b = torch.exp(lse_a), torch.exp(lse_b)
    return (a * out_a + b * out_b) / (a + b), torch.log(a + b)


def merge_forgetting_the_lse(out_a, lse_a, out_b, lse_b):
    """The right output, but the old lse handed on: the next merge weighs the blocks wrongly."""
    lse = torch.logaddexp(lse_a, lse_b)
    return torch.exp(lse_a - lse) * out_a + torch.exp(lse_b - lse) * out_b, lse_a


def merge_returning_out_only(out_a, lse_a, out_b, lse_b):
    """Merges right but returns the output alone."""
    lse = torch.logaddexp(lse_a, lse_b)
    return torch.exp(lse_a - lse) * out_a + torch.exp(lse_b - lse) * out_b


def ring_without_passing(q, k, v):
    """Attends to its own block only: the ranks never exchange K and V."""
    from nnpar_lite.context_parallel import block_attention
    return block_attention(q, k, v, None, None, causal=False)[0]


def _ring(q, k, v, combine, attend_steps):
    """A ring that passes K and V N − 1 times, attends on ``attend_steps`` of the N steps and
    combines each block's (out, lse) into the running pair with ``combine``."""
    from nnpar_lite.collectives import pass_right
    from nnpar_lite.context_parallel import block_attention
    world = dist.get_world_size()
    out, lse = torch.zeros_like(q), torch.full_like(q[..., :1], float("-inf"))
    for step in range(world):
        if step in attend_steps(world):
            out, lse = combine(out, lse, *block_attention(q, k, v, None, None, causal=False))
        if step < world - 1:
            arriving_k, arriving_v = torch.empty_like(k), torch.empty_like(v)
            pass_right(k, arriving_k)
            pass_right(v, arriving_v)
            k, v = arriving_k, arriving_v
    return out


def ring_averaging_the_blocks(q, k, v):
    """Passes K and V round the ring but averages the blocks' outputs instead of merging them."""
    world = dist.get_world_size()
    return _ring(q, k, v, lambda out, lse, block_out, block_lse: (out + block_out / world, lse), range)


def ring_replacing_the_result(q, k, v):
    """Keeps only the latest block's partial result: what arrives last, alone."""
    return _ring(q, k, v, lambda out, lse, block_out, block_lse: (block_out, block_lse), range)


def ring_missing_the_last_block(q, k, v):
    """Attends before each pass only: the block that arrives last is never used."""
    from nnpar_lite.context_parallel import merge_partial
    return _ring(q, k, v, merge_partial, lambda world: range(world - 1))


def ring_with_the_causal_mask(q, k, v):
    """Gathers the whole K and V and masks the future: causal attention, where none was asked for."""
    import torch.nn.functional as F
    world, rank, local = dist.get_world_size(), dist.get_rank(), q.shape[2]
    keys, values = [torch.empty_like(k) for _ in range(world)], [torch.empty_like(v) for _ in range(world)]
    dist.all_gather(keys, k)
    dist.all_gather(values, v)
    past = torch.arange(world * local)[None, :] <= (rank * local + torch.arange(local))[:, None]
    return F.scaled_dot_product_attention(q, torch.cat(keys, dim=2), torch.cat(values, dim=2), attn_mask=past)


def unfinished(q, k, v):
    raise NotImplementedError  # your code here


def merge_by_the_package(out_a, lse_a, out_b, lse_b):
    """The package's merge asked for the answer."""
    from nnpar_lite.context_parallel import merge_partial
    return merge_partial(out_a, lse_a, out_b, lse_b)


WRONG_ANSWERS = {
    "10.1": [(234.881024, "forward pass only"), (3758.096384, "s/N positions"), (536.870912, "1/N of each tensor"),
             (2952.79, "ring attention"), (4697.62, "Megatron's sequence parallelism"), (448, "MiB"),
             (469, "close: give more digits"), (600, "is not it")],
    "10.2": [(2_097_152, "contiguous split"), (1_048_576, "diagonal block whole"), (1_114_112, "one causal call"),
             (1_048_832, "only the pairs the mask keeps"), (262_144, "one block"),
             (1_500_000, "is not it")],
    "10.3": [(merge_by_averaging, "plain mean of the two parts"), (merge_without_the_maximum, "inf or nan"),
             (merge_forgetting_the_lse, "your lse is not"), (merge_returning_out_only, "as a pair (out, lse)"),
             (merge_by_the_package, "uses merge_partial")],
    "10.4": [(ring_without_passing, "own K/V block only"), (ring_averaging_the_blocks, "plain mean of the 3 blocks"),
             (ring_replacing_the_result, "replaced the running result"),
             (ring_missing_the_last_block, "one after the last"), (ring_with_the_causal_mask, "causal attention")],
}


def test_an_unfinished_ring_reads_not_solved_yet(capsys):
    from nnpar_lite.exercises import check
    assert not check("10.4", unfinished)
    assert "not solved yet" in capsys.readouterr().out
