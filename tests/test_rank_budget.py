"""The capstone's cost formulas against the real thing in one process: the tensors a stage
holds (the GPT's own, cut by GPTStage), ZeRO's chunks, and what a block and the head save
for backward, measured by autograd's saved-tensor hooks. (With tp > 1 and on real ranks,
every torchrun run in tests/test_train_gpt.py compares prediction and measurement.)"""

import pytest
import torch
import torch.nn.functional as F

from nnpar_lite import costmodel as cm
from nnpar_lite import rank_budget
from nnpar_lite.experiments.capstone import saved_activations
from nnpar_lite.gpt import GPT, Block, GPTConfig, corpus_config
from nnpar_lite.gpt_pipeline import GPTStage
from nnpar_lite.mesh import Mesh


def numbered_in_the_model(name: str, first_layer: int) -> str:
    """A stage's "blocks.i.…" is the model's block first_layer + i."""
    if not name.startswith("blocks."):
        return name
    _, i, rest = name.split(".", 2)
    return f"blocks.{first_layer + int(i)}.{rest}"


@pytest.mark.parametrize("pp", [1, 2, 4])
@pytest.mark.parametrize("tied", [True, False])
def test_the_tensors_of_a_stage_are_the_gpts(pp, tied):
    config = corpus_config(block_size=8, n_layer=4, n_head=2, n_embd=12, tie_weights=tied)
    model = GPT(config)
    for stage in range(pp):
        held = {numbered_in_the_model(name, stage * 4 // pp): p.numel()
                for name, p in GPTStage(model, stage, pp).named_parameters()}
        assert held == cm.gpt_rank_tensors(config.vocab_size, 8, 4, 12, pp=pp, stage=stage, tied=tied)


def test_split_over_tp_the_shards_add_up_to_the_block():
    whole = cm.gpt_rank_tensors(10, 8, 2, 24, tp=1)
    for tp in (2, 3, 4):
        split = cm.gpt_rank_tensors(10, 8, 2, 24, tp=tp)
        for name, n in whole.items():
            sharded = any(part in name for part in ("c_attn", "c_fc", "c_proj.weight"))
            assert split[name] * (tp if sharded else 1) == n, name


@pytest.mark.parametrize("numel", [1, 5, 12, 13, 1000])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_zero_chunks_cover_the_tensor_once(numel, world):
    chunks = [cm.zero_chunk_elements(numel, r, world) for r in range(world)]
    assert sum(chunks) == numel and max(chunks) == -(-numel // world)


@pytest.mark.parametrize("b, s, h, a", [(2, 8, 16, 4), (3, 5, 12, 3), (1, 16, 8, 1)])
def test_a_block_saves_what_the_formula_counts(b, s, h, a):
    block = Block(GPTConfig(vocab_size=5, block_size=s, n_layer=1, n_head=a, n_embd=h))
    x = torch.randn(b, s, h, requires_grad=True)
    with saved_activations(list(block.parameters())) as held:
        y = block(x)
    assert held["now"] == 4 * cm.gpt_block_activation_values(b, s, h, a)
    y.sum().backward()
    assert held["now"] == 0, "everything saved is freed by backward"


@pytest.mark.parametrize("b, s, h, a", [(2, 8, 16, 4), (3, 5, 12, 3)])
def test_with_one_tp_rank_a_block_saves_what_chapter_10_counts(b, s, h, a):
    assert 4 * cm.gpt_block_activation_values(b, s, h, a, tp=1) == cm.gpt_block_activations(s, b, h, a)


def test_the_whole_model_saves_its_blocks_and_its_head():
    config = corpus_config(block_size=8, n_layer=3, n_head=2, n_embd=12)
    stage = GPTStage(GPT(config), 0, 1)
    idx = torch.randint(0, config.vocab_size, (3, 8))
    with saved_activations(list(stage.parameters())) as held:
        F.cross_entropy(stage(idx), idx)
    assert held["peak"] == 4 * (3 * cm.gpt_block_activation_values(3, 8, 12, 2) +
                                cm.gpt_head_activation_values(3, 8, 12, config.vocab_size))


def test_one_f_one_b_keeps_p_minus_s_micro_batches_the_largest_first():
    config = corpus_config(block_size=8, n_layer=4, n_head=2, n_embd=12)
    mesh = Mesh(dp=1, pp=4)
    sizes = rank_budget.micro_batch_sizes(10, mesh, 4)
    assert sizes == [3, 3, 2, 2]
    per_sample = cm.gpt_block_activation_values(1, 8, 12, 2)
    assert rank_budget.peak_activation_values(config, mesh, 0, 10, 4) == (3 + 3 + 2 + 2) * per_sample
    assert rank_budget.peak_activation_values(config, mesh, 2, 10, 4) == (3 + 3) * per_sample


def test_bytes_by_hand_for_the_2x2x2_mesh():
    config = corpus_config(block_size=16, n_layer=4, n_head=4, n_embd=32)
    sent = rank_budget.predicted_bytes_sent(config, Mesh(2, 2, 2), 0, global_batch=8)
    activation = 4 * 4 * 16 * 32                           # 4 sequences a dp rank, 16 × 32 floats each
    assert sent["pp"] == activation                          # stage 0 only sends forward
    assert sent["tp"] == 2 * 4 * activation * (2 * 1 / 2)    # 2 blocks × 4 all-reduces × 2(t − 1)/t
    assert sent["embedding"] == 4 * config.vocab_size * 32
    assert sent["dp"] == 4 * sum(cm.gpt_rank_tensors(config.vocab_size, 16, 4, 32, tp=2, pp=2).values())
