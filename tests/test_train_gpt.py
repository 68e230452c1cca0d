"""Chapter 12's program: the tiny GPT on a dp × tp × pp mesh (and ZeRO-1) prints the same losses
and final ‖θ‖ as one process, under torchrun on one "node" and on two; each rank holds and
sends what the cost formulas predict; bad sizes are refused before any process group exists.

The reference is the unsplit GPT trained on the whole batch in this process (train_gpt's
one-process path, which uses no pipeline, shard or collective), computed once per setting.
Every torchrun run also measures what its ranks hold and send (--report)."""

import functools
import math
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

import capstone_workers
from nnpar_lite.distributed import launch
from nnpar_lite.experiments.capstone import program_arguments, run_commands, torchrun_train
from nnpar_lite.train_gpt import main

RTOL = 1e-5


@functools.lru_cache(maxsize=None)
def one_process(**options) -> dict:
    return main(program_arguments(**options))


def assert_same_run(got: dict, want: dict, rtol: float = RTOL) -> float:
    """Every step's loss and the final ‖θ‖ within rtol of the reference; the worst relative gap."""
    assert len(got["losses"]) == len(want["losses"])
    gaps = [abs(a - b) / abs(b) for a, b in zip(got["losses"] + [got["param_norm"]],
                                               want["losses"] + [want["param_norm"]])]
    assert max(gaps) <= rtol, f"relative gaps {gaps}"
    return max(gaps)


def assert_report_agrees(report: list[dict]) -> None:
    for row in report:
        for part in ("memory", "sent"):
            assert row["measured"][part] == {**row["predicted"][part], **({"other": 0.0} if part == "sent" else {})}, \
                f"rank {row['rank']} {part}: predicted {row['predicted'][part]}, measured {row['measured'][part]}"


LAYOUTS = [((2, 2, 2), {}), ((2, 2, 2), {"zero": 1}), ((2, 2, 1), {}), ((1, 2, 2), {}),
           ((2, 1, 2), {"batch": 12, "micro_batches": 4}),            # 6 sequences a rank: micro-batches 2, 2, 1, 1
           ((1, 1, 4), {"micro_batches": 3}),
           ((2, 2, 2), {"zero": 1, "optimizer": "adamw"})]


@pytest.mark.parametrize("sizes, options", LAYOUTS, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple)
                         else ",".join(f"{k}={x}" for k, x in v.items()) or "sgd")
def test_torchrun_layout_equals_one_process(sizes, options, tmp_path):
    start = time.perf_counter()
    got = torchrun_train(*sizes, out=tmp_path, report=True, **options)
    want = one_process(**{k: v for k, v in options.items() if k != "zero"})
    gap = assert_same_run(got, want)
    assert_report_agrees(got["report"])
    print(f"(dp, tp, pp) = {sizes} {options}: worst relative gap {gap:.1e}, {time.perf_counter() - start:.1f} s")


def test_two_nodes_on_one_host_equal_one_process(tmp_path):
    """Two torchrun commands, --nnodes 2 --node-rank 0/1, meeting at 127.0.0.1:PORT (c10d)."""
    got = torchrun_train(2, 2, 1, out=tmp_path, nnodes=2)
    assert_same_run(got, one_process())


def test_three_ranks_three_ways_uneven_micro_batches_and_zero_padding():
    """dp = 3 (ZeRO-1: chunks padded, the last rank's shorter), tp = 3, pp = 3 on one launch."""
    sizes = dict(heads=3, width=24, layers=3, batch=9, micro_batches=2)     # 3 sequences a dp rank: 2 + 1
    argvs = [program_arguments(3, 1, 1, zero=1, **sizes), program_arguments(1, 3, 1, **sizes),
             program_arguments(1, 1, 3, **sizes)]
    runs = launch(capstone_workers.layouts_on_these_ranks, 3, argvs, timeout=120)[0]
    for run in runs:
        assert_same_run(run, one_process(**sizes))


def test_a_tied_embedding_whose_gradient_is_not_summed_drifts():
    """The check above can fail: leave out the sum over the first and last stage and SGD drifts."""
    got = launch(capstone_workers.without_the_tied_sum, 2, program_arguments(1, 1, 2), timeout=60)[0]
    want = one_process()
    assert got["losses"][0] == pytest.approx(want["losses"][0], rel=RTOL)          # the first forward is right
    assert max(abs(a - b) / b for a, b in zip(got["losses"], want["losses"])) > 100 * RTOL


def test_the_mesh_groups_are_init_device_meshs_and_build_groups_makes_them():
    for rank, groups in enumerate(launch(capstone_workers.groups_three_ways, 8, (2, 2, 2), timeout=60)):
        assert "needs 3 processes, but 8 were started" in groups.pop("refused")
        for name, (made, enumerated) in groups.items():
            assert made == enumerated, (rank, name)


def test_a_world_that_does_not_match_is_refused_before_any_group():
    with pytest.raises(ValueError, match="--dp 2 × --tp 2 × --pp 2 = 8 ranks, but 1 processes were started"):
        main(program_arguments(2, 2, 2))
    assert not dist.is_initialized()


@pytest.mark.parametrize("options, words", [
    (dict(tp=4, heads=6, width=36), "--heads 6 do not divide by --tp 4"),
    (dict(pp=3), "--layers 4 do not divide by --pp 3"),
    (dict(dp=3, batch=8), "--batch 8 does not divide by --dp 3"),
    (dict(dp=2, micro_batches=5), "the 4 sequences of a dp rank do not make --micro-batches 5"),
    (dict(zero=2), "--zero must be 0 or 1"),
])
def test_bad_sizes_are_named(options, words, monkeypatch):
    sizes = {k: options.get(k, 1) for k in ("dp", "tp", "pp")}
    monkeypatch.setenv("WORLD_SIZE", str(math.prod(sizes.values())))
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match=words):
        main(program_arguments(**options))
    assert not dist.is_initialized()


def test_a_failing_torchrun_shows_the_ranks_error(tmp_path):
    with pytest.raises(RuntimeError, match="(?s)exited with 1.*ValueError: --steps must be ≥ 1, got 0"):
        torchrun_train(1, 1, 1, steps=0, out=tmp_path, timeout=60)


def processes_running(command_line: bytes) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().replace(b"\0", b" ").strip() == command_line:
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_a_torchrun_past_its_timeout_is_stopped_with_every_rank():
    """torchrun starts its ranks in sessions of their own: they must go too."""
    marker = f"{time.time_ns() % 10 ** 6 + 600}"                     # a sleep nobody else runs
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--no-python", "sleep", marker]
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="ran past its timeout"):
        run_commands([command], timeout=10)
    assert time.perf_counter() - start < 30
    time.sleep(0.5)
    assert processes_running(f"sleep {marker}".encode()) == [], "a rank outlived its torchrun"
