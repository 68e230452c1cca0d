"""The tiny GPT that chapters 10-12 split: causal, seeded, its attention the formula, its loss
falling on the shipped corpus, its batches the same for the same seed."""

import pytest
import torch

from nnpar_lite.data import char_vocabulary, corpus_batches, decode, encode, gpt_corpus
from nnpar_lite.gpt import GPT, GPTConfig, attention_by_the_formula, causal_attention, corpus_config, lm_loss

SMALL = dict(block_size=16, n_layer=2, n_head=4, n_embd=16)


def test_a_position_sees_only_itself_and_the_past():
    model = GPT(corpus_config(**SMALL), dtype=torch.float64)
    idx = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % model.config.vocab_size
    before, after = model(idx), model(changed)
    assert torch.equal(before[:, :9], after[:, :9])               # the past does not see the future
    assert (before[:, 9:] - after[:, 9:]).abs().amax(dim=(0, 2)).min() > 0   # every later position does


@pytest.mark.parametrize("causal", [True, False])
def test_the_fused_kernel_is_the_formula(causal):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 7, 5, generator=g, dtype=torch.float64) for _ in range(3))
    fused = causal_attention(q, k, v) if causal else torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert (fused - attention_by_the_formula(q, k, v, causal=causal)).abs().max() < 1e-12


def test_the_same_seed_builds_the_same_weights_and_another_seed_others():
    a, b, c = GPT(corpus_config(**SMALL), seed=3), GPT(corpus_config(**SMALL), seed=3), GPT(corpus_config(**SMALL), seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.wte.weight, c.wte.weight)


def test_every_weight_matrix_is_reachable_by_name_and_the_head_is_tied():
    model = GPT(corpus_config(**SMALL))
    names = dict(model.named_parameters())
    for part in ("ln_1.weight", "attn.c_attn.weight", "attn.c_proj.weight", "ln_2.weight", "mlp.c_fc.weight",
                 "mlp.c_proj.weight"):
        assert f"blocks.1.{part}" in names
    assert model.lm_head.weight is model.wte.weight and "lm_head.weight" not in names
    untied = GPT(corpus_config(**SMALL, tie_weights=False))
    assert untied.lm_head.weight is not untied.wte.weight


def test_the_loss_falls_on_the_corpus():
    torch.manual_seed(0)
    model = GPT(corpus_config(**SMALL))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for x, y in corpus_batches(8, 16, 60, seed=0):
        loss = lm_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    start, end = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert start == pytest.approx(torch.log(torch.tensor(float(model.config.vocab_size))).item(), rel=0.05)
    assert end < 0.8 * start, (start, end)


def test_batches_are_deterministic_and_shifted_by_one():
    first, again, other = corpus_batches(4, 8, 3, seed=1), corpus_batches(4, 8, 3, seed=1), corpus_batches(4, 8, 3, seed=2)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])
    x, y = first[0]
    assert x.shape == y.shape == (4, 8) and torch.equal(x[:, 1:], y[:, :-1])


def test_the_corpus_speaks_both_languages_and_round_trips():
    text = gpt_corpus()
    assert "data parallelism" in text.lower() and "数据并行" in text and len(text) > 2000
    assert decode(encode(text)) == text and len(char_vocabulary()) == corpus_config().vocab_size


@pytest.mark.parametrize("sizes, words", [(dict(n_embd=10, n_head=4), "n_embd = 10 does not divide into n_head = 4"),
                                          (dict(n_layer=0), "n_layer must be an integer ≥ 1"),
                                          (dict(n_head=True), "n_head must be an integer")])
def test_bad_sizes_are_named(sizes, words):
    with pytest.raises(ValueError, match=words):
        GPTConfig(**sizes)


def test_a_position_past_the_block_size_and_a_foreign_character_are_named():
    model = GPT(corpus_config(**SMALL))
    with pytest.raises(ValueError, match="position 16 is beyond block_size = 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="not in the corpus"):
        encode("\u2603")
