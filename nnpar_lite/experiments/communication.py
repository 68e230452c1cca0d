"""Chapter 09's runs: DataParallel against DDP (whose buckets a communication hook records) and
one process on all rows, its step timed against DDP's, the measured timeline of backward against
bucket all-reduces, gradient accumulation, the compressors trained on the digits with their
bytes counted and compared with torch's PowerSGD hook, stale-gradient SGD and the parameter
server with its staleness.

The algorithms are in :mod:`nnpar_lite.data_parallel` (``DataParallel``),
:mod:`nnpar_lite.compression` and :mod:`nnpar_lite.asynchronous`; here is only what runs,
compares and measures them. Training runs are in float64, so that their accuracies come out
the same on any CPU.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data import digits_split
from ..data_parallel import DataParallel, allreduce_gradients
from ..models import evaluate, mlp
from ..util import counting, max_abs_difference, one_thread


# ============================================================ DataParallel, checked
def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def _spread_across_ranks(tensor: torch.Tensor) -> float:
    """The largest difference between this rank's tensor and any other rank's."""
    copies = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(copies, tensor)
    return max(float((c - tensor).abs().max()) for c in copies)


def _micro_batches(config: dict, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same ``micro_steps`` global batches of Σ shard_sizes random rows on every rank."""
    gen = torch.Generator().manual_seed(1000 * config.get("seed", 0) + step)
    n, (inputs, classes) = sum(config["shard_sizes"]), config.get("io", (10, 5))
    return [(torch.randn(n, inputs, generator=gen), torch.randint(0, classes, (n,), generator=gen))
            for _ in range(config.get("micro_steps", 1))]


def _three_models(rank: int, config: dict) -> dict[str, torch.nn.Module]:
    """DataParallel and DDP built from this rank's own seed (they broadcast rank 0's θ), and the
    single-process reference built from rank 0's seed."""
    from torch.nn.parallel import DistributedDataParallel

    def build(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return config["make_model"]()

    bucket_mb = config.get("bucket_mb", 25.0)
    return {"ours": DataParallel(build(100 + rank), bucket_mb=bucket_mb),
            "ddp": DistributedDataParallel(build(100 + rank), bucket_cap_mb=bucket_mb),
            "reference": build(100)}


def record_ddp_buckets(ddp, record: list) -> None:
    """Register a communication hook on ``ddp`` that does what DDP does by default (divide the
    bucket by K, all-reduce it) and appends to ``record`` each bucket it is handed: DDP's real
    buckets, as lists of indices into its trainable parameters, in the order of
    ``GradBucket.index()``. torch 2.13 reports its buckets nowhere else."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    index = {id(p): i for i, p in enumerate(p for p in ddp.module.parameters() if p.requires_grad)}

    def hook(state, bucket):
        record.append((bucket.index(), [index[id(p)] for p in bucket.parameters()]))
        return default_hooks.allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, hook)


def _buckets_of_one_step(record: list) -> list[list[int]]:
    """The buckets one synchronised backward handed to the hook, in bucket order; the record emptied."""
    buckets = [indices for _, indices in sorted(record)]
    record.clear()
    return buckets


def compare_with_ddp(rank: int, world_size: int, configs: Sequence[dict]) -> list[dict]:
    """For each configuration, DataParallel, DDP and one process on all rows train side by side
    (the pattern of CS336's DDP tests).

    ``make_model`` builds the model (a picklable callable); every rank builds it from its own
    seed, so the ranks start different until DataParallel and DDP broadcast rank 0's θ. Each
    step takes ``micro_steps`` micro-batches, accumulated under ``no_sync`` by both; rank r's
    rows are its slice of ``shard_sizes`` (uneven allowed). The local loss is the sum over the
    local rows times K / (N · micro_steps): averaged over ranks and summed over micro-steps it is
    the mean over all rows of all micro-batches, the reference's loss. Returns, per step, the
    largest parameter difference from DDP and from the reference, the largest buffer difference
    from DDP, and the buckets DDP handed its communication hook (:func:`record_ddp_buckets`);
    DataParallel's buckets at the end, and the checks around them."""
    return [_compare_one(rank, world_size, config) for config in configs]


def _compare_one(rank: int, world_size: int, config: dict) -> dict:
    models = _three_models(rank, config)
    ours, ddp, reference = models["ours"], models["ddp"], models["reference"]
    report = {"broadcast spread": _spread_across_ranks(_flat(ours.module)),
              "vs rank 0's model": max_abs_difference(ours.module, reference), "vs_ddp": [], "vs_reference": [],
              "buffers vs_ddp": [], "ddp buckets": []}
    ddp_buckets: list = []
    record_ddp_buckets(ddp, ddp_buckets)
    fixed = {n: p.detach().clone() for n, p in ours.module.named_parameters() if not p.requires_grad}
    opts = {key: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=config.get("lr", 0.1))
            for key, m in models.items()}
    k, sizes = config.get("micro_steps", 1), config["shard_sizes"]
    rows, scale = slice(sum(sizes[:rank]), sum(sizes[:rank + 1])), world_size / (sum(sizes) * k)
    for step in range(config["steps"]):
        batches = _micro_batches(config, step)
        for opt in opts.values():
            opt.zero_grad(set_to_none=step % 2 == 0)                  # both ways of zeroing
        for micro, (x, y) in enumerate(batches):
            for model in (ours, ddp):                                 # accumulate, then average once
                with contextlib.nullcontext() if micro == k - 1 else model.no_sync():
                    (scale * F.cross_entropy(model(x[rows]), y[rows], reduction="sum")).backward()
        ours.finish_gradient_synchronization()
        F.cross_entropy(reference(torch.cat([b[0] for b in batches])), torch.cat([b[1] for b in batches])).backward()
        for opt in opts.values():
            opt.step()
        report["vs_ddp"].append(max_abs_difference(ours.module, ddp.module))
        report["buffers vs_ddp"].append(max_abs_difference(list(ours.module.buffers()), list(ddp.module.buffers())))
        report["vs_reference"].append(max_abs_difference(ours.module, reference))
        report["ddp buckets"].append(_buckets_of_one_step(ddp_buckets))
    report["final spread"] = _spread_across_ranks(_flat(ours.module))
    report["buckets"] = ours.buckets                                  # planned again after the first step
    report["frozen moved"] = max((float((p - fixed[n]).abs().max()) for n, p in ours.module.named_parameters()
                                  if not p.requires_grad), default=0.0)
    return report


# ============================================================ DataParallel, timed
def time_dataparallel_against_ddp(rank: int, world_size: int, sizes=(512, 1024, 1024, 10), batch: int = 64,
                                  rounds: int = 30, bucket_mb: float = 25.0, steps_per_round: int = 5) -> dict:
    """Step times of four contenders in the same processes: chapter 03's all-reduce after
    backward, DataParallel, DDP, and DDP again (DDP against itself: the noise). Each round
    times ``steps_per_round`` steps of each, in an order drawn afresh each round (the same on
    every rank), so that all see the same machine load and none always follows the same other.
    Returns the per-round mean step times and their ratios against DDP."""
    from torch.nn.parallel import DistributedDataParallel

    models = {"after backward": mlp(sizes, seed=0),
              "DataParallel": DataParallel(mlp(sizes, seed=0), bucket_mb=bucket_mb),
              "DDP": DistributedDataParallel(mlp(sizes, seed=0), bucket_cap_mb=bucket_mb),
              "DDP again": DistributedDataParallel(mlp(sizes, seed=0), bucket_cap_mb=bucket_mb)}
    opts = {name: torch.optim.SGD(m.parameters(), lr=0.01) for name, m in models.items()}
    gen = torch.Generator().manual_seed(rank)
    x, y = torch.randn(batch, sizes[0], generator=gen), torch.randint(0, sizes[-1], (batch,), generator=gen)

    def steps(name: str) -> float:
        dist.barrier()
        start = time.perf_counter()
        for _ in range(steps_per_round):
            opts[name].zero_grad()
            F.cross_entropy(models[name](x), y).backward()
            if name == "after backward":
                allreduce_gradients(models[name], bucket_mb=bucket_mb)
            elif name == "DataParallel":
                models[name].finish_gradient_synchronization()
            opts[name].step()
        return (time.perf_counter() - start) / steps_per_round

    names, times = list(models), {name: [] for name in models}
    for round_ in range(rounds + 2):
        for name in np.random.default_rng(round_).permutation(names):
            elapsed = steps(name)
            if round_ >= 2:                                  # the first rounds warm up allocators and gloo
                times[name].append(elapsed)
    ratios = {name: [t / d for t, d in zip(times[name], times["DDP"])] for name in names if name != "DDP"}
    return {"parameters": sum(p.numel() for p in models["DDP"].parameters()), "times": times, "ratios": ratios,
            "max difference from DDP": max_abs_difference(models["DataParallel"].module, models["DDP"].module)}


class TimedDataParallel(DataParallel):
    """DataParallel that notes when each bucket's all-reduce leaves and when it arrives (a
    callback on its future, run by the communication thread): the timeline the chapter draws."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, int, float]] = []

    def _launch(self, bucket: int) -> None:
        self.events.append(("leaves", bucket, time.perf_counter()))
        super()._launch(bucket)
        self._works[-1].get_future().then(lambda _: self.events.append(("arrives", bucket, time.perf_counter())))


def _note_gradients(model: torch.nn.Module, events: list) -> None:
    """Note when each trainable parameter's gradient is complete (hooks registered first run first)."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(
                lambda _, name=name: events.append(("ready", name, time.perf_counter())))


def overlap_timeline(rank: int, world_size: int, sizes=(256, 512, 512, 512, 10), batch: int = 128,
                     bucket_mb: float = 1.0, steps: int = 4) -> dict:
    """One training step, timed event by event, done two ways in the same processes: chapter 03's
    all-reduce after backward (``allreduce_gradients``), and DataParallel, whose bucket
    all-reduces leave during backward. For each way, the step of median length: when each
    gradient was ready, when each bucket (or the one post-backward all-reduce) left and arrived,
    and when the step ended; seconds from the start of backward."""
    runs: dict[str, list] = {"after backward": [], "overlapped": [], "after backward events": [],
                             "overlapped events": []}
    after, inner = mlp(sizes, seed=0), mlp(sizes, seed=0)
    _note_gradients(after, runs["after backward events"])
    _note_gradients(inner, runs["overlapped events"])          # before DataParallel's hooks, so they run first
    overlapped = TimedDataParallel(inner, bucket_mb=bucket_mb)
    gen = torch.Generator().manual_seed(rank)
    x, y = torch.randn(batch, sizes[0], generator=gen), torch.randint(0, sizes[-1], (batch,), generator=gen)
    for step in range(steps + 1):
        for name in ("after backward", "overlapped") if step % 2 else ("overlapped", "after backward"):
            events = runs[name + " events"]
            events.clear()
            overlapped.events = []
            runs[name].append(_timed_step(after if name == "after backward" else overlapped, x, y, events, bucket_mb))
    result = {name: sorted(runs[name][1:], key=lambda r: r["end"])[len(runs[name][1:]) // 2] for name in
              ("after backward", "overlapped")}
    result["buckets"] = [[overlapped.params[i].numel() for i in b] for b in overlapped.buckets]
    return result


def _timed_step(model, x, y, events: list, bucket_mb: float) -> dict:
    """One step's events, in seconds from the start of backward."""
    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    dist.barrier()
    start = time.perf_counter()
    loss.backward()
    backward_end = time.perf_counter()
    if isinstance(model, TimedDataParallel):
        model.finish_gradient_synchronization()
    else:
        allreduce_gradients(model, bucket_mb=bucket_mb)
    end = time.perf_counter()
    time.sleep(0.002)                                     # let a late arrival callback note its time
    communication = list(model.events) if isinstance(model, TimedDataParallel) else \
        [("leaves", 0, backward_end), ("arrives", 0, end)]
    return {"ready": [(name, t - start) for _, name, t in events], "backward end": backward_end - start,
            "communication": [(kind, bucket, t - start) for kind, bucket, t in communication], "end": end - start}


# ============================================================ compression
def counting_allreduce_bytes(counter: dict):
    """While active, every ``dist.all_reduce`` in this process adds its tensor's bytes to
    ``counter["bytes"]``: how the bytes torch's PowerSGD hook sends are counted."""
    return counting(dist, "all_reduce", counter)


def _exact_average(grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The uncompressed average of this rank's gradients over all ranks (the reference)."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads)]


def _batch(config: dict, rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's batch of a step: digits (float64) or random rows of the model's input size."""
    gen = torch.Generator().manual_seed(10_000 * step + rank)
    if config.get("data") == "digits":
        x, y, _, _ = digits_split()
        picks = torch.randint(0, len(x), (config["batch"],), generator=gen)
        return x[picks].double(), y[picks]
    sizes = config["sizes"]
    return (torch.randn(config["batch"], sizes[0], generator=gen, dtype=torch.float64),
            torch.randint(0, sizes[-1], (config["batch"],), generator=gen))


def against_powersgd_hook(rank: int, world_size: int, config: dict) -> dict:
    """The same model trained on the same batches twice in these processes: DDP with torch's
    ``powerSGD_hook``, and ours (backward, then ``PowerSGD.allreduce_`` of the gradients).
    Both average exactly for the first ``start_iter`` steps (torch's hook needs ≥ 2), then
    compress at ``matrix_rank``. Per step: the bytes each handed to ``all_reduce``, its loss
    (mean over ranks), and, unless ``check_exact`` is False, how far its averaged gradient is
    from the exact average of its ranks' gradients. ``dtype`` (default "float64"): the models'
    and the batches' dtype; in float16 and bfloat16 both orthogonalise by Gram–Schmidt."""
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as torch_powersgd
    from torch.nn.parallel import DistributedDataParallel

    from ..compression import PowerSGD

    dtype = getattr(torch, config.get("dtype", "float64"))
    ours = mlp(config["sizes"], seed=config.get("seed", 0), dtype=dtype)
    ddp = DistributedDataParallel(mlp(config["sizes"], seed=config.get("seed", 0), dtype=dtype))
    rate, start = config.get("min_compression_rate", 2.0), config.get("start_iter", 2)
    ddp.register_comm_hook(torch_powersgd.PowerSGDState(
        None, matrix_approximation_rank=config["matrix_rank"], start_powerSGD_iter=start, min_compression_rate=rate,
        use_error_feedback=True, warm_start=True, random_seed=config.get("seed", 0)), torch_powersgd.powerSGD_hook)
    compressor = PowerSGD(config["matrix_rank"], seed=config.get("seed", 0), min_compression_rate=rate)
    runs = {"ours": ours, "torch hook": ddp}
    opts = {name: torch.optim.SGD(m.parameters(), lr=config.get("lr", 0.1)) for name, m in runs.items()}
    report = {name: {"bytes": [], "loss": [], "vs exact": []} for name in runs}
    for step in range(config["steps"]):
        x, y = _batch(config, rank, step)
        x = x.to(dtype)
        for name, model in runs.items():
            exact_now = step < start if name == "ours" else None
            _hook_comparison_step(model, x, y, compressor if name == "ours" else None, exact_now, opts[name],
                                  report[name], config.get("check_exact", True))
    return report


def _hook_comparison_step(model, x, y, compressor, exact_now: bool | None, opt, record: dict,
                          check_exact: bool) -> None:
    """One step of one contender of :func:`against_powersgd_hook`, its all_reduce bytes counted:
    DDP (its hook runs inside backward) when ``compressor`` is None, else backward followed by
    the exact average (``exact_now``) or the compressor. ``check_exact``: also record how far
    the averaged gradient is from the exact average of the ranks' gradients."""
    params = list(model.parameters())
    if check_exact:
        plain = getattr(model, "module", model)                   # no DDP hooks for the reference
        exact = _exact_average(torch.autograd.grad(F.cross_entropy(plain(x), y), params))
    opt.zero_grad()
    loss, counter = F.cross_entropy(model(x), y), {}
    with counting_allreduce_bytes(counter):
        loss.backward()
        if compressor is not None and exact_now:
            _exact_average_into([p.grad for p in params])
        elif compressor is not None:
            compressor.allreduce_([p.grad for p in params])
    if check_exact:
        record["vs exact"].append(max_abs_difference([p.grad for p in params], exact))
    record["bytes"].append(counter.get("bytes", 0))
    record["loss"].append(_mean_over_ranks(loss.item()))
    opt.step()


def against_powersgd_hook_runs(rank: int, world_size: int, configs: Sequence[dict]) -> list[dict]:
    """:func:`against_powersgd_hook` for several configurations in one launch."""
    return [against_powersgd_hook(rank, world_size, config) for config in configs]


def _exact_average_into(grads: Sequence[torch.Tensor]) -> None:
    for g, average in zip(grads, _exact_average(grads)):
        g.copy_(average)


def _mean_over_ranks(value: float) -> float:
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()


# ============================================================ asynchrony
def worker_batches(worker: int, config: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Worker ``worker``'s batches (1 … K): its own random draw of the 1,500 training digits,
    ``batches`` batches of ``batch`` images, in float64."""
    x, y, _, _ = digits_split()
    gen = torch.Generator().manual_seed(1000 * config.get("seed", 0) + worker)
    picks = torch.randint(0, len(x), (config["batches"], config["batch"]), generator=gen)
    return [(x[p].double(), y[p]) for p in picks]


def parameter_server_run(rank: int, world_size: int, config: dict) -> dict:
    """Rank 0 is the parameter server (``asynchronous.serve``) for ``updates`` updates; ranks
    1 … K are workers (``asynchronous.work``) on their own digits, worker k slowed down by
    ``delays[k − 1]`` seconds per gradient. With ``head start`` k, worker 2 computes its first
    gradient only once worker 1 has had k updates applied (:func:`_head_start`), so that it is
    k updates stale whatever the machine's timing. Rank 0 returns the record of every update and
    the final parameters; a worker returns how many gradients it sent."""
    from ..asynchronous import serve, work

    model = mlp(config["sizes"], seed=config.get("seed", 0), dtype=torch.float64)
    if rank == 0:
        records = serve(model, config["lr"], config["updates"])
        start = records[0]["time"] if records else 0.0
        for r in records:
            r["time"] -= start
        return {"records": records, "params": [p.detach().clone() for p in model.parameters()]}
    return {"sent": work(model, worker_batches(rank, config), delay=config.get("delays", [0.0] * world_size)[rank - 1],
                         before_gradient=_head_start(rank, config.get("head start", 0)))}


def _head_start(rank: int, updates: int):
    """Worker 2 waits, before its first gradient, for a message from worker 1, which sends it
    once ``updates`` of its own gradients have been applied (it has their replies); None (no
    waiting) for other ranks or a head start of 0."""
    token = torch.zeros(1)
    if updates and rank == 1:
        return lambda sent: dist.send(token, dst=2) if sent == updates else None
    if updates and rank == 2:
        return lambda sent: dist.recv(token, src=1) if sent == 0 else None
    return None


def replay_parameter_server(records: Sequence[dict], config: dict) -> torch.nn.Module:
    """The server's run again, in one process: ``stale_sgd`` on the batches in the order the
    server applied them, each with the staleness it had. Equal to the real run's θ."""
    from ..asynchronous import stale_sgd

    model = mlp(config["sizes"], seed=config.get("seed", 0), dtype=torch.float64)
    batches = {w: worker_batches(w, config) for w in {r["worker"] for r in records}}
    stale_sgd(model, [batches[r["worker"]][r["batch"]] for r in records], config["lr"],
              [r["staleness"] for r in records])
    return model


# ------------------------------------------------- error feedback, and compression on the digits
def error_feedback_curves(steps: int = 400, workers: int = 3, shapes: Sequence[tuple] = ((20, 30), (30,), (7, 5)),
                          seed: int = 0) -> dict:
    """K simulated workers average the same gradients (fixed, different per worker) step after
    step with PowerSGD rank 1 and top-k 10 %, with and without error feedback. For each: the
    error of the running mean of the outputs, ‖1/T Σ_t output_t − ḡ‖ / ‖ḡ‖, at every T."""
    from ..compression import PowerSGD, TopK, simulate_allreduce_

    gens = [torch.Generator().manual_seed(1000 * seed + k) for k in range(workers)]
    grads = [[torch.randn(*shape, generator=g, dtype=torch.float64) for shape in shapes] for g in gens]
    g_bar = [sum(w[i] for w in grads) / workers for i in range(len(shapes))]
    scale = float(torch.cat([g.reshape(-1) for g in g_bar]).norm())
    curves = {}
    with one_thread():
        for name, make in (("PowerSGD rank 1", lambda ef: PowerSGD(1, error_feedback=ef)),
                           ("top-k 10 %", lambda ef: TopK(0.1, error_feedback=ef))):
            for feedback in (True, False):
                compressors, total, errors = [make(feedback) for _ in range(workers)], [0.0 * g for g in g_bar], []
                for T in range(1, steps + 1):
                    outputs = [[g.clone() for g in w] for w in grads]
                    simulate_allreduce_(compressors, outputs)
                    total = [t + o for t, o in zip(total, outputs[0])]
                    gap = torch.cat([(t / T - g).reshape(-1) for t, g in zip(total, g_bar)])
                    errors.append(float(gap.norm()) / scale)
                curves[(name, feedback)] = errors
    return curves


# ------------------------------------------------- compression on the digits, simulated
COMPRESSORS = {"PowerSGD rank 1": ("PowerSGD", 1), "PowerSGD rank 2": ("PowerSGD", 2),
               "PowerSGD rank 4": ("PowerSGD", 4), "top-k 1 %": ("TopK", 0.01), "top-k 10 %": ("TopK", 0.1)}


def _compressor(name: str, error_feedback: bool):
    from .. import compression

    kind, amount = COMPRESSORS[name]
    return getattr(compression, kind)(amount, error_feedback=error_feedback)


@functools.lru_cache(maxsize=None)
def compression_run(name: str, error_feedback: bool = True, *, workers: int = 2, steps: int = 150,
                    batch: int = 64, lr: float = 0.2, hidden: int = 64, every: int = 15, seed: int = 0) -> dict:
    """K simulated workers train an MLP (64 → hidden → 10, float64) on the digits; each step's
    gradients are averaged by ``compression.simulate_allreduce_`` with the named compressor
    (``name="exact"``: the plain mean). Returns the bytes each worker sent per step and the test
    accuracy every ``every`` steps. Cached: the chapter's figure and its widget draw the same runs."""
    x, y, x_test, y_test = digits_split()
    x, x_test = x.double(), x_test.double()
    model = mlp((64, hidden, 10), seed=seed, dtype=torch.float64)
    compressors = None if name == "exact" else [_compressor(name, error_feedback) for _ in range(workers)]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    accuracy = [(0, evaluate(model, x_test, y_test)["accuracy"])]
    with one_thread():
        for step in range(steps):
            rows = order[(step * batch + torch.arange(batch)) % len(x)]
            _compressed_step(model, [(x[r], y[r]) for r in rows.chunk(workers)], compressors, lr)
            if (step + 1) % every == 0:
                accuracy.append((step + 1, evaluate(model, x_test, y_test)["accuracy"]))
    dense = 8 * sum(p.numel() for p in model.parameters())
    return {"bytes per step": dense if compressors is None else compressors[0].bytes_sent / steps,
            "dense bytes per step": dense, "accuracy": accuracy}


def _compressed_step(model: torch.nn.Module, shards, compressors, lr: float) -> None:
    """One step: each worker's gradient on its shard, averaged (by the compressors, one per
    worker, or exactly when there are none), then θ ← θ − η g."""
    from ..compression import simulate_allreduce_

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


def compression_runs(**settings) -> dict[tuple[str, bool], dict]:
    """Every compressor of the chapter, with and without error feedback, and the exact mean:
    {(name, error feedback): run}."""
    runs = {("exact", True): compression_run("exact", True, **settings)}
    for name in COMPRESSORS:
        for feedback in (True, False):
            runs[(name, feedback)] = compression_run(name, feedback, **settings)
    return runs


@functools.lru_cache(maxsize=None)
def staleness_sweep(taus: tuple = (0, 1, 2, 4, 8, 16), lrs: tuple = (0.1, 0.3, 1.0), *, steps: int = 200,
                    batch: int = 32, sizes: tuple = (64, 32, 10), seed: int = 0) -> dict:
    """Test accuracy of stale-gradient SGD (``asynchronous.stale_sgd``) on the digits after
    ``steps`` updates, for each learning rate and staleness τ: {lr: [accuracy for each τ]},
    the same batches in the same order for every run (float64)."""
    from ..asynchronous import stale_sgd

    x, y, x_test, y_test = digits_split()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    batches = [(x[rows].double(), y[rows]) for rows in
               (order[(s * batch + torch.arange(batch)) % len(x)] for s in range(steps))]
    result = {}
    with one_thread():
        for lr in lrs:
            result[lr] = []
            for tau in taus:
                model = mlp(sizes, seed=seed, dtype=torch.float64)
                losses = stale_sgd(model, batches, lr, tau)
                diverged = not all(np.isfinite(losses))
                result[lr].append(0.0 if diverged else evaluate(model, x_test.double(), y_test)["accuracy"])
    return {"taus": list(taus), "accuracy": result}


def delayed_quadratic(lr: float, staleness: int, *, curvature: float = 1.0, steps: int = 60) -> list[float]:
    """θ_t of stale gradient descent on L = λ θ² / 2 from θ_0 = 1: θ_{t+1} = θ_t − η λ θ_{t−τ}."""
    theta = [1.0]
    for t in range(steps):
        theta.append(theta[-1] - lr * curvature * theta[max(0, t - staleness)])
    return theta


def quadratic_stability(taus: Sequence[int] = (0, 1, 2, 4, 8, 16), factors: Sequence[float] = (0.7, 1.3),
                        steps: int = 400) -> dict:
    """Stale gradient descent on L = θ² / 2 (λ = 1) at η = factor × the bound of
    ``asynchronous.largest_stable_lr``, for each τ: whether it converged (|θ| below 1/2 over the
    last 20 steps) — below the bound it must, above it must not. Also the bound for τ = 0 … max."""
    from ..asynchronous import largest_stable_lr

    runs = {}
    for tau in taus:
        for factor in factors:
            lr = factor * largest_stable_lr(1.0, tau)
            runs[(tau, lr)] = max(abs(t) for t in delayed_quadratic(lr, tau, steps=steps)[-20:]) < 0.5
    return {"taus": list(taus), "bound": [largest_stable_lr(1.0, t) for t in range(max(taus) + 1)], "runs": runs}
