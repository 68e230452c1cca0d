"""Workers that check nnpar_lite.collectives on real ranks against a recomputation in one
process: every rank can rebuild every rank's data (seeded by rank), so each rank computes the
expected result itself, with plain torch and one-process autograd."""

import torch
import torch.distributed as dist

from nnpar_lite import collectives as co


def data_of(rank: int, numel: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * seed + rank)
    return torch.randn(numel, generator=g, dtype=torch.float64)


def rings_against_a_sum(rank: int, world_size: int, numels: list) -> float:
    """The ring reduce-scatter, all-gather and all-reduce against Σ over every rank's data."""
    worst = 0.0
    for numel in numels:
        total = sum(data_of(r, numel) for r in range(world_size))
        x = data_of(rank, numel)
        co.ring_allreduce(x)
        worst = max(worst, float((x - total).abs().max()) if numel else 0.0)
        whole = co.padded(data_of(rank, numel), world_size)
        size = whole.numel() // world_size
        mine = co.ring_reduce_scatter(whole.new_empty(size), whole)
        expected = co.padded(total, world_size)[rank * size:(rank + 1) * size]
        worst = max(worst, float((mine - expected).abs().max()) if size else 0.0)
        gathered = co.ring_all_gather(whole.new_empty(world_size * size), co.padded(data_of(rank, numel), world_size)
                                      [rank * size:(rank + 1) * size].clone())
        want = torch.cat([co.padded(data_of(r, numel), world_size)[r * size:(r + 1) * size] for r in range(world_size)])
        worst = max(worst, float((gathered - want).abs().max()) if size else 0.0)
    return worst


def average_against_a_recomputation(rank: int, world_size: int, shapes: list, use_ring: bool) -> float:
    """allreduce_mean_ without and with weights (w_r = r + 1, one rank 0) against Σ w_r t_r / Σ w_r."""
    weights = [0.0 if r == 1 else r + 1.0 for r in range(world_size)]
    worst = 0.0
    for weighted in (False, True):
        tensors = [data_of(rank, torch.Size(s).numel(), seed=i).view(s) for i, s in enumerate(shapes)]
        co.allreduce_mean_(tensors, weight=weights[rank] if weighted else None, bucket_mb=1e-4, use_ring=use_ring)
        for i, (t, s) in enumerate(zip(tensors, shapes)):
            w = weights if weighted else [1.0] * world_size
            want = sum(w[r] * data_of(r, torch.Size(s).numel(), seed=i) for r in range(world_size)) / sum(w)
            worst = max(worst, float((t.view(-1) - want).abs().max()) if t.numel() else 0.0)
    return worst


def _coefficients(world_size: int, shape) -> list:
    """A loss Σ_r <y_r, c_r> with a different c_r on each rank: every rank's gradient differs."""
    return [data_of(r, torch.Size(shape).numel(), seed=7).view(shape) for r in range(world_size)]


def differentiable_collectives(rank: int, world_size: int) -> dict:
    """Output and input gradient of each differentiable collective against one-process autograd."""
    gaps = {}
    B, H, T, D = 2, 2 * world_size, 3 * world_size, 3
    full = [data_of(r, B * H * T * D, seed=3).view(B, H, T, D) for r in range(world_size)]   # rank r's own tensor
    cases = {
        "gather_along": (lambda x: co.gather_along(x, 2), lambda xs: [torch.cat(xs, 2)] * world_size,
                         [f[:, :, :T // world_size] for f in full]),
        "reduce_scatter_along": (lambda x: co.reduce_scatter_along(x, 2),
                                 lambda xs: list(torch.chunk(sum(xs), world_size, 2)), full),
        "all_to_all_along": (lambda x: co.all_to_all_along(x, 1, 2),
                             lambda xs: list(torch.chunk(torch.cat(xs, 2), world_size, 1)),
                             [f[:, :, :T // world_size] for f in full]),
    }
    for name, (parallel, reference, inputs) in cases.items():
        xs = [x.clone().requires_grad_(True) for x in inputs]
        ys = reference(xs)
        c = _coefficients(world_size, ys[rank].shape)
        sum((y * c_r).sum() for y, c_r in zip(ys, c)).backward()
        mine = inputs[rank].clone().requires_grad_(True)
        y = parallel(mine)
        (y * c[rank]).sum().backward()
        gaps[name] = max(float((y - ys[rank]).abs().max()), float((mine.grad - xs[rank].grad).abs().max()))
    return gaps


def uneven_exchange(rank: int, world_size: int) -> float:
    """exchange() with counts that differ per pair, zeros among them, against the rows' owners."""
    counts = [[(3 * s + d + 1) % 4 for d in range(world_size)] for s in range(world_size)]   # counts[src][dst]
    rows = [data_of(s, 5 * sum(counts[s]), seed=11).view(-1, 5) for s in range(world_size)]
    xs = [r.clone().requires_grad_(True) for r in rows]
    received = [torch.cat([torch.split(xs[s], counts[s])[d] for s in range(world_size)]) for d in range(world_size)]
    c = [data_of(d, received[d].numel(), seed=13).view_as(received[d]) for d in range(world_size)]
    sum((y * c_d).sum() for y, c_d in zip(received, c)).backward()
    mine = rows[rank].clone().requires_grad_(True)
    y = co.exchange(mine, counts[rank], [counts[s][rank] for s in range(world_size)])
    (y * c[rank]).sum().backward()
    return max(float((y - received[rank]).abs().max()) if y.numel() else 0.0,
               float((mine.grad - xs[rank].grad).abs().max()) if mine.numel() else 0.0)


def counted_bytes(rank: int, world_size: int) -> list:
    """What count_communication logs for one all-reduce, all-gather, reduce-scatter, ring and all-to-all."""
    n = 6 * world_size
    with co.count_communication() as log:
        dist.all_reduce(torch.ones(n))
        co.all_gather(torch.empty(n), torch.ones(6))
        co.reduce_scatter(torch.empty(6), torch.ones(n))
        co.all_to_all(torch.ones(n, 2), [6] * world_size, [6] * world_size)
        co.ring_allreduce(torch.ones(n))
    return [(e["op"], e["bytes"], e["sent"]) for e in log]


def refused(rank: int, world_size: int) -> list:
    """The errors a rank gets for bad input, before any message is sent."""
    messages = []
    for bad in (lambda: co.all_to_all(torch.ones(3), [1] * world_size, [1] * world_size),
                lambda: co.reduce_scatter_along(torch.ones(2, world_size + 1), 1),
                lambda: co.ring_allreduce(torch.ones(4, 4).t())):
        try:
            bad()
            messages.append(None)
        except ValueError as error:
            messages.append(str(error))
    dist.barrier()
    return messages


def counted_elements(rank: int, world_size: int, numel: int) -> dict:
    """What counting() adds up for a ring all-reduce (its sends) and for one all-reduce, and what
    the earlier util.counting adds up for the same calls."""
    from nnpar_lite.util import counting as earlier_counting

    found = {}
    with co.counting("send") as sends, earlier_counting(dist, "isend", {}) as earlier:
        co.ring_allreduce(torch.ones(numel, dtype=torch.float64))
    found["ring"], found["ring, earlier form"] = sends, earlier
    with co.counting("all_reduce", {"elements": 1, "bytes": 8}) as reduced:   # added to what it held
        dist.all_reduce(torch.ones(numel))
    found["all_reduce"] = reduced
    return found


def agreement_and_broadcast(rank: int, world_size: int) -> dict:
    """on_some_rank on flags that differ per rank; broadcast_from_first_rank over the group of
    ranks 1 … N−1 (its first rank is global rank 1), the other rank left alone."""
    flags = [rank == 0, False, True, rank == world_size - 1]
    used = co.on_some_rank(flags)
    group = dist.new_group(list(range(1, world_size)))
    tensors = [torch.full((3,), float(rank)), torch.full((2, 2), 10.0 + rank)]
    if rank > 0:
        co.broadcast_from_first_rank(tensors, group=group)
    return {"used": used, "values": [t.flatten().tolist() for t in tensors]}


def tally_and_refusal(rank: int, world_size: int) -> dict:
    """allreduce_mean_'s tally, summed and returned, in as many all-reduces as buckets; a bad
    weight refused with the rank named, before anything is sent."""
    tensors = [torch.full((5,), float(rank)), torch.full((7,), 2.0 * rank)]
    with co.count_communication() as log:
        tally = co.allreduce_mean_(tensors, weight=rank + 1.0, bucket_mb=20 / 2 ** 20, tally=[rank, 1.0])
    try:
        co.allreduce_mean_(tensors, weight=-1.0)
        refusal = None
    except ValueError as error:
        refusal = str(error)
    return {"tally": tally, "all-reduces": sum(e["op"] == "all_reduce" for e in log),
            "buckets": len(co.plan_buckets(tensors, 20 / 2 ** 20)), "refusal": refusal,
            "values": [tensors[0][0].item(), tensors[1][0].item()]}


def passed_from_the_left(rank: int, world_size: int, numel: int) -> tuple:
    """What pass_right brings against the left neighbour's data, and, on one rank, the refusal of a
    receive buffer of another size (sending to oneself is a copy)."""
    received = torch.empty(numel, dtype=torch.float64)
    co.pass_right(data_of(rank, numel), received)
    gap = float((received - data_of((rank - 1) % world_size, numel)).abs().max()) if numel else 0.0
    refusal = ""
    if world_size == 1:
        try:
            co.pass_right(data_of(rank, numel), torch.empty(numel + 1, dtype=torch.float64))
        except ValueError as exc:
            refusal = str(exc)
    return gap, refusal
