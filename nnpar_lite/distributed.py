"""Launching K real processes with torch.distributed: gloo for CPU tensors, NCCL for GPU ones.

``launch(fn, world_size, *args)`` runs ``fn(rank, world_size, *args)`` in
``world_size`` fresh processes joined in one process group, and returns their
return values in rank order. It picks a free port, enforces a timeout, and if
any rank raises, dies or hangs, it stops every rank and raises
:class:`WorkerError` naming the rank and carrying its traceback. No rank is
left behind.

The ranks start by *forkserver* where the system has it (Linux, macOS): one server
process imports torch once, the first time a launch needs it, and each rank is a fresh
fork of it, so a launch takes a fraction of a second instead of the seconds a new
interpreter spends importing torch. Elsewhere they start by *spawn*. Both work with
CUDA and in Jupyter (plain fork does not), and both import ``fn`` *by name*: ``fn``
must live in an importable module. A function defined in a notebook lives in
``__main__`` and cannot be started; this module says so at once. (The server keeps
the package as it was first imported: after editing the package's code, restart the
kernel.)
"""

from __future__ import annotations

import datetime
import faulthandler
import os
import pickle
import queue
import signal
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DEFAULT_TIMEOUT = 120.0  # seconds, for a whole launch


class WorkerError(RuntimeError):
    """A rank raised, died or hung. ``rank`` names it; ``worker_traceback`` is its traceback."""

    def __init__(self, rank: int, message: str, worker_traceback: str = ""):
        self.rank = rank
        self.worker_traceback = worker_traceback
        detail = f"\n\n--- traceback of rank {rank} ---\n{worker_traceback}" if worker_traceback else ""
        super().__init__(f"rank {rank} {message}{detail}")


def free_port() -> int:
    """A TCP port that is free on this machine now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_rank_device(fn: Callable) -> Callable:
    """Mark a worker that puts its tensors on :func:`rank_device`, so that it may run on NCCL
    with a GPU per rank. Unmarked workers keep their tensors on the CPU and run on gloo."""
    fn.places_tensors_on_rank_device = True
    return fn


def backend_for(fn: Callable, world_size: int) -> str:
    """The backend follows where the worker's tensors live: NCCL for a worker marked with
    :func:`on_rank_device` when every rank can have a GPU of its own, else gloo. NCCL has no
    CPU path, so a CPU worker on a machine with GPUs still gets gloo."""
    if getattr(fn, "places_tensors_on_rank_device", False) and torch.cuda.is_available() \
            and torch.cuda.device_count() >= world_size:
        return "nccl"
    return "gloo"


def rank_device(rank: int | None = None) -> torch.device:
    """The device of this rank: ``cuda:<local rank>`` under NCCL, the CPU under gloo."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        local = int(os.environ.get("LOCAL_RANK", rank if rank is not None else dist.get_rank()))
        return torch.device("cuda", local)
    return torch.device("cpu")


def launch(fn: Callable[..., Any], world_size: int, *args: Any, backend: str | None = None,
           timeout: float = DEFAULT_TIMEOUT) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` processes; their results in rank order."""
    _check_launch(fn, world_size, timeout)
    backend = backend or backend_for(fn, world_size)
    ctx = _context()
    results: Any = ctx.Queue()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nnpar-launch-") as folder:
        dumps = [Path(folder) / f"rank{r}.txt" for r in range(world_size)]
        procs = [ctx.Process(target=_run_rank, daemon=True, name=f"nnpar-rank{r}",
                             args=(fn, r, world_size, args, backend, port, timeout, str(dumps[r]), results))
                 for r in range(world_size)]
        try:
            for p in procs:
                p.start()
            return _collect(procs, results, dumps, timeout)
        finally:
            _stop(procs)
            results.close()
            results.join_thread()


# What the server imports once for every rank it forks. torch._dynamo too: the first optimizer a
# process creates imports it (with sympy), about a second per rank, several when ranks share cores.
PRELOAD = ["torch", "torch.distributed", "torch.nn.functional", "torch._dynamo", "nnpar_lite"]


def _context():
    """forkserver with torch imported once in the server, where there is one; else spawn."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _check_launch(fn: Callable, world_size: int, timeout: float) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    module = getattr(fn, "__module__", None)
    if module == "__main__" or getattr(fn, "__qualname__", "").count("<locals>") or \
            getattr(fn, "__name__", "") == "<lambda>":
        raise ValueError(f"{getattr(fn, '__qualname__', fn)!r} is defined in {module!r} (a notebook, a script "
                         "or inside another function): the ranks import fn by name, so it must be a "
                         "top-level function of an importable module, such as nnpar_lite's")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer ≥ 1, got {world_size!r}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _run_rank(fn, rank, world_size, args, backend, port, timeout, dump_path, results) -> None:
    """The body of one rank: join the group, run fn, report back, leave the group."""
    with open(dump_path, "w") as dump:
        # If the launcher finds this rank hung, it sends SIGUSR1: every thread's stack goes to the file.
        if hasattr(signal, "SIGUSR1"):
            faulthandler.register(signal.SIGUSR1, file=dump, all_threads=True)
        try:
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                              WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))  # share the cores
            if backend == "nccl":
                torch.cuda.set_device(rank)
            # The group waits longer than the launcher does, so that a hung rank is found and
            # named by the launcher rather than reported as a timeout by the ranks waiting for it.
            dist.init_process_group(backend, rank=rank, world_size=world_size,
                                    timeout=datetime.timedelta(seconds=timeout + 30))
            # Pickled here, by value: the queue's own pickler would send tensors as handles
            # to shared memory, which vanish when this process exits.
            results.put((rank, "ok", pickle.dumps(fn(rank, world_size, *args))))
            # Meet before tearing down: on gloo, a rank that destroys its group while
            # another is still in its last collective aborts the run (seen about one run in four).
            dist.barrier()
            dist.destroy_process_group()
        except BaseException as error:  # report everything, KeyboardInterrupt included
            results.put((rank, "error", f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}"))
        finally:
            results.close()
            results.join_thread()  # make sure the message is sent before the process exits


def _collect(procs, results, dumps, timeout: float) -> list[Any]:
    """Wait for every rank's result; raise WorkerError for the first rank that fails."""
    world_size = len(procs)
    values: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            rank, status, payload = results.get(timeout=0.1)
        except queue.Empty:
            dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in values]
            if dead:
                raise _died(procs, dead[0])
            if len(values) == world_size and all(p.exitcode == 0 for p in procs):
                return [values[r] for r in range(world_size)]
            if time.monotonic() > deadline:
                missing = [r for r in range(world_size) if r not in values] or list(range(world_size))
                raise WorkerError(missing[0], f"did not finish within the timeout of {timeout:g} s "
                                  f"(ranks not finished: {missing})", _hung_traceback(procs, dumps, missing[0]))
            continue
        if status == "ok":
            values[rank] = pickle.loads(payload)
            continue
        # A rank failed. If another rank died silently, that is the cause and this
        # rank's error (typically "connection closed by peer") its consequence.
        time.sleep(0.5)
        dead = [r for r, p in enumerate(procs)
                if r != rank and p.exitcode not in (None, 0) and r not in values and not _reported(results, r)]
        if dead:
            raise _died(procs, dead[0], f"(rank {rank} then failed: {payload.splitlines()[0]})")
        raise WorkerError(rank, "raised an exception", payload)


def _reported(results, rank: int) -> bool:
    """Whether an error report from ``rank`` is waiting in the queue (it did not die silently)."""
    pending = []
    found = False
    try:
        while True:
            item = results.get_nowait()
            pending.append(item)
            found = found or (item[0] == rank and item[1] == "error")
    except queue.Empty:
        pass
    for item in pending:
        results.put(item)
    return found


def _died(procs, rank: int, note: str = "") -> WorkerError:
    code = procs[rank].exitcode
    return WorkerError(rank, f"died with exit code {code}{_signal_name(code)} without reporting an error "
                       f"{note}".rstrip())


def _hung_traceback(procs, dumps, rank: int) -> str:
    p = procs[rank]
    if hasattr(signal, "SIGUSR1") and p.is_alive():
        os.kill(p.pid, signal.SIGUSR1)
        time.sleep(0.3)
    text = dumps[rank].read_text(errors="replace") if dumps[rank].exists() else ""
    return text or "(no traceback could be taken)"


def _signal_name(exitcode: int) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f" (signal {signal.Signals(-exitcode).name})"
        except ValueError:
            return ""
    return ""


def _stop(procs) -> None:
    """Every rank ends here: terminate what still runs, then kill what ignores that."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        if p.pid is not None:
            p.join(2.0)
        if p.is_alive():
            p.kill()
            p.join()
