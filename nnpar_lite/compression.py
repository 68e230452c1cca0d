"""Gradient compression with error feedback (chapter 09): fewer bytes in seed 3.1's step 5.

Each compressor averages a list of gradient tensors over the workers, in place, sending much
less than the tensors themselves:

* :class:`PowerSGD` (Vogels et al., NeurIPS 2019) replaces each matrix M (n × m) by a rank-r
  product found by one step of power iteration, warm-started from the last step's Q:

      P = Σ_i M_i Q  (all-reduce),  P̂ = orth(P),  Q = 1/K Σ_i M_iᵀ P̂  (all-reduce),  M̄ ≈ P̂ Qᵀ

  It sends (n + m) r numbers instead of n m, and its messages still add up, so the all-reduce
  of chapter 03 carries them.
* :class:`TopK` keeps each worker's k = ⌈fraction · n⌉ largest entries of each matrix; the
  workers keep different positions, so values and positions are all-gathered, not added.

**Error feedback** (Seide et al. 2014; Karimireddy et al. 2019): what a worker did not send,
e ← Δ − C(Δ) with Δ = g + e, is added to its next gradient. Nothing is lost, only delayed:
summed over T steps the outputs equal the true averages plus ē_0 − ē_T (ē: the workers' mean
residual), and with e_0 = 0 (the residuals start at zero) only the last one remains. So *if
the residual stays bounded* (top-k, which sends a fixed share of each worker's Δ, keeps it so;
the tests check PowerSGD's mean residual too), the running mean of the outputs approaches the
true one as 1/T; a residual that grew without bound would never be repaid.

As torch's PowerSGD hook does, tensors of two or more dimensions are reshaped to
(shape[0], −1) and compressed (PowerSGD only where that saves enough, its
``min_compression_rate``); 1-D tensors (biases) are sent as they are. ``bytes_sent`` counts
what this worker hands to collectives.

Each compressor is written once, as what one worker does: ``rounds`` is a generator whose
every ``yield`` hands a local tensor to a collective and receives its result ("sum": the sum
over workers; "gather": every worker's tensor). :meth:`allreduce_` runs it over a real process
group; :func:`simulate_allreduce_` runs K workers in one process, in lock step.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Generator, Sequence

import torch
import torch.nn.functional as F
import torch.distributed as dist

from .collectives import flatten, unflatten
from .util import real_number, whole_number

Message = tuple[str, torch.Tensor]


class Compressor:
    """What both compressors share: the residuals of error feedback, the byte count, the checks."""

    def __init__(self, *, error_feedback: bool = True):
        if not isinstance(error_feedback, bool):
            raise TypeError(f"error_feedback must be True or False, got {error_feedback!r}")
        self.error_feedback = error_feedback
        self.residuals: list[torch.Tensor] | None = None   # e: what this worker has not sent yet
        self.bytes_sent = 0                                # handed to collectives, all steps together
        self.steps = 0

    def allreduce_(self, tensors: Sequence[torch.Tensor], *, group=None) -> None:
        """Average ``tensors`` over the group's ranks in place, compressed:
        t ← 1/K Σ_r C_r(t_r + e_r). Every rank passes tensors of the same shapes, in order."""
        tensors = self._check(tensors)                     # refuse bad input before anything is sent
        _drive(self._start(tensors, dist.get_world_size(group)), lambda kind, tensor: _collective(kind, tensor, group))

    def _start(self, tensors: Sequence[torch.Tensor], world: int) -> Generator[Message, object, None]:
        """Check the tensors (before anything is sent), add the residuals, return the rounds."""
        tensors = self._check(tensors)
        if self.residuals is None:
            self.residuals = [torch.zeros_like(t) for t in tensors]
        deltas = [t + e for t, e in zip(tensors, self.residuals)] if self.error_feedback \
            else [t.clone() for t in tensors]                                     # Δ = g + e
        self.steps += 1
        return self.rounds(tensors, deltas, world)

    def rounds(self, tensors, deltas, world) -> Generator[Message, object, None]:
        """One worker's side of a step: yield (kind, local tensor) for each collective, receive its
        result, write the average into ``tensors`` and the residuals; each compressor writes its own."""
        raise NotImplementedError

    def _message(self, kind: str, tensor: torch.Tensor) -> Message:
        self.bytes_sent += tensor.numel() * tensor.element_size()
        return kind, tensor

    def _split(self, deltas: Sequence[torch.Tensor]) -> tuple[list[int], list[int]]:
        """The indices of the tensors to compress, and of those sent exactly (1-D ones among them)."""
        compress = [i for i, d in enumerate(deltas) if d.dim() >= 2 and self._worth_compressing(d)]
        return compress, [i for i in range(len(deltas)) if i not in compress]

    def _worth_compressing(self, tensor: torch.Tensor) -> bool:
        return True

    def _check(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence) or not tensors:
            raise TypeError("tensors must be a non-empty list of tensors (a model's gradients)")
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise TypeError(f"tensor {i} is {getattr(t, 'dtype', type(t).__name__)}; expected a floating tensor")
        shapes = [tuple(t.shape) for t in tensors]
        if self.residuals is not None and shapes != [tuple(e.shape) for e in self.residuals]:
            first = next((i for i, (s, e) in enumerate(zip(shapes, self.residuals)) if s != tuple(e.shape)), None)
            raise ValueError(f"this compressor was first used with {len(self.residuals)} tensors of other shapes: "
                             f"tensor {first} is {shapes[first] if first is not None else '…'} now "
                             f"(shapes {shapes}); use one compressor per list of gradients")
        return list(tensors)


class PowerSGD(Compressor):
    """Rank-``rank`` PowerSGD (Vogels et al. 2019), warm-started, with error feedback by default.

        P = Σ_i Δ_i Q,  P̂ = orth(P),  Q ← 1/K Σ_i Δ_iᵀ P̂,  output P̂ Qᵀ = P̂ P̂ᵀ Δ̄,  e_i ← Δ_i − P̂ P̂ᵀ Δ_i

    The output is the average Δ̄ projected on the r columns of P̂; at full rank, r = min(n, m),
    that is Δ̄ itself. Q starts random (the same ``seed`` on every worker, so all hold the same
    Q) and is kept for the next step (warm start). A worker's residual is what the projection
    left of its own Δ_i; their mean is what the outputs still owe. Two all-reduces per step:
    the 1-D tensors (and the matrices not worth compressing) together with the P's, then the Q's."""

    def __init__(self, rank: int, *, error_feedback: bool = True, seed: int = 0, min_compression_rate: float = 2.0):
        super().__init__(error_feedback=error_feedback)
        self.rank = whole_number("rank", rank)
        self.seed = whole_number("seed", seed, minimum=0)
        self.min_compression_rate = real_number("min_compression_rate", min_compression_rate, minimum=0)
        self.qs: dict[int, torch.Tensor] = {}             # tensor index → its warm-started Q (m × r)

    def _worth_compressing(self, tensor: torch.Tensor) -> bool:
        """(n + m) r · min_compression_rate < n m for the (shape[0], −1) matrix, as torch's hook decides."""
        n, m = tensor.shape[0], tensor[0].numel()
        return (n + m) * min(n, m, self.rank) * self.min_compression_rate < n * m

    def _q(self, index: int, delta: torch.Tensor) -> torch.Tensor:
        """Tensor ``index``'s Q, orthonormalised: random the first time, then last step's."""
        if index not in self.qs:
            n, m = delta.shape[0], delta[0].numel()
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            self.qs[index] = torch.randn(m, min(n, m, self.rank), generator=gen, dtype=delta.dtype).to(delta.device)
        return _orthonormal(self.qs[index])

    def rounds(self, tensors, deltas, world):
        compress, exact = self._split(deltas)
        matrices = {i: deltas[i].reshape(deltas[i].shape[0], -1) for i in compress}
        ps = [matrices[i] @ self._q(i, deltas[i]) for i in compress]                 # P_i = Δ_i Q
        total = yield self._message("sum", flatten([deltas[i] for i in exact] + ps))
        sums = unflatten(total, [deltas[i] for i in exact] + ps)
        p_hats = [_orthonormal(p) for p in sums[len(exact):]]                         # P̂ = orth(Σ_i P_i)
        local_qs = [matrices[i].T @ p for i, p in zip(compress, p_hats)]             # Q_i = Δ_iᵀ P̂
        q_sum = unflatten((yield self._message("sum", flatten(local_qs))), local_qs) if compress else []
        for i, s in zip(exact, sums):
            tensors[i].copy_(s / world)
            self.residuals[i].zero_()
        for i, p, q_local, q in zip(compress, p_hats, local_qs, q_sum):
            self.qs[i] = q / world                                                    # Q = 1/K Σ_i Q_i, kept
            tensors[i].copy_((p @ self.qs[i].T).view_as(tensors[i]))                  # output P̂ Qᵀ
            if self.error_feedback:
                self.residuals[i].copy_((matrices[i] - p @ q_local.T).view_as(tensors[i]))


class TopK(Compressor):
    """Top-k sparsification: each worker sends the k = ⌈fraction · n⌉ entries of largest
    magnitude of each compressed tensor (value and position), and, by default, keeps the rest
    as its residual (error feedback).

        output = 1/K Σ_i topk(Δ_i),   e_i ← Δ_i − topk(Δ_i)

    The positions differ between workers, so the selections are all-gathered (each worker
    receives K − 1 others': the cost grows with K, unlike an all-reduce's)."""

    def __init__(self, fraction: float, *, error_feedback: bool = True):
        super().__init__(error_feedback=error_feedback)
        self.fraction = real_number("fraction", fraction, above=0, maximum=1)

    def rounds(self, tensors, deltas, world):
        compress, exact = self._split(deltas)
        if exact:
            sums = unflatten((yield self._message("sum", flatten([deltas[i] for i in exact]))),
                              [deltas[i] for i in exact])
            for i, s in zip(exact, sums):
                tensors[i].copy_(s / world)
                self.residuals[i].zero_()
        if not compress:
            return
        flat = torch.cat([deltas[i].reshape(-1) for i in compress])
        picks = _top_positions(flat, [deltas[i].numel() for i in compress], self.fraction)
        values = yield self._message("gather", flat[picks])
        positions = yield self._message("gather", picks.to(torch.int32))
        average = torch.zeros_like(flat)
        for v, p in zip(values, positions):                  # in rank order, as every worker does
            average.index_add_(0, p.long(), v)
        average /= world
        if self.error_feedback:
            flat[picks] = 0                                    # what was sent leaves the residual
        for i, out, rest in zip(compress, average.split([deltas[i].numel() for i in compress]),
                                flat.split([deltas[i].numel() for i in compress])):
            tensors[i].copy_(out.view_as(tensors[i]))
            if self.error_feedback:
                self.residuals[i].copy_(rest.view_as(tensors[i]))


def _top_positions(flat: torch.Tensor, sizes: Sequence[int], fraction: float) -> torch.Tensor:
    """Positions in ``flat`` of the ⌈fraction · n⌉ largest |entries| of each consecutive part of size n."""
    picks, offset = [], 0
    for n in sizes:
        k = math.ceil(fraction * n)
        picks.append(flat[offset:offset + n].abs().topk(k, sorted=False).indices + offset)
        offset += n
    if offset > torch.iinfo(torch.int32).max:
        raise ValueError(f"{offset} entries are too many for int32 positions")
    return torch.cat(picks)


def _orthonormal(matrix: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning ``matrix``'s: the Q of a reduced QR (robust to zero columns);
    in float16 and bfloat16, which torch's QR does not take, Gram–Schmidt, as torch's PowerSGD
    hook does (:func:`_gram_schmidt`)."""
    if matrix.dtype in (torch.float16, torch.bfloat16):
        return _gram_schmidt(matrix)
    return torch.linalg.qr(matrix).Q


def _gram_schmidt(matrix: torch.Tensor) -> torch.Tensor:
    """Classical Gram–Schmidt, column by column, as torch's ``_orthogonalize_gram_schmidt``:

        q_i ← p_i / ‖p_i‖,   p_j ← p_j − ⟨q_i, p_j⟩ q_i  for every later column j

    A zero column stays zero (torch's hook would divide by zero there)."""
    q = matrix.clone()
    for i in range(q.shape[1]):
        column = q[:, i:i + 1]
        norm = torch.linalg.vector_norm(column, dim=0, keepdim=True)
        column /= torch.where(norm > 0, norm, torch.ones_like(norm))
        rest = q[:, i + 1:]
        rest -= (column * rest).sum(dim=0, keepdim=True) * column
    return q


def _collective(kind: str, tensor: torch.Tensor, group=None):
    """One message over the process group: "sum" all-reduces, "gather" all-gathers."""
    if kind == "sum":
        dist.all_reduce(tensor, group=group)
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return parts


def _drive(rounds: Generator, exchange: Callable) -> None:
    """Run one worker's generator: each yielded (kind, tensor) goes to ``exchange``, whose
    result is sent back in, until the generator ends."""
    try:
        message = next(rounds)
        while True:
            message = rounds.send(exchange(*message))
    except StopIteration:
        pass


def simulate_allreduce_(compressors: Sequence[Compressor], tensors: Sequence[Sequence[torch.Tensor]]) -> None:
    """K workers in one process: worker k's ``compressors[k]`` averages its ``tensors[k]`` in
    place, the K generators advancing in lock step. A "sum" message gets the sum of the K
    workers' tensors (added in rank order), a "gather" the list of them: what the process
    group would deliver."""
    if len(compressors) != len(tensors) or not compressors:
        raise ValueError(f"{len(compressors)} compressors for {len(tensors)} workers' tensors")
    workers = [c._start(t, len(compressors)) for c, t in zip(compressors, tensors)]
    messages = [_advance(w, None) for w in workers]
    while messages[0] is not None:
        kind, payloads = messages[0][0], [m[1] for m in messages]
        result = functools.reduce(torch.add, payloads) if kind == "sum" else payloads
        messages = [_advance(w, result.clone() if kind == "sum" else [p.clone() for p in result]) for w in workers]
        if len({m is None for m in messages}) > 1:
            raise RuntimeError("the workers' compressors fell out of step: give them tensors of the same shapes")


def _advance(worker: Generator, reply) -> Message | None:
    """The worker's next message, given the reply to its last one; None when it has finished."""
    try:
        return next(worker) if reply is None else worker.send(reply)
    except StopIteration:
        return None


def compressed_sgd_step(model: torch.nn.Module, shards, compressors, lr: float) -> None:
    """One step of data-parallel SGD whose average is compressed, simulated in one process (chapter
    09 trains the digits with it): each worker's gradient on its shard, averaged (by the compressors, one per
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
