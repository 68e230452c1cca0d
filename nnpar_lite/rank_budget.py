"""What one rank of the dp × tp × pp mesh holds and sends in a training step, predicted from
the cost formulas of :mod:`nnpar_lite.costmodel` before anything runs.

``python -m nnpar_lite.train_gpt ... --report`` prints this prediction beside what each rank
measures (the tensors it holds, the bytes its collectives and sends carry: see
:mod:`nnpar_lite.experiments.capstone`). Memory is in bytes of float32 values:

* parameters and gradients: the tensors of :func:`~nnpar_lite.costmodel.gpt_rank_tensors`;
* optimizer state: AdamW's two moments and step counter per tensor, or with ZeRO-1 per chunk
  of the tensor (:func:`~nnpar_lite.costmodel.zero_chunk_elements`); plain SGD keeps none;
* activations: what the stage's blocks (and the head, on the last stage) save for backward,
  for the micro-batches 1F1B keeps in flight at its peak, min(p − s, m) on stage s.

Bytes sent per step, by dimension: tp, four all-reduces of a micro-batch's activations per
block (f and g, forward and backward); pp, one activation forward and one gradient backward
per micro-batch and neighbour; dp, the gradients' all-reduce (ZeRO-1: a reduce-scatter of
the padded gradients and an all-gather of the updated chunks, after one small all-reduce of a
mask saying which tensors have a gradient on some rank); embedding, the tied
embedding's gradient summed over the first and last stage.
"""

from __future__ import annotations

from . import costmodel
from .data import even_shard_sizes
from .mesh import Mesh

FLOAT = 4   # bytes of a float32 value


def micro_batch_sizes(global_batch: int, mesh: Mesh, micro_batches: int) -> list[int]:
    """The sizes of one dp rank's micro-batches: its B / dp sequences in m nearly equal parts."""
    return even_shard_sizes(global_batch // mesh.dp, micro_batches)


def predicted_memory(config, mesh: Mesh, rank: int, *, global_batch: int, micro_batches: int,
                     optimizer: str = "sgd", zero: int = 0) -> dict[str, int]:
    """Bytes of parameters, gradients, optimizer state and saved activations this rank holds."""
    c = mesh.coordinates(rank)
    numels = list(costmodel.gpt_rank_tensors(config.vocab_size, config.block_size, config.n_layer, config.n_embd,
                                             tp=mesh.tp, pp=mesh.pp, stage=c["pp"],
                                             tied=config.tie_weights).values())
    chunks = [costmodel.zero_chunk_elements(n, c["dp"], mesh.dp) for n in numels] if zero else numels
    return {"parameters": FLOAT * sum(numels), "gradients": FLOAT * sum(numels),
            "optimizer state": costmodel.adam_state_bytes(chunks, FLOAT) if optimizer == "adamw" else 0,
            "activations": FLOAT * peak_activation_values(config, mesh, c["pp"], global_batch, micro_batches)}


def peak_activation_values(config, mesh: Mesh, stage: int, global_batch: int, micro_batches: int) -> int:
    """Values saved for backward at stage s's peak under 1F1B: micro-batches 0 … k − 1 in
    flight, k = min(p − s, m) (the first ones are the largest when the sizes differ)."""
    in_flight = costmodel.peak_activations(mesh.pp, micro_batches, stage, "1f1b")
    layers = config.n_layer // mesh.pp
    total = 0
    for b in micro_batch_sizes(global_batch, mesh, micro_batches)[:in_flight]:
        total += layers * costmodel.gpt_block_activation_values(b, config.block_size, config.n_embd,
                                                                config.n_head, mesh.tp)
        if stage == mesh.pp - 1:
            total += costmodel.gpt_head_activation_values(b, config.block_size, config.n_embd, config.vocab_size)
    return total


def predicted_bytes_sent(config, mesh: Mesh, rank: int, *, global_batch: int, zero: int = 0) -> dict[str, float]:
    """Bytes this rank sends in one training step, by dimension (dp, pp, tp, embedding)."""
    c = mesh.coordinates(rank)
    stage, first, last = c["pp"], c["pp"] == 0, c["pp"] == mesh.pp - 1
    numels = costmodel.gpt_rank_tensors(config.vocab_size, config.block_size, config.n_layer, config.n_embd,
                                        tp=mesh.tp, pp=mesh.pp, stage=stage, tied=config.tie_weights).values()
    activation = FLOAT * global_batch // mesh.dp * config.block_size * config.n_embd   # all micro-batches
    if zero:     # reduce-scatter of N chunks of S per tensor, then all-gather of them: 2 (N − 1) S each,
        # and the ranks' agreement on which tensors have a gradient: an all-reduce of one number each
        dp = 2 * (mesh.dp - 1) * FLOAT * sum(-(-n // mesh.dp) for n in numels) + \
            costmodel.ring_allreduce_bytes(FLOAT * len(numels), mesh.dp)
    else:
        dp = costmodel.ring_allreduce_bytes(FLOAT * sum(numels), mesh.dp)
    tied_here = config.tie_weights and mesh.pp > 1 and (first or last)
    return {"dp": dp, "pp": activation * ((not last) + (not first)),
            "tp": 4 * config.n_layer // mesh.pp * costmodel.ring_allreduce_bytes(activation, mesh.tp),
            "embedding": costmodel.ring_allreduce_bytes(FLOAT * config.vocab_size * config.n_embd, 2) if tied_here
            else 0.0}


def predicted_message_steps(config, mesh: Mesh, rank: int, *, micro_batches: int, zero: int = 0) -> dict[str, int]:
    """Message steps this rank waits for in one step, by dimension (the α term): a ring
    all-reduce over q ranks takes 2 (q − 1), a reduce-scatter and an all-gather q − 1 each
    (ZeRO-1's pair: the same 2 (q − 1), after the mask's all-reduce, 2 (q − 1) more), a send one."""
    c = mesh.coordinates(rank)
    first, last = c["pp"] == 0, c["pp"] == mesh.pp - 1
    tied_here = config.tie_weights and mesh.pp > 1 and (first or last)
    return {"dp": 2 * (mesh.dp - 1) * (2 if zero else 1), "pp": micro_batches * ((not last) + (not first)),
            "tp": 4 * config.n_layer // mesh.pp * micro_batches * 2 * (mesh.tp - 1), "embedding": 2 * tied_here}


def predicted_step_time(config, mesh: Mesh, *, global_batch: int, micro_batches: int, zero: int = 0,
                        compute_one: float, alpha: float, beta: float, cores: int | None = None) -> float:
    """Seconds of one step: :func:`~nnpar_lite.costmodel.mesh_step_time` for the stage that
    waits longest (ranks of one stage hold and send the same)."""
    times = []
    for stage in range(mesh.pp):
        rank = mesh.rank(dp=0, pp=stage, tp=0)
        steps = sum(predicted_message_steps(config, mesh, rank, micro_batches=micro_batches, zero=zero).values())
        sent = sum(predicted_bytes_sent(config, mesh, rank, global_batch=global_batch, zero=zero).values())
        times.append(costmodel.mesh_step_time(compute_one, world_size=mesh.world_size, num_stages=mesh.pp,
                                              num_microbatches=micro_batches, message_steps=steps,
                                              bytes_sent=sent, alpha=alpha, beta=beta, cores=cores))
    return max(times)
