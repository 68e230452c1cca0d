"""Chapter 12's runs and measurements: the program of :mod:`nnpar_lite.train_gpt` started on real
processes (by ``nnpar_lite.distributed.launch``, or by ``torchrun`` as the learner would, on one
"node" or two), and what one rank of the mesh holds and sends, measured, for ``--report``.

Measured, not predicted: the bytes behind the stage's parameters, gradients and optimizer
state (:func:`nnpar_lite.experiments.sharding.held_bytes`); the floating-point tensors autograd
saves for backward, at their peak during a step (:func:`saved_activations`); and the bytes of
every collective and send (:func:`nnpar_lite.collectives.count_communication`), sorted by the
group they ran in (:func:`bytes_by_dimension`). The prediction is :mod:`nnpar_lite.rank_budget`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

from .. import rank_budget
from ..collectives import count_communication
from ..distributed import free_port
from ..mesh import Mesh
from .sharding import held_bytes

DIMENSIONS = ("dp", "pp", "tp", "embedding")


# ------------------------------------------------------------------ measuring one rank
class _Saved:
    """A tensor autograd saved, counted while autograd keeps it (until its backward ran)."""

    def __init__(self, tensor: torch.Tensor, counter: dict):
        self.tensor, self.counter = tensor, counter
        self.key = tensor.untyped_storage().data_ptr()
        users = counter["users"]
        if users.get(self.key, 0) == 0:                   # each block of memory once (views share it)
            counter["now"] += tensor.untyped_storage().nbytes()
            counter["peak"] = max(counter["peak"], counter["now"])
        users[self.key] = users.get(self.key, 0) + 1
        self.nbytes = tensor.untyped_storage().nbytes()

    def __del__(self):
        users = self.counter["users"]
        users[self.key] -= 1
        if users[self.key] == 0:
            del users[self.key]
            self.counter["now"] -= self.nbytes


@contextlib.contextmanager
def saved_activations(params: Sequence[torch.Tensor]) -> Iterator[dict]:
    """Within the block, the bytes of floating-point tensors autograd holds for backward, now
    and at the peak ({"now", "peak"}): parameters, integer inputs and targets left out."""
    weights = {p.untyped_storage().data_ptr() for p in params}
    counter = {"now": 0, "peak": 0, "users": {}}

    def pack(tensor):
        if not tensor.is_floating_point() or tensor.untyped_storage().data_ptr() in weights:
            return tensor
        return _Saved(tensor, counter)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: getattr(saved, "tensor", saved)):
        yield counter


def dimension_of(entry: dict, mesh: Mesh, rank: int) -> str:
    """Which dimension a logged collective or send belongs to: a send is the pipeline's; a
    collective's group names its dimension (tp, dp, or the tied embedding's first and last stage)."""
    if entry["op"] == "send":
        return "pp"
    for dimension in ("tp", "dp", "embedding"):
        if list(entry["group"]) == mesh.group_of(rank, dimension):
            return dimension
    return "other"


def bytes_by_dimension(log: list[dict], mesh: Mesh, rank: int) -> dict[str, float]:
    """Bytes this rank sent, summed per dimension, from :func:`count_communication`'s log."""
    sent = dict.fromkeys(DIMENSIONS + ("other",), 0.0)
    for entry in log:
        sent[dimension_of(entry, mesh, rank)] += entry["sent"]
    return sent


def measured_step(trainer, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, float | None]:
    """One training step of ``trainer`` (a :class:`nnpar_lite.train_gpt.MeshTrainer`), with what it
    sent by dimension and the peak of its saved activations; and the step's loss."""
    with count_communication() as log, saved_activations(list(trainer.stage.parameters())) as held:
        loss = trainer.step(x, y)
    return {"sent": bytes_by_dimension(log, trainer.mesh, dist.get_rank()), "activations": held["peak"]}, loss


def held_after_step(trainer) -> dict[str, int]:
    """Bytes of the stage's parameters, gradients and optimizer state, after a step."""
    held = held_bytes(trainer.stage, trainer.optimizer, None)
    return {kind: held[kind] for kind in ("parameters", "gradients", "optimizer state")}


def gather_report(report: dict | None, args, mesh: Mesh, config, rank: int) -> list[dict]:
    """Every rank's measured and predicted memory and bytes sent, in rank order, on every rank."""
    kw = dict(global_batch=args.batch, zero=args.zero)
    mine = {"rank": rank, **mesh.coordinates(rank),
            "measured": {"memory": {**report["held"], "activations": report["activations"]},
                         "sent": report["sent"]},
            "predicted": {"memory": rank_budget.predicted_memory(config, mesh, rank, micro_batches=args.micro_batches,
                                                                 optimizer=args.optimizer, **kw),
                          "sent": rank_budget.predicted_bytes_sent(config, mesh, rank, **kw)}}
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return everyone


def report_table(rows: list[dict]) -> str:
    """One line per rank and quantity: predicted, measured, and whether they agree."""
    lines = [f"{'rank':>4} {'(dp,pp,tp)':>10}  {'what':<24}{'predicted':>12}{'measured':>12}"]
    for row in rows:
        where = f"({row['dp']},{row['pp']},{row['tp']})"
        for part in ("memory", "sent"):
            for kind, predicted in row["predicted"][part].items():
                measured = row["measured"][part][kind]
                label = kind if part == "memory" else f"sent in {kind}"
                mark = "✔" if predicted == measured else "✘"
                lines.append(f"{row['rank']:>4} {where:>10}  {label:<24}{predicted:>12,.0f}{measured:>12,.0f} {mark}")
    return "\n".join(lines)


# ------------------------------------------------------------------ starting the program
def program_arguments(dp: int = 1, tp: int = 1, pp: int = 1, **options) -> list[str]:
    """train_gpt's command-line arguments: ``program_arguments(2, 2, 1, zero=1, quiet=True)``
    → ["--dp", "2", "--tp", "2", "--pp", "1", "--zero", "1", "--quiet"]; True is a flag."""
    argv = ["--dp", str(dp), "--tp", str(tp), "--pp", str(pp)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [] if value is False else [flag, str(value)]
    return argv


def train_gpt_worker(rank: int, world_size: int, argv: list[str]) -> dict:
    """A worker for ``nnpar_lite.distributed.launch``: train_gpt on this rank; its metrics."""
    from ..train_gpt import main
    return main(argv)


def runs_on_these_ranks(rank: int, world_size: int, runs: list[tuple[list[str], str | None]]) -> list[dict]:
    """A worker: train_gpt once for each (arguments, pitfall or None), on the same processes
    (starting processes costs seconds; each run makes its own groups)."""
    from ..train_gpt import main

    results = []
    for argv, pitfall in runs:
        with pitfall_applied(pitfall):
            results.append(main(argv))
    return results


# ------------------------------------------------------------------ pitfalls, run
def tied_gradient_left_alone(stage, *, group=None) -> None:
    """Pitfall: the tied embedding's two copies each keep the gradient of their own use."""


def gradients_summed_not_averaged(tensors, *, group=None, **_) -> None:
    """Pitfall: the dp group's gradients summed (all_reduce's default), not divided by dp."""
    for t in tensors:
        dist.all_reduce(t, group=group)


PITFALLS = {"tied gradient not summed": ("gpt_pipeline", "sum_tied_embedding_gradient", tied_gradient_left_alone),
            "dp gradients summed": ("train_gpt", "allreduce_mean_", gradients_summed_not_averaged)}


@contextlib.contextmanager
def pitfall_applied(name: str | None) -> Iterator[None]:
    """Within the block, train_gpt runs with one of :data:`PITFALLS` in place of the right code."""
    if name is None:
        yield
        return
    import importlib

    module_name, attribute, wrong = PITFALLS[name]
    module = importlib.import_module(f"nnpar_lite.{module_name}")
    right = getattr(module, attribute)
    setattr(module, attribute, wrong)
    try:
        yield
    finally:
        setattr(module, attribute, right)


def torchrun_command(nproc: int, argv: Sequence[str], *, nnodes: int = 1, node_rank: int = 0,
                     port: int | None = None) -> list[str]:
    """The torchrun command that starts train_gpt: one node (``--standalone``, a port of its
    own), or node ``node_rank`` of ``nnodes`` meeting at 127.0.0.1:``port`` (c10d rendezvous)."""
    where = ["--standalone"] if nnodes == 1 else [
        "--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"capstone-{port}"]
    return [sys.executable, "-m", "torch.distributed.run", *where, "--nproc-per-node", str(nproc),
            "-m", "nnpar_lite.train_gpt", *argv]


def run_commands(commands: list[list[str]], *, timeout: float = 120.0) -> list[str]:
    """Start the commands at once and wait for all of them: their outputs. If one fails or the
    time runs out, every process they started is stopped and RuntimeError shows the failing
    command's output (torchrun prints its failing rank's traceback there)."""
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in commands]
        procs = [subprocess.Popen(c, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
                 for c, log in zip(commands, logs)]
        failed, why = _first_failure(procs, timeout)
        for p in procs:
            stop_tree(p)
        outputs = [log.seek(0) or log.read() for log in logs]
    if failed is not None:
        raise RuntimeError(f"{' '.join(commands[failed][2:])} {why}; its output:\n{outputs[failed][-6000:]}")
    return outputs


def _first_failure(procs: list[subprocess.Popen], timeout: float) -> tuple[int | None, str]:
    """Wait until all exit with 0 ((None, "")), one exits otherwise, or the time runs out:
    (the index of the command to blame, what went wrong)."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        if any(c not in (None, 0) for c in codes):
            i = next(i for i, c in enumerate(codes) if c not in (None, 0))
            return i, f"exited with {codes[i]}"
        if all(c == 0 for c in codes):
            return None, ""
        if time.monotonic() > deadline:
            return codes.index(None), f"ran past its timeout of {timeout:g} s"
        time.sleep(0.1)


def stop_tree(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a torchrun and the ranks it started: SIGTERM first (torchrun then stops its ranks,
    which run in sessions of their own), SIGKILL for whatever is left after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    family = descendants(proc.pid)
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (read from /proc; none where there is no /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def torchrun_train(dp: int = 1, tp: int = 1, pp: int = 1, *, out: Path, nnodes: int = 1, timeout: float = 120.0,
                   **options) -> dict:
    """train_gpt under torchrun on dp · tp · pp processes (split evenly over ``nnodes``
    "nodes" on this machine), writing into ``out``; metrics.json read back, with report.json
    as "report" when ``report=True``."""
    import json

    argv = program_arguments(dp, tp, pp, out=out, **options)
    nproc, port = dp * tp * pp // nnodes, free_port()
    run_commands([torchrun_command(nproc, argv, nnodes=nnodes, node_rank=i, port=port) for i in range(nnodes)],
                 timeout=timeout)
    metrics = json.loads((Path(out) / "metrics.json").read_text(encoding="utf-8"))
    if (Path(out) / "report.json").exists():
        metrics["report"] = json.loads((Path(out) / "report.json").read_text(encoding="utf-8"))
    return metrics
