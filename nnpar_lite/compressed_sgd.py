"""One step of data-parallel SGD whose gradient average is compressed, simulated in one process:
the K workers' gradients, averaged by one compressor each (:func:`nnpar_lite.compression.simulate_allreduce_`),
or exactly, then θ ← θ − η g (seed 3.1's update, on a compressed average).

Chapter 09 trains the digits with it. (It belongs beside the compressors in
:mod:`nnpar_lite.compression`, where it is to move.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .compression import simulate_allreduce_


def compressed_sgd_step(model: torch.nn.Module, shards, compressors, lr: float) -> None:
    """One step: each worker's gradient on its shard, averaged (by the compressors, one per
    worker, or exactly when there are none), then θ ← θ − η g."""
    params = list(model.parameters())
    grads = [list(torch.autograd.grad(F.cross_entropy(model(xs), ys), params)) for xs, ys in shards]
    if compressors is None:
        average = [sum(g[i] for g in grads) / len(grads) for i in range(len(params))]
    else:
        simulate_allreduce_(compressors, grads)
        average = grads[0]                                  # every worker holds the same average
    with torch.no_grad():
        for p, g in zip(params, average):
            p.add_(g, alpha=-lr)
