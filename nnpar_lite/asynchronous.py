"""Asynchronous SGD (chapter 09): workers that never wait for each other, so gradients arrive stale.

Synchronous data parallelism (seed 3.1, chapter 03) waits at every step for the slowest
worker. A parameter server (Dean et al., NeurIPS 2012, the article's reference [44]; Li et
al., OSDI 2014) does not: each worker reads θ, computes a gradient on its own batch and
pushes it, and the server applies it at once. Meanwhile other workers' gradients have been
applied, so update t uses a gradient computed on parameters τ_t updates old:

    θ_{t+1} = θ_t − η ∇L(θ_{t−τ_t}; B_t)

τ_t is the *staleness* of update t. τ = 0 is synchronous SGD; K equally fast workers served
in turn give τ ≈ K − 1. On the quadratic L = λ θ² / 2 this recurrence is stable only for
η λ < 2 sin(π / (2 (2τ + 1))) (≈ π / (2τ + 1) for large τ), so the learning rate must
shrink roughly as 1/τ (:func:`largest_stable_lr_under_staleness`).

:func:`stale_sgd` runs the recurrence deterministically in one process, with a fixed τ or the
staleness a real run recorded; :func:`serve` and :func:`work` are the parameter server and its
workers over a real process group, with blocking ``send``/``recv`` and no barrier.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections import deque
from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .collectives import copy_back, flatten, global_rank
from .formulas import sgd_step
from .util import positive_number, whole_number


def largest_stable_lr_under_staleness(curvature: float, staleness: int) -> float:
    """The largest η for which θ_{t+1} = θ_t − η λ θ_{t−τ} (stale gradient descent on
    L = λ θ² / 2) converges:  η λ < 2 sin(π / (2 (2τ + 1))).

    τ = 0 gives the familiar 2 / λ; τ = 1 halves it; for large τ it falls as π / ((2τ + 1) λ).
    (:func:`nnpar_lite.models.largest_stable_lr` is another bound: fresh gradients, a network's
    largest curvature.)"""
    lam = positive_number("curvature", curvature)
    tau = whole_number("staleness", staleness, minimum=0)
    return 2 * math.sin(math.pi / (2 * (2 * tau + 1))) / lam


def delayed_quadratic(lr: float, staleness: int, *, curvature: float = 1.0, steps: int = 60) -> list[float]:
    """Stale gradient descent on the smallest example there is, L = λ θ² / 2 from θ_0 = 1:
    θ_{t+1} = θ_t − η λ θ_{t−τ}. Chapter 09 runs it on both sides of
    :func:`largest_stable_lr_under_staleness`'s bound."""
    theta = [1.0]
    for t in range(steps):
        theta.append(theta[-1] - lr * curvature * theta[max(0, t - staleness)])
    return theta


def _staleness_per_step(staleness: int | Sequence[int], steps: int) -> list[int]:
    """τ_t for t = 0 … steps − 1: a fixed τ (capped at t: nothing is older than θ_0), or one per
    step, each an integer with 0 ≤ τ_t ≤ t."""
    if isinstance(staleness, numbers.Integral) and not isinstance(staleness, bool):
        return [min(whole_number("staleness", staleness, minimum=0), t) for t in range(steps)]
    if not isinstance(staleness, Sequence):
        raise ValueError(f"staleness must be an integer ≥ 0 or one integer per batch, got {staleness!r}")
    taus = list(staleness)
    if len(taus) != steps:
        raise ValueError(f"{len(taus)} staleness values for {steps} batches: give one per batch")
    return [whole_number(f"staleness of update {t}", tau, minimum=0, maximum=t) for t, tau in enumerate(taus)]


def stale_sgd(model: torch.nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], lr: float,
              staleness: int | Sequence[int], *, loss_fn: Callable = F.cross_entropy) -> list[float]:
    """θ_{t+1} = θ_t − η ∇L(θ_{t−τ_t}; B_t) for each batch B_t in turn, ``model`` updated in place.

    A copy of the model plays the worker: it loads θ_{t−τ_t} (kept in a window of the last
    max τ + 1 parameter sets), computes the gradient of its batch, and the update is applied to
    the current θ with the article's ``sgd_step``. With τ = 0 every gradient is fresh: plain
    (synchronous) SGD, step for step. Frozen parameters (``requires_grad=False``) stay as they
    are; a trainable one that a batch leaves without a gradient is refused, by name, and the
    model is left unchanged. Returns each batch's loss as its worker saw it."""
    taus = _staleness_per_step(staleness, len(batches))
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    theta = [p.detach().clone() for p in params]                  # θ_t; written back to the model at the end
    worker = copy.deepcopy(model)
    trained = [p for p in worker.parameters() if p.requires_grad]
    history: deque[list[torch.Tensor]] = deque(maxlen=max(taus, default=0) + 1)   # θ_t, θ_{t−1}, …
    losses = []
    for t, ((x, y), tau) in enumerate(zip(batches, taus)):
        history.appendleft([p.clone() for p in theta])
        with torch.no_grad():
            for w, old in zip(trained, history[tau]):
                w.copy_(old)                                        # the worker reads θ_{t−τ}
        worker.zero_grad(set_to_none=True)
        loss = loss_fn(worker(x), y)
        loss.backward()
        _check_gradients(names, trained, t)
        sgd_step(theta, [w.grad for w in trained], lr, out=theta)
        losses.append(float(loss.detach()))
    with torch.no_grad():
        for p, value in zip(params, theta):
            p.copy_(value)
    return losses


def _check_gradients(names: Sequence[str], params: Sequence[torch.Tensor], step: int) -> None:
    """Every trainable parameter must have a gradient: name the first that has none."""
    for name, p in zip(names, params):
        if p.grad is None:
            raise ValueError(f"parameter {name!r} got no gradient from batch {step}: stale_sgd updates every "
                             "trainable parameter; freeze it (requires_grad=False) or use it in the forward")


# ===================================================== over a process group
def serve(model: torch.nn.Module, lr: float, updates: int, *, group=None) -> list[dict]:
    """The parameter server, on the group's first rank: θ lives in ``model``.

    It sends θ_0 to every worker, then ``updates`` times: receive a gradient from whichever
    worker sends first (``recv`` from any source), apply θ ← θ − η g at once, and send the new
    θ to that worker only. Nobody waits for anybody else. Each update is recorded: the worker,
    its batch, the version of θ its gradient was computed on, and its staleness τ = (updates
    applied before it) − (that version). A gradient arriving after the last update is dropped
    and its worker told to stop (version −1). Message: [version, batch, gradient …]."""
    params, me = list(model.parameters()), dist.get_rank()
    everyone = [global_rank(k, group) for k in range(dist.get_world_size(group))]      # global ranks
    workers = [r for r in everyone if r != me]
    for w in workers:
        dist.send(torch.cat([flatten(params).new_tensor([0.0]), flatten(params)]), dst=w, group=group)
    inbox, records, stopped = flatten(params).new_empty(2 + sum(p.numel() for p in params)), [], 0
    while stopped < len(workers):
        sender = dist.recv(inbox, group=group)                     # whoever is first
        version = len(records)
        if version < updates:
            grads = [torch.empty_like(p) for p in params]
            copy_back(grads, inbox[2:])
            sgd_step(params, grads, lr, out=params)                 # applied at once, no barrier
            computed_on = int(inbox[0])
            records.append({"worker": sender, "batch": int(inbox[1]), "computed on": computed_on,
                            "staleness": version - computed_on, "time": time.perf_counter()})
            reply = torch.cat([inbox.new_tensor([version + 1.0]), flatten(params)])
        else:
            stopped += 1
            reply = torch.cat([inbox.new_tensor([-1.0]), flatten(params)])
        dist.send(reply, dst=sender, group=group)
    return records


def work(model: torch.nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *, server: int = 0,
         loss_fn: Callable = F.cross_entropy, delay: float = 0.0, before_gradient: Callable[[int], None] | None = None,
         group=None) -> int:
    """A worker: receive θ, compute the gradient of its next batch (cycling through
    ``batches``) on that θ, send it with θ's version and the batch's index, receive the θ the
    server sends back; until told to stop. ``delay`` seconds of waiting per gradient make it a
    slower machine; ``before_gradient(n)``, if given, runs before the n-th gradient (n = 0, 1,
    …), with θ already received: a test holds a worker back there. ``server`` is the server's
    rank in the group. Returns how many gradients it sent."""
    params, server = list(model.parameters()), global_rank(server, group)
    inbox = flatten(params).new_empty(1 + sum(p.numel() for p in params))
    dist.recv(inbox, src=server, group=group)
    sent = 0
    while inbox[0] >= 0:
        if before_gradient is not None:
            before_gradient(sent)
        copy_back(params, inbox[1:])
        model.zero_grad(set_to_none=True)
        x, y = batches[sent % len(batches)]
        loss_fn(model(x), y).backward()
        time.sleep(delay)
        header = inbox.new_tensor([float(inbox[0]), float(sent % len(batches))])
        dist.send(torch.cat([header, flatten([p.grad for p in params])]), dst=server, group=group)
        dist.recv(inbox, src=server, group=group)
        sent += 1
    return sent
