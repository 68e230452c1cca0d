"""Chapter 10: ring attention and Ulysses equal full attention (torch's fused kernel on the whole
sequence, one-process autograd) in output and in the q, k, v gradients, contiguous and zigzag,
causal and not, on 1, 2, 3 and 4 ranks; a block under Megatron's sequence parallelism, ring
attention or Ulysses equals the unsplit block and keeps and sends, to the byte, what costmodel
says; the tiny GPT trained with context parallelism over 2 processes equals one process; the
online-softmax merge equals a softmax over the union; torch's differentiable all-gather gives
wrong K and V gradients where collectives.gather_along is exact.

One launch of 4 processes runs the multi-rank checks on groups of the first 2, 3 and 4 of them
(tests/context_parallel_workers.py)."""

import math

import pytest
import torch

import context_parallel_workers as workers
from nnpar_lite import context_parallel as cp
from nnpar_lite import costmodel
from nnpar_lite.distributed import launch
from nnpar_lite.experiments import long_sequences as runs

WORLD_SIZES = (2, 3, 4)
F64 = 8


@pytest.fixture(scope="module")
def results():
    """[rank 0's report, rank 1's, rank 2's, rank 3's]: one launch for the whole file."""
    return launch(workers.everything, 4, None, timeout=300)


# ------------------------------------------------------------------ attention
def test_ring_and_ulysses_equal_full_attention_on_2_3_and_4_ranks(results):
    for n in WORLD_SIZES:
        for rank in range(n):
            gaps = results[rank][n]["attention"]
            assert len(gaps) == len(workers.cases(n)) == 8
            for case, gap in zip(workers.cases(n), gaps):
                assert max(gap.values()) < 1e-10, (n, rank, case, gap)
    assert all(n not in results[rank] for n in WORLD_SIZES for rank in range(n, 4))


def test_on_one_rank_they_are_full_attention():
    for gap in launch(workers.split_attention_gaps, 1)[0]:
        assert max(gap.values()) < 1e-10, gap


def test_the_reference_would_see_a_wrong_answer():
    """The comparison can fail: attention that forgets the causal mask is far from the reference."""
    q, k, v, c = (workers.whole((1, 2, 6, 3), j) for j in range(4))
    assert (torch.nn.functional.scaled_dot_product_attention(q, k, v) - workers.reference(q, k, v, c, True)[0]).abs().max() > 0.1


# ------------------------------------------------------------------ blocks: equal, memory, bytes
def test_a_block_split_three_ways_equals_the_unsplit_block(results):
    for n in WORLD_SIZES:
        for rank in range(n):
            for row in results[rank][n]["blocks"]:
                assert row["difference"] < 1e-10, row


def test_each_block_keeps_what_the_formula_says_to_the_byte(results):
    for n in WORLD_SIZES:
        for row in results[0][n]["blocks"]:
            s, b, method = row["seq_len"], row["batch"], row["method"]
            expected = costmodel.sequence_parallel_activations(s, b, 48, 12, n, method, bytes_per_value=F64)
            assert row["kept"] == expected, row
    for seq_len in (24, 48):
        assert runs.unsplit_activation_bytes(seq_len, 2) == costmodel.gpt_block_activations(seq_len, 2, 48, 12, bytes_per_value=F64)


def test_megatron_sp_keeps_exactly_the_calculators_share(results):
    """training_memory(sequence_parallel=True) books 1/N of the activations (Korthikanti et al.'s
    count: the column-parallel layers keep only their chunk of the input and gather it again in
    the backward pass), and that is what shard_gpt_block keeps, to the byte."""
    for n in WORLD_SIZES:
        for row in results[0][n]["blocks"]:
            if row["method"] != "megatron-sp":
                continue
            s, b = row["seq_len"], row["batch"]
            whole = costmodel.gpt_block_activations(s, b, 48, 12, bytes_per_value=F64)
            calculator = costmodel.training_memory(0, optimizer="sgd", activation_bytes=whole, tensor_parallel=n,
                                                   sequence_parallel=True)["activations"]
            assert math.isclose(row["kept"], calculator), (row, calculator)


def test_each_block_sends_what_the_formula_says(results):
    for n in WORLD_SIZES:
        for rank in range(n):
            for row in results[rank][n]["blocks"]:
                sent = costmodel.sequence_parallel_bytes(row["seq_len"], row["batch"], 48, n, row["method"],
                                                         bytes_per_value=F64)
                assert math.isclose(row["sent forward"], sent["forward"]), row
                assert math.isclose(row["sent backward"], sent["backward"]), row
                kinds = {"megatron-sp": {"all_gather", "reduce_scatter"}, "ring": {"send"}, "ulysses": {"all_to_all"}}
                assert set(row["ops"]) == kinds[row["method"]]


# ------------------------------------------------------------------ the GPT
def test_the_gpt_trained_with_context_parallelism_over_2_processes_equals_one_process():
    configs = [dict(method="ring", layout="zigzag", steps=3, batch=3, seq_len=24, lr=0.5),
               dict(method="ulysses", layout="contiguous", steps=2, batch=3, seq_len=24, lr=0.5)]
    per_rank = launch(runs.long_sequence_runs, 2, [("context_parallel_training", c) for c in configs])
    for reports in per_rank:
        for config, report in zip(configs, reports):
            assert len(report["difference"]) == config["steps"]
            assert max(report["difference"]) < 1e-10, (config, report)
            assert max(abs(a - b) for a, b in zip(report["loss"], report["one process"])) < 1e-10
            assert report["one process"][-1] < report["one process"][0]      # it trained


# ------------------------------------------------------------------ the trap
def test_torchs_differentiable_all_gather_gives_wrong_kv_gradients_on_gloo(results):
    """torch 2.13's gloo path receives the gradients into empty_like(gradient), which keeps a
    transposed gradient's strides, and gloo fills the memory in row-major order: dK and dV come
    back with their elements permuted. If a torch release fixes it, this test says so."""
    for report in results:
        torch_gaps, ours = report["trap"]["torch.distributed.nn.functional.all_gather"], report["trap"]["collectives.gather_along"]
        assert torch_gaps["out"] < 1e-12 and max(torch_gaps["dk"], torch_gaps["dv"]) > 0.1, torch_gaps
        assert max(ours.values()) < 1e-12, ours


def test_bad_input_is_refused_naming_the_sizes(results):
    messages = results[1]["refused"]
    assert "9 heads do not divide among 4 ranks" in messages[0]
    assert "a sequence of 12 positions does not cut into 8 equal chunks (zigzag layout over 4 ranks)" in messages[1]
    assert "one shape and dtype" in messages[2] and "(1, 9, 3, 1)" in messages[2]
    assert "must be a 4-D tensor" in messages[3] and "(9, 3, 2)" in messages[3]
    assert "layout must be one of" in messages[4] and "striped" in messages[4]


# ------------------------------------------------------------------ one process
@pytest.mark.parametrize("layout", cp.LAYOUTS)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_the_layout_cuts_a_sequence_and_puts_it_back(layout, world_size):
    seq_len = 6 * world_size
    x = torch.arange(2 * seq_len).view(1, 2, seq_len)
    parts = [cp.split_sequence(x, r, world_size, layout=layout) for r in range(world_size)]
    assert torch.equal(cp.join_sequence(parts, layout=layout), x)
    positions = [cp.chunk_positions(r, world_size, seq_len, layout).tolist() for r in range(world_size)]
    assert sorted(sum(positions, [])) == list(range(seq_len)) and all(p == sorted(p) for p in positions)
    if layout == "zigzag":
        assert positions[0][:3] == [0, 1, 2] and positions[0][3:] == list(range(seq_len - 3, seq_len))


def test_a_sequence_that_does_not_cut_evenly_is_refused():
    with pytest.raises(ValueError, match="a sequence of 10 positions does not cut into 3 equal chunks"):
        cp.split_sequence(torch.zeros(1, 1, 10, 2), 0, 3)
    with pytest.raises(ValueError, match="layout must be one of"):
        cp.chunk_positions(0, 2, 8, "striped")


def _partials(scores: torch.Tensor, values: torch.Tensor, cuts: list[int]):
    """The partial (out, lse) of each block of keys between the cuts."""
    bounds = list(zip([0] + cuts, cuts + [scores.shape[-1]]))
    return [((scores[..., a:b] - scores[..., a:b].logsumexp(-1, keepdim=True)).exp() @ values[a:b],
             scores[..., a:b].logsumexp(-1, keepdim=True)) for a, b in bounds]


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_merging_partial_results_is_the_softmax_over_every_key(scale):
    """Blocks of 1, 4 and 2 keys merged one after another, with scores up to ~3000 (e^3000
    overflows float64: the merge must subtract the maximum), against softmax(S) V."""
    g = torch.Generator().manual_seed(3)
    scores = scale * torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    values = torch.randn(7, 3, generator=g, dtype=torch.float64)
    parts = _partials(scores, values, [1, 5])
    out, lse = parts[0]
    for part in parts[1:]:
        out, lse = cp.merge_partial(out, lse, *part)
    assert (out - scores.softmax(-1) @ values).abs().max() < 1e-12
    assert (lse - scores.logsumexp(-1, keepdim=True)).abs().max() < 1e-9 * scale
    empty = (torch.zeros_like(out), torch.full_like(lse, float("-inf")))
    again, same = cp.merge_partial(*empty, out, lse)
    assert torch.equal(again, out) and torch.equal(same, lse)


@pytest.mark.parametrize("layout", cp.LAYOUTS)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_the_work_the_ring_counts_is_the_formula_and_zigzag_balances_it(layout, world_size):
    seq_len = 12 * world_size
    counted = cp.ring_work(seq_len, world_size, layout)
    assert counted == costmodel.causal_ring_work(seq_len, world_size, layout)
    assert sum(counted) == sum(cp.ring_work(seq_len, world_size, "contiguous"))   # the same scores in all
    assert sum(counted) == seq_len * (seq_len + seq_len // world_size) // 2    # the triangle, diagonal blocks whole
    if layout == "zigzag":
        assert len(set(counted)) == 1
    else:
        assert counted == [(r + 1) * counted[0] for r in range(world_size)]
    assert cp.ring_work(seq_len, world_size, layout, causal=False) == [seq_len ** 2 // world_size] * world_size


@pytest.mark.parametrize("call, words", [
    (lambda: costmodel.sequence_parallel_bytes(8, 1, 4, 2, "pipeline"), "method must be one of"),
    (lambda: costmodel.sequence_parallel_activations(8, 1, 4, 2, 0, "ring"), "world_size must be an integer"),
    (lambda: costmodel.causal_ring_work(8, 2, "striped"), "layout must be 'contiguous' or 'zigzag'"),
    (lambda: costmodel.gpt_block_activations(0, 1, 4, 2), "seq_len must be an integer"),
])
def test_the_formulas_refuse_bad_input(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_the_formulas_on_one_rank_send_nothing_and_keep_everything():
    for method in costmodel.SEQUENCE_METHODS:
        assert costmodel.sequence_parallel_bytes(64, 2, 32, 1, method)["total"] == 0
    assert costmodel.sequence_parallel_activations(64, 2, 32, 4, 1, "ring") == costmodel.gpt_block_activations(64, 2, 32, 4)
    assert costmodel.sequence_parallel_activations(64, 2, 32, 4, 1, "megatron-sp") == costmodel.gpt_block_activations(64, 2, 32, 4)


def test_an_unknown_method_or_layout_is_refused_and_changes_nothing():
    from nnpar_lite.gpt import Block, GPTConfig
    block = Block(GPTConfig(vocab_size=8, n_layer=1, n_head=2, n_embd=4))
    core = block.attn.core
    for bad in (dict(method="striped"), dict(layout="striped")):
        with pytest.raises(ValueError, match="method must be one of .* and layout one of"):
            cp.use_context_parallel(block, **bad)
    assert block.attn.core is core
