"""The tiny GPT cut into pipeline stages, each stage possibly split by tensor parallelism.

Stage s of p holds n_layer / p consecutive blocks; the first stage also holds the embeddings
(``wte``, ``wpe``), the last the final LayerNorm and the language-model head. Between stages
travels the residual stream of a micro-batch, (batch, seq, n_embd), flattened to one row per
sample, (batch, seq · n_embd), the shape chapter 05's :func:`nnpar_lite.pipeline.pipeline_step`
sends and receives. The last stage returns the logits as (batch, vocab, seq), the class
dimension second as ``cross_entropy`` wants it, so that step's loss is the mean over every
position of the micro-batch: :func:`nnpar_lite.gpt.lm_loss`.

**The tied embedding across stages.** GPT-2 uses one matrix for ``wte`` and ``lm_head``. With
p > 1 they live on different ranks, so, as Megatron-LM does (Shoeybi et al. 2019;
``embedding_group`` in its ``parallel_state``), the last stage holds a copy initialised
equal, and after backward the two gradients are summed over the first and last stage
(:func:`sum_tied_embedding_gradient`): each then holds dL/dW of the tied matrix, both copies
take the same update and stay equal. Forget the sum and each copy learns only from its own
use: the run drifts from one process's.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from .gpt import GPT
from .tensor_parallel import ColumnParallelLinear, RowParallelLinear, shard_gpt_block
from .util import whole_number


def stage_layers(n_layer: int, num_stages: int, stage: int) -> range:
    """The blocks stage s holds: [s · L/p, (s + 1) · L/p). L must divide by p."""
    whole_number("num_stages", num_stages)
    if n_layer % num_stages:
        raise ValueError(f"n_layer = {n_layer} layers do not divide into pp = {num_stages} pipeline stages")
    if not 0 <= stage < num_stages:
        raise ValueError(f"stage must be in 0 … {num_stages - 1}, got {stage!r}")
    per_stage = n_layer // num_stages
    return range(stage * per_stage, (stage + 1) * per_stage)


class GPTStage(nn.Module):
    """Stage ``stage`` of ``num_stages`` of ``model`` (sharing its modules; the last stage's
    tied head is a copy when p > 1). ``forward``: token ids (first stage) or a flattened
    activation in, a flattened activation or (batch, vocab, seq) logits out."""

    def __init__(self, model: GPT, stage: int, num_stages: int):
        super().__init__()
        self.config, self.stage, self.num_stages = model.config, stage, num_stages
        self.first, self.last = stage == 0, stage == num_stages - 1
        self.blocks = nn.ModuleList(model.blocks[i] for i in stage_layers(model.config.n_layer, num_stages, stage))
        if self.first:
            self.wte, self.wpe = model.wte, model.wpe
        if self.last:
            self.ln_f, self.lm_head = model.ln_f, model.lm_head
            if model.config.tie_weights and not self.first:      # the tied matrix lives on stage 0
                self.lm_head = nn.Linear(model.config.n_embd, model.config.vocab_size, bias=False)
                self.lm_head.weight = nn.Parameter(model.wte.weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape[0], self.config.block_size, self.config.n_embd
        x = GPT.embed(self, x) if self.first else x.view(batch, seq, width)
        for block in self.blocks:
            x = block(x)
        return GPT.head(self, x).transpose(1, 2) if self.last else x.reshape(batch, seq * width)

    @property
    def tied_copy(self) -> bool:
        """Does this stage hold a copy of the tied embedding (the last stage, p > 1)?"""
        return self.config.tie_weights and self.num_stages > 1 and self.last


def build_stage(model: GPT, stage: int, num_stages: int, *, tp_group=None) -> GPTStage:
    """This rank's part of ``model``: its pipeline stage, every block then made this rank's
    Megatron shard over ``tp_group`` (None: no tensor parallelism)."""
    part = GPTStage(model, stage, num_stages)
    if tp_group is not None and dist.get_world_size(tp_group) > 1:
        for block in part.blocks:
            shard_gpt_block(block, group=tp_group)
    return part


def sum_tied_embedding_gradient(stage: GPTStage, *, group=None) -> None:
    """Σ of the tied embedding's gradient over ``group``, the first and the last stage
    (Megatron's embedding group): dL/dW = dL/dW|wte + dL/dW|lm_head. Nothing to do with one
    stage (one tensor, autograd summed both uses) or untied weights."""
    if not stage.config.tie_weights or stage.num_stages == 1 or not (stage.first or stage.last):
        return
    weight = stage.wte.weight if stage.first else stage.lm_head.weight
    dist.all_reduce(weight.grad, group=group)


def tensor_parallel_shards(stage: nn.Module) -> set[int]:
    """ids of the parameters that are this rank's tensor-parallel shard (column-parallel weights
    and biases, row-parallel weights); every other parameter is the same on all tp ranks."""
    shards = set()
    for module in stage.modules():
        if isinstance(module, ColumnParallelLinear):
            shards.update(id(p) for p in module.parameters())
        elif isinstance(module, RowParallelLinear):
            shards.add(id(module.weight))
    return shards


@torch.no_grad()
def owned_squared_norm(stage: GPTStage, *, tp_rank: int) -> float:
    """Σ θ² over the parameters this rank counts, so that the ranks of one replica together
    count each parameter of the model once: its tensor-parallel shards, the parameters tp
    ranks replicate only on tp rank 0, and never the last stage's copy of the tied embedding."""
    shards = tensor_parallel_shards(stage)
    total = 0.0
    for p in stage.parameters():
        if (stage.tied_copy and p is stage.lm_head.weight) or (id(p) not in shards and tp_rank != 0):
            continue
        total += float(p.double().pow(2).sum())
    return total
