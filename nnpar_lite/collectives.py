"""The communication primitives, written once; every scheme builds on them.

* ranks: :func:`rank_and_size`, :func:`global_rank` (a group's rank r is some global rank);
* one buffer: :func:`flatten`, :func:`unflatten` and :func:`copy_back`;
* the ring, with send and receive (Patarasuk & Yuan 2009): :func:`ring_reduce_scatter`,
  :func:`ring_all_gather`, and :func:`ring_allreduce`, the two composed;
* torch's own collectives or the ring: :func:`reduce_scatter`, :func:`all_gather`,
  :func:`all_to_all`, :func:`broadcast_from_first_rank`;
* the average over a group, bucketed: :func:`plan_buckets`, :func:`allreduce_mean_`; which
  tensors some rank has: :func:`on_some_rank`;
* what a rank sends: :func:`count_communication`, :func:`counting`.

Collectives along one dimension of a tensor, differentiable ones among them (:func:`gather_along`,
:func:`reduce_scatter_along`, :func:`exchange`, :func:`all_to_all_along`), live in
:mod:`nnpar_lite.autograd_collectives` and are importable from here too.

Every function takes ``group=`` (default: all ranks). A tensor of n elements is cut into N
chunks of S = ⌈n / N⌉, the last padded with zeros: rank r's chunk is [r·S, (r + 1)·S).
(picotron keeps these apart in ``tp_communications.py``; FSDP2 in ``_fsdp_collectives.py``.)
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

from .util import positive_number, real_number

VERBOSE = False  # set True (inside a worker) to print every send and receive of the ring

# torch.distributed's names for the two halves of an all-reduce: newer torch says *_single and
# deprecates the older names, which torch 2.3 still needs. Looked up at each call, so that
# count_communication() sees them.
REDUCE_SCATTER = "reduce_scatter_single" if hasattr(dist, "reduce_scatter_single") else "reduce_scatter_tensor"
ALL_GATHER = "all_gather_single" if hasattr(dist, "all_gather_single") else "all_gather_into_tensor"


# ============================================================ ranks
def rank_and_size(group=None) -> tuple[int, int]:
    """(this process's rank in ``group``, the group's size); a plain error outside a group."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("this needs a process group: run inside nnpar_lite.distributed.launch(...) or "
                           "torchrun, after torch.distributed.init_process_group")
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("this process is not a member of the group it was given")
    return rank, dist.get_world_size(group)


def global_rank(rank_in_group: int, group=None) -> int:
    """The global rank of the group's rank ``rank_in_group`` (send and recv address global ranks)."""
    return rank_in_group if group is None else dist.get_global_rank(group, rank_in_group)


# ============================================================ one buffer
def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensors' elements one after another in a fresh 1-D buffer (one message instead of many)."""
    return torch.cat([t.detach().reshape(-1) for t in tensors]) if tensors else torch.empty(0)


def unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The inverse of :func:`flatten`, without a copy: views of ``flat``'s consecutive slices,
    shaped like the tensors of ``like`` (extra elements at the end are left out)."""
    parts = flat[:sum(t.numel() for t in like)].split([t.numel() for t in like])
    return [part.view_as(t) for part, t in zip(parts, like)]


@torch.no_grad()
def copy_back(tensors: Sequence[torch.Tensor], flat: torch.Tensor, scale: float = 1.0) -> None:
    """Unflatten into ``tensors``: each takes its slice of ``flat`` (in order), times ``scale``."""
    if scale != 1.0:
        flat.mul_(scale)
    for t, part in zip(tensors, unflatten(flat, tensors)):
        t.copy_(part)


def chunk_size(numel: int, world_size: int) -> int:
    """S = ⌈n / N⌉: the elements of each rank's chunk, the last one padded."""
    return -(-numel // world_size)


def padded(flat: torch.Tensor, world_size: int) -> torch.Tensor:
    """A 1-D tensor padded with zeros to N·S elements (itself when n divides by N)."""
    extra = chunk_size(flat.numel(), world_size) * world_size - flat.numel()
    return flat if extra == 0 else torch.cat([flat, flat.new_zeros(extra)])


# ============================================================ the ring
def pass_right(send: torch.Tensor, receive: torch.Tensor, *, group=None, phase: str = "") -> None:
    """Send to the right neighbour and receive from the left one. isend first: a ring of
    blocking sends would wait on each other for ever. On one rank the neighbour on both sides is
    oneself, and the pass is a copy (gloo has no connection from a rank to itself)."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if world == 1:
        _check_same_size(send, receive)
        receive.copy_(send.view_as(receive))
        return
    right, left = (rank + 1) % world, (rank - 1) % world
    if VERBOSE:
        print(f"[rank {rank}] {phase}: send {send.numel()} elements → rank {right}, "
              f"receive {receive.numel()} ← rank {left}", flush=True)
    request = dist.isend(send.contiguous(), global_rank(right, group), group=group) if send.numel() else None
    if receive.numel():
        dist.recv(receive, global_rank(left, group), group=group)
    if request is not None:
        request.wait()


def ring_reduce_scatter(output: torch.Tensor, input: torch.Tensor, *, group=None) -> torch.Tensor:
    """output ← Σ_ranks input[r·S : (r+1)·S] on rank r, by the ring.

    ``input`` holds N chunks of S = output.numel() elements. In step s = 0 … N−2, rank r
    sends its running sum of chunk (r − s − 1) mod N to the right and adds the one arriving
    from the left to chunk (r − s − 2) mod N; after N − 1 steps chunk r holds the sum of all
    ranks. Each rank sends (N − 1)·S elements. ``input`` is left as it was."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    _check_chunks(output, input, world, "reduce-scatter")
    chunks = input.detach().reshape(world, -1).clone()
    incoming = torch.empty_like(chunks[0])
    for step in range(world - 1):
        pass_right(chunks[(rank - step - 1) % world], incoming, group=group, phase="reduce-scatter")
        chunks[(rank - step - 2) % world] += incoming
    output.copy_(chunks[rank].view_as(output))
    return output


def ring_all_gather(output: torch.Tensor, input: torch.Tensor, *, group=None) -> torch.Tensor:
    """output[r·S : (r+1)·S] ← rank r's input, on every rank, by the ring.

    Rank r starts with its own chunk in place; in step s = 0 … N−2 it sends chunk
    (r − s) mod N to the right and receives chunk (r − s − 1) mod N from the left. Each
    rank sends (N − 1)·S elements."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    _check_chunks(input, output, world, "all-gather")
    chunks = output.view(world, -1)
    chunks[rank].copy_(input.reshape(-1))
    for step in range(world - 1):
        pass_right(chunks[(rank - step) % world], chunks[(rank - step - 1) % world], group=group,
                   phase="all-gather")
    return output


def ring_allreduce(tensor: torch.Tensor, *, group=None) -> torch.Tensor:
    """Sum ``tensor`` over the group's ranks, in place, by the ring: a reduce-scatter, after
    which rank r holds the sum of chunk r, then an all-gather of the finished chunks.

    2 (N − 1) steps, each sending one chunk of n/N elements: every rank sends 2 (N − 1)/N · n
    elements in all, whatever N, the bandwidth-optimal all-reduce."""
    if not tensor.is_contiguous():
        raise ValueError("ring_allreduce needs a contiguous tensor")
    world = dist.get_world_size(group)
    if world == 1:
        return tensor
    whole = padded(tensor.view(-1), world)
    mine = ring_reduce_scatter(whole.new_empty(whole.numel() // world), whole, group=group)
    gathered = ring_all_gather(torch.empty_like(whole), mine, group=group)
    tensor.view(-1).copy_(gathered[:tensor.numel()])
    return tensor


def _check_same_size(send: torch.Tensor, receive: torch.Tensor) -> None:
    if send.numel() != receive.numel():
        raise ValueError(f"pass_right on one rank: what it sends ({send.numel()} elements) is what it receives, "
                         f"but receive holds {receive.numel()}")


def _check_chunks(chunk: torch.Tensor, whole: torch.Tensor, world: int, name: str) -> None:
    if whole.numel() != world * chunk.numel() or whole.dtype != chunk.dtype or not whole.is_contiguous():
        raise ValueError(f"{name}: the whole tensor must be contiguous with {world} × {chunk.numel()} elements of "
                         f"{chunk.dtype}, got {whole.numel()} of {whole.dtype}")


# ============================================================ torch's own, or the ring
def reduce_scatter(output: torch.Tensor, input: torch.Tensor, *, group=None, use_ring: bool = False) -> torch.Tensor:
    """Sum of the ranks' ``input``, chunk r to rank r: the ring above, or torch.distributed's
    own (gloo and NCCL both have it)."""
    if use_ring:
        return ring_reduce_scatter(output, input, group=group)
    _check_chunks(output, input, dist.get_world_size(group), "reduce-scatter")
    getattr(dist, REDUCE_SCATTER)(output, input, group=group)
    return output


def all_gather(output: torch.Tensor, input: torch.Tensor, *, group=None, use_ring: bool = False) -> torch.Tensor:
    """Every rank's ``input`` side by side in ``output``, on every rank: the ring above, or
    torch.distributed's own."""
    if use_ring:
        return ring_all_gather(output, input, group=group)
    _check_chunks(input, output, dist.get_world_size(group), "all-gather")
    getattr(dist, ALL_GATHER)(output, input.contiguous(), group=group)
    return output


def all_to_all(input: torch.Tensor, send_counts: Sequence[int], recv_counts: Sequence[int], *,
               group=None) -> torch.Tensor:
    """Rank r sends rows [Σ_{j<k} send_counts[j], …) of ``input`` (dim 0) to rank k and returns
    the rows every rank sent it, rank 0's first: ``recv_counts[k]`` rows from rank k. Counts may
    differ per rank and be 0 (expert parallelism's token exchange)."""
    world = dist.get_world_size(group)
    send_counts, recv_counts = [int(c) for c in send_counts], [int(c) for c in recv_counts]
    if len(send_counts) != world or len(recv_counts) != world or sum(send_counts) != input.shape[0]:
        raise ValueError(f"all_to_all: give {world} send counts adding up to the {input.shape[0]} rows of input "
                         f"and {world} receive counts, got {send_counts} and {recv_counts}")
    output = input.new_empty((sum(recv_counts), *input.shape[1:]))
    dist.all_to_all_single(output, input.contiguous(), recv_counts, send_counts, group=group)
    return output


def broadcast_from_first_rank(tensors: Sequence[torch.Tensor], *, group=None) -> None:
    """Every rank takes the values of the group's first rank, all broadcasts in flight at once
    (ranks that built different models start equal)."""
    source = global_rank(0, group)
    with torch.no_grad():
        for work in [dist.broadcast(t, src=source, group=group, async_op=True) for t in tensors]:
            work.wait()


# ============================================================ the average over a group
def plan_buckets(params: Sequence[torch.Tensor], bucket_mb: float) -> list[list[int]]:
    """Group tensor indices into buckets of at most ``bucket_mb`` MiB, in *reverse* order (the
    order backward produces gradients, so a bucket is ready early), never mixing dtypes or
    devices. A tensor larger than the cap gets a bucket of its own."""
    cap = positive_number("bucket_mb", bucket_mb) * 2 ** 20
    buckets: list[list[int]] = []
    size = 0.0
    for i in reversed(range(len(params))):
        nbytes = params[i].numel() * params[i].element_size()
        last = params[buckets[-1][-1]] if buckets else None
        same_kind = last is not None and last.dtype == params[i].dtype and last.device == params[i].device
        if buckets and same_kind and size + nbytes <= cap:
            buckets[-1].append(i)
            size += nbytes
        else:
            buckets.append([i])
            size = nbytes
    return buckets


def allreduce_mean_(tensors: Sequence[torch.Tensor], *, weight: float | None = None, bucket_mb: float = 25.0,
                    group=None, use_ring: bool = False, tally: Sequence[float] | None = None) -> list[float]:
    """Average the given tensors in place over the group, bucket by bucket.

        without weight:  t ← 1/N Σ_r t_r
        with weight w_r: t ← Σ_r w_r t_r / Σ_r w_r

    Tensors are flattened into buckets of at most ``bucket_mb`` MiB in reverse order, one
    all-reduce each, all in flight at once (``use_ring``: :func:`ring_allreduce`, one after another).
    Σ_r w_r rides along at the end of the last bucket, so weighting costs no extra round trip,
    and so does ``tally``: a few numbers summed over the ranks (which parameters have a gradient
    here, say), returned summed. Every rank must pass tensors of the same shapes in the same order."""
    check_weight(weight)
    if not tensors:
        return []
    buckets = plan_buckets(tensors, bucket_mb)
    riders = ([float(weight)] if weight is not None else []) + [float(t) for t in tally or []]
    flats = _weighted_buckets(tensors, buckets, weight, riders)
    if use_ring:
        for flat in flats:
            ring_allreduce(flat, group=group)
    else:
        for work in [dist.all_reduce(flat, group=group, async_op=True) for flat in flats]:
            work.wait()
    summed = flats[-1][flats[-1].numel() - len(riders):].tolist()
    total = float(dist.get_world_size(group)) if weight is None else summed[0]
    if total <= 0:
        raise ValueError("the weights of all ranks add up to 0: no rank has a sample")
    for bucket, flat in zip(buckets, flats):
        copy_back([tensors[i] for i in bucket], flat, scale=1.0 / total)
    return summed[1:] if weight is not None else summed


def check_weight(weight: float | None) -> None:
    """A rank's weight in an average is None (no weighting) or a finite number ≥ 0; ValueError
    naming the rank otherwise. Callers that change anything before averaging check it first."""
    if weight is not None:
        rank = f"rank {dist.get_rank()}: " if dist.is_available() and dist.is_initialized() else ""
        real_number(f"{rank}weight", weight, minimum=0, why=" (this rank's sample count)")


def _weighted_buckets(tensors: Sequence[torch.Tensor], buckets: list[list[int]], weight: float | None,
                      riders: list[float]) -> list[torch.Tensor]:
    """One fresh flat copy per bucket, w_r t_r (the riders unweighted, at the end of the last one,
    copied with it)."""
    last = len(buckets) - 1
    ride = tensors[buckets[last][0]].new_tensor(riders)
    flats = [flatten([tensors[i] for i in bucket] + ([ride] if b == last else [])) for b, bucket in enumerate(buckets)]
    if weight is not None:
        for flat, bucket in zip(flats, buckets):
            flat[:sum(tensors[i].numel() for i in bucket)].mul_(float(weight))
    return flats


def on_some_rank(flags: Sequence[bool], *, device: torch.device | str | None = None, group=None) -> list[bool]:
    """For each flag, whether it is True on at least one rank of the group: one all-reduce of a
    mask, one number per flag,

        used_i = Σ_r [flag i on rank r] > 0

    how the ranks agree which parameters have a gradient (DDP's ``find_unused_parameters``)."""
    mask = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(mask, group=group)
    return [count > 0 for count in mask.tolist()]


# ============================================================ counting
SENT_BY_RING = {  # bytes one rank sends, for a collective over N ranks of a tensor of n bytes
    "all_reduce": lambda n, N: 2 * (N - 1) / N * n,   # reduce-scatter, then all-gather
    "all_gather": lambda n, N: (N - 1) / N * n,       # n: the gathered output
    "reduce_scatter": lambda n, N: (N - 1) / N * n,   # n: the input, before scattering
    "broadcast": lambda n, N: n * (N > 1),            # a pipelined chain: every rank but the last passes n on
}
COUNTED = {"all_reduce": "all_reduce", ALL_GATHER: "all_gather", REDUCE_SCATTER: "reduce_scatter",
           "broadcast": "broadcast", "all_to_all_single": "all_to_all", "send": "send", "isend": "send"}


@contextlib.contextmanager
def count_communication() -> Iterator[list[dict]]:
    """Within the block, every collective and send this process starts through
    ``torch.distributed`` is logged: {"op" (all_reduce, all_gather, reduce_scatter, broadcast,
    all_to_all, send), "group" (its global ranks), "elements" and "bytes" (the tensor's: for an
    all-gather the gathered output, for a reduce-scatter and an all-to-all the input), "sent" (what this rank
    sends: the ring's share for a collective, :data:`SENT_BY_RING`; the rows meant for other ranks
    in an all-to-all; the message for a send)}. How the chapters and the capstone count what
    each dimension of parallelism sends, without touching its code."""
    log: list[dict] = []
    originals = {name: getattr(dist, name) for name in COUNTED}
    for name, original in originals.items():
        setattr(dist, name, _counted(COUNTED[name], original, log))
    try:
        yield log
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


@contextlib.contextmanager
def counting(op: str, counter: dict | None = None) -> Iterator[dict]:
    """Within the block, the elements and bytes of every ``op`` this process starts ("send" for
    send and isend, "all_reduce", …: the ops :func:`count_communication` logs) are added up in
    ``counter`` ({"elements": …, "bytes": …}), filled when the block ends: how chapter 08 counts
    what the rings send, and chapter 09 what torch's PowerSGD hook all-reduces."""
    counter = {} if counter is None else counter
    with count_communication() as log:
        try:
            yield counter
        finally:
            for key in ("elements", "bytes"):
                counter[key] = counter.get(key, 0) + sum(e[key] for e in log if e["op"] == op)


def _counted(op: str, original, log: list[dict]):
    def call(first, *args, **kwargs):
        group = kwargs.get("group")
        ranks = tuple(range(dist.get_world_size())) if group is None else tuple(dist.get_process_group_ranks(group))
        tensor = args[0] if op in ("reduce_scatter", "all_to_all") else first   # (output, input, ...)
        nbytes = tensor.numel() * tensor.element_size()
        if op == "all_to_all":
            sent = nbytes - _own_rows_bytes(tensor, args[2] if len(args) > 2 else None, group)
        else:
            sent = nbytes if op == "send" else SENT_BY_RING[op](nbytes, len(ranks))
        log.append({"op": op, "group": ranks, "elements": tensor.numel(), "bytes": nbytes, "sent": sent})
        return original(first, *args, **kwargs)
    return call


def _own_rows_bytes(input: torch.Tensor, split_sizes, group) -> int:
    """Bytes of the rows an all-to-all keeps on this rank (they are not sent)."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    row = input[0].numel() * input.element_size() if input.shape[0] else 0
    counts = list(split_sizes) if split_sizes else [input.shape[0] // world] * world
    return counts[rank] * row


# ============================================================ along a dimension
ALONG = ("all_gather_dim", "reduce_scatter_dim", "gather_along", "reduce_scatter_along", "exchange", "all_to_all_along")


def __getattr__(name: str):
    """The collectives along a dimension (:data:`ALONG`) live in :mod:`nnpar_lite.autograd_collectives`,
    which builds on this module; ``collectives.gather_along`` and the rest reach them from here."""
    if name in ALONG:
        from . import autograd_collectives
        return getattr(autograd_collectives, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
