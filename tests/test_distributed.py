"""The launcher: results in rank order; a rank that raises, hangs or dies is named with its
traceback, within the timeout plus a few seconds, and no process is left behind."""

import os
import time
from pathlib import Path

import pytest

import workers
from nnpar_lite import distributed
from nnpar_lite.experiments import processes


def child_pids() -> set[int]:
    """Processes whose parent is this one (from /proc), except multiprocessing's two helpers:
    the resource tracker and the fork server, one of each per parent process, started by the
    first launch and ending with it (they are not ranks)."""
    me, children = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == me and b"resource_tracker" not in command and b"forkserver" not in command:
            children.add(int(stat.parent.name))
    return children


@pytest.fixture
def no_process_left():
    before = child_pids()
    yield
    time.sleep(0.2)
    assert child_pids() - before == set(), "a spawned rank outlived launch()"


@pytest.mark.parametrize("world_size", [1, 3])
def test_results_come_back_in_rank_order(world_size, no_process_left):
    results = distributed.launch(processes.whoami, world_size, backend="gloo", timeout=60)
    assert [r["rank"] for r in results] == list(range(world_size))
    assert all(r["sum of ranks"] == sum(range(world_size)) for r in results)
    assert len({r["pid"] for r in results}) == world_size and os.getpid() not in {r["pid"] for r in results}


def test_a_rank_that_raises_is_named_with_its_traceback(no_process_left):
    with pytest.raises(distributed.WorkerError) as info:
        distributed.launch(processes.fail_on_rank, 3, 2, backend="gloo", timeout=60)
    assert info.value.rank == 2
    assert "rank 2 raised" in str(info.value) and "ValueError: rank 2 was told to fail" in str(info.value)
    assert "fail_on_rank" in info.value.worker_traceback


def test_a_rank_that_hangs_is_named_within_the_timeout(no_process_left):
    start = time.monotonic()
    with pytest.raises(distributed.WorkerError) as info:
        distributed.launch(workers.hang_on_rank, 2, 1, backend="gloo", timeout=6)
    elapsed = time.monotonic() - start
    assert info.value.rank == 1 and "did not finish within the timeout of 6 s" in str(info.value)
    assert "hang_on_rank" in info.value.worker_traceback  # the stack of the hung rank
    assert elapsed < 6 + 60   # returned instead of waiting for gloo's 30-minute timeout


@pytest.mark.timing
def test_a_hang_is_reported_promptly(no_process_left):
    """Load-dependent, so not run in CI (pytest -m timing): the report comes within 5 s of the timeout."""
    start = time.monotonic()
    with pytest.raises(distributed.WorkerError):
        distributed.launch(workers.hang_on_rank, 2, 1, backend="gloo", timeout=6)
    assert time.monotonic() - start < 6 + 5


def test_a_rank_that_dies_is_named(no_process_left):
    with pytest.raises(distributed.WorkerError) as info:
        distributed.launch(workers.die_on_rank, 3, 1, backend="gloo", timeout=60)
    assert info.value.rank == 1 and "died with exit code 3" in str(info.value)


def notebook_style_function(rank, world_size):  # stands for a function defined in __main__
    return rank


def test_lambdas_and_nested_functions_are_refused_at_once():
    def nested(rank, world_size):
        return rank

    for fn in (lambda rank, world_size: rank, nested):
        with pytest.raises(ValueError, match="importable module"):
            distributed.launch(fn, 2)


def test_a_function_from_main_is_refused(monkeypatch):
    monkeypatch.setattr(notebook_style_function, "__module__", "__main__")
    with pytest.raises(ValueError, match="'notebook_style_function' is defined in '__main__'"):
        distributed.launch(notebook_style_function, 2)


@pytest.mark.parametrize("kwargs, word", [(dict(world_size=0), "world_size"), (dict(world_size=2, timeout=0), "timeout"),
                                          (dict(world_size=2.0), "world_size")])
def test_bad_launch_arguments(kwargs, word):
    world_size = kwargs.pop("world_size")
    with pytest.raises(ValueError, match=word):
        distributed.launch(processes.whoami, world_size, **kwargs)


def test_free_port_can_be_bound_and_a_taken_one_is_not_returned():
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = {distributed.free_port() for _ in range(20)}
        assert taken.getsockname()[1] not in ports
    port = ports.pop()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))      # raises OSError if the port were in use
        assert s.getsockname()[1] == port


# ------------------------------------------------------- the backend follows the worker's device
def chapter_workers():
    """Every worker the chapters launch: the first argument of each launch(...) in a notebook."""
    import json
    import re

    names, defined_in_a_notebook = set(), set()
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("**/[0-9]*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code" or "raises-exception" in cell["metadata"].get("tags", []):
                continue          # prose, and cells that show launch refusing a notebook's function
            names |= set(re.findall(r"launch\(\s*([\w.]+)", "".join(cell["source"])))
            defined_in_a_notebook |= set(re.findall(r"^def (\w+)\(", "".join(cell["source"]), re.M))
    return sorted(names - defined_in_a_notebook)   # those show launch refusing a notebook's function


def resolve(name):
    """A worker named as the notebooks name it (``dp.train_against_ddp``), found in the package."""
    import importlib
    import pkgutil

    import nnpar_lite
    attribute = name.rsplit(".", 1)[-1]
    for module in pkgutil.walk_packages(nnpar_lite.__path__, "nnpar_lite."):
        found = getattr(importlib.import_module(module.name), attribute, None)
        if callable(found):
            return found
    return None


def test_the_backend_follows_where_the_worker_puts_its_tensors(monkeypatch):
    """On a machine with two GPUs a CPU worker must still get gloo (NCCL has no CPU path), and a
    worker that places its tensors on rank_device() gets NCCL."""
    import inspect

    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    found = chapter_workers()
    assert len(found) >= 8, found
    for name in found:
        worker = resolve(name)
        assert worker is not None, f"the chapters launch {name}, which the package does not define"
        source = inspect.getsource(worker)
        on_gpu = "rank_device(" in source
        assert distributed.backend_for(worker, 2) == ("nccl" if on_gpu else "gloo"), name
        if not on_gpu:
            assert "cuda" not in source, f"{name} mentions cuda but runs on gloo"
    assert distributed.backend_for(processes.whoami, 2) == "nccl"
    assert distributed.backend_for(processes.whoami, 3) == "gloo"     # not a GPU for every rank
