"""A tiny decoder-only transformer (a GPT), written to be split.

    x = wte(idx) + wpe(positions)                      token and position embeddings
    x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))       each of n_layer pre-LayerNorm blocks
    logits = lm_head(ln_f(x))                          the language-model head (tied to wte)

Every weight matrix is reachable by name, as in GPT-2 and nanoGPT: ``wte``, ``wpe``,
``blocks[i].ln_1``, ``blocks[i].attn.c_attn`` (q, k and v of every head in one matrix),
``blocks[i].attn.c_proj``, ``blocks[i].ln_2``, ``blocks[i].mlp.c_fc``, ``blocks[i].mlp.c_proj``,
``ln_f``, ``lm_head``. So the parallel chapters cut or wrap them without a second model:
tensor parallelism replaces ``c_attn``/``c_fc`` by their column blocks and ``c_proj`` by its
row blocks; context parallelism swaps the attention's ``core`` (ring attention, Ulysses) and
passes each rank's ``positions``; pipeline parallelism runs :meth:`GPT.embed`, a run of
blocks and :meth:`GPT.head` on different ranks; expert parallelism replaces ``mlp``.

No dropout: a run is deterministic, so a split model can be compared with the unsplit one
number for number. Every rank that builds ``GPT(config, seed=s)`` gets the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .util import whole_number


@dataclass(frozen=True)
class GPTConfig:
    """The sizes. The defaults train in seconds on a CPU: 4 layers of 4 heads, width 64."""
    vocab_size: int = 256
    block_size: int = 64        # the longest sequence, the positions wpe knows
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64            # divisible by n_head; the MLP is 4 · n_embd wide
    tie_weights: bool = True    # lm_head.weight is wte.weight, as in GPT-2

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            whole_number(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd = {self.n_embd} does not divide into n_head = {self.n_head} heads")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def corpus_config(**sizes) -> GPTConfig:
    """A GPTConfig whose vocabulary is the shipped corpus's characters (:func:`nnpar_lite.data.char_vocabulary`)."""
    from .data import char_vocabulary
    return GPTConfig(vocab_size=len(char_vocabulary()), **sizes)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q Kᵀ / √d + M) V, M = −∞ above the diagonal (a position sees itself and the past);
    q, k, v of shape (batch, heads, seq, head_dim). torch's fused kernel computes it."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def attention_by_the_formula(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True):
    """The same, written out: the reference the fused kernel and every split attention are checked against."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        t_q, t_k = q.shape[-2], k.shape[-2]
        future = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).triu(1 + t_k - t_q)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(-1) @ v


def split_heads(qkv: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch, seq, 3·n_head·d) → q, k, v, each (batch, n_head, seq, d)."""
    b, t, width = qkv.shape
    return tuple(part.view(b, t, n_head, width // 3 // n_head).transpose(1, 2) for part in qkv.chunk(3, dim=-1))


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(batch, heads, seq, d) → (batch, seq, heads·d)."""
    b, h, t, d = y.shape
    return y.transpose(1, 2).reshape(b, t, h * d)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: q, k, v = x W_attnᵀ + b, per head ``core(q, k, v)``,
    heads joined, then c_proj. ``n_head`` counts the heads this module holds."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.core = causal_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = split_heads(self.c_attn(x), self.n_head)
        return self.c_proj(merge_heads(self.core(q, k, v)))


class MLP(nn.Module):
    """c_proj(GELU(c_fc(x))), 4 · n_embd wide in the middle."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)): a pre-LayerNorm transformer block."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head)
        self.mlp = MLP(config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The tiny GPT: ``GPT(config, seed=0)(idx)`` gives the logits (batch, seq, vocab)."""

    def __init__(self, config: GPTConfig = GPTConfig(), *, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        initialise(self, seed)
        self.to(dtype)

    def embed(self, idx: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """wte(idx) + wpe(positions); positions 0 … T−1 unless given (a rank holding a chunk
        of the sequence passes the chunk's positions)."""
        if positions is None:
            positions = torch.arange(idx.shape[-1], device=idx.device)
        if int(positions.max()) >= self.config.block_size:
            raise ValueError(f"position {int(positions.max())} is beyond block_size = {self.config.block_size}")
        return self.wte(idx) + self.wpe(positions)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The logits: lm_head(ln_f(x))."""
        return self.lm_head(self.ln_f(x))

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(idx, positions)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@torch.no_grad()
def initialise(model: nn.Module, seed: int) -> None:
    """GPT-2's initialisation from one seeded generator, the same on every rank: weights
    N(0, 0.02²), the residual projections (c_proj) N(0, (0.02/√(2·n_layer))²), biases 0,
    LayerNorm 1 and 0. A tied weight is drawn once."""
    generator = torch.Generator().manual_seed(seed)
    n_layer = max(1, len(getattr(model, "blocks", [])))
    for name, p in model.named_parameters():
        if isinstance(model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model, nn.LayerNorm):
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            p.zero_()
        else:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
            p.normal_(0.0, std, generator=generator)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the next character, averaged (or summed) over every position of the batch."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)
