"""How close `aggregate_gradients(..., out=)` comes to the machine's copy bandwidth.

For K workers of S bytes each, aggregation reads K·S and writes S, so its effective
bandwidth is (K+1)·S / time. A plain copy into a reused buffer moves 2·S (read + write);
that is the baseline, measured in the same run. Each round times every contender once,
in turn (the order rotating), so that all see the same machine load; the printed ratios
are medians of the per-round ratios. Also printed, measured in the same rounds:

* ``out=`` with ``check_finite=False``: the same arithmetic without the NaN/Inf check (a NaN
  or Inf in any input makes the output NaN or Inf, so the check reads each block of the output
  once more while it is still in cache), which a training loop that validates its gradients
  elsewhere may skip;
* `torch.stack(grads).mean(0)`, which reads and writes everything twice and allocates K·S.

    python benchmarks/formulas_bandwidth.py            # CPU, and CUDA when present
    python benchmarks/formulas_bandwidth.py --device cpu --mb 64 --workers 4 --rounds 21 --threads 1

The target is measured on one thread (``--threads 1``, the default): one core's share of memory
bandwidth, which more threads would only divide differently. The block size the formulas use
is read from this machine's cache (printed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnpar_lite import aggregate_gradients, available_devices, cache, synchronize  # noqa: E402
from nnpar_lite.devices import describe_machine  # noqa: E402

TARGET, FLOOR = 0.80, 0.70   # of copy bandwidth: the goal, and the least acceptable


def seconds(fn, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def rounds_of(contenders: dict, device, rounds: int) -> dict[str, list[float]]:
    """Seconds of each contender in each round. The order rotates every round, since whoever
    runs right after another's writes pays for some of them."""
    names, times = list(contenders), {name: [] for name in contenders}
    for round_ in range(rounds + 2):                    # two warm-up rounds: page faults, allocator
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            t = seconds(contenders[name], device)
            if round_ >= 2:
                times[name].append(t)
    return times


def measure(device: torch.device, workers: int, megabytes: float, rounds: int) -> dict:
    numel = int(megabytes * 2**20) // 4
    gen = torch.Generator(device="cpu").manual_seed(0)
    grads = [torch.randn(numel, generator=gen).to(device) for _ in range(workers)]
    out, copy_buffer, c = torch.empty(numel, device=device), torch.empty(numel, device=device), 1 / workers

    # Two groups, each timed against copies in its own rounds: the allocating contenders (a
    # fresh output, stack) hand large blocks back to the operating system, which slows
    # whoever runs next.
    copy = lambda: copy_buffer.copy_(grads[0])  # noqa: E731
    reused = rounds_of({"copy": copy, "out=": lambda: aggregate_gradients(grads, out=out),
                        "out=, check_finite=False": lambda: aggregate_gradients(grads, out=out, check_finite=False)},
                       device, rounds)
    allocating = rounds_of({"copy": copy, "fresh output": lambda: aggregate_gradients(grads),
                            "stack().mean(0)": lambda: torch.stack(grads).mean(0),
                            "out=": lambda: aggregate_gradients(grads, out=out)}, device, rounds)
    aggregate_gradients(grads, out=out)
    assert torch.allclose(out, torch.stack(grads).mean(0), rtol=1e-5, atol=1e-6)

    def ratio_to_copy(times, name):   # (K+1)·S moved by the contender against 2·S by the copy, per round
        return statistics.median((workers + 1) / 2 * tc / t for t, tc in zip(times[name], times["copy"]))

    return {"device": str(device), "K": workers, "MB per worker": megabytes, "rounds": rounds,
            "copy GB/s": 2 * numel * 4 / statistics.median(reused["copy"]) / 1e9,
            "out= / copy": ratio_to_copy(reused, "out="),
            "out=, check_finite=False / copy": ratio_to_copy(reused, "out=, check_finite=False"),
            "fresh output / copy": ratio_to_copy(allocating, "fresh output"),
            "speed-up over stack().mean(0)": statistics.median(
                s / t for s, t in zip(allocating["stack().mean(0)"], allocating["out="]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", help="cpu or cuda (default: every device present)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--mb", type=float, default=64.0, help="megabytes of float32 per worker")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = describe_machine()
    print(f"{'cpu':>32}: {machine['cpu']} ({machine['cores (usable)']} cores usable), torch {machine['torch']}, "
          f"{args.threads} thread(s)")
    llc, block = cache.last_level_cache_bytes(), cache.block_elements(args.workers, 4)
    print(f"{'cache blocks':>32}: last-level cache {llc} bytes -> blocks of {block} float32 elements")
    devices = [torch.device(d) for d in args.device] if args.device else available_devices()
    for device in devices:
        row = measure(device, args.workers, args.mb, args.rounds)
        for key, value in row.items():
            print(f"{key:>32}: {value:.3f}" if isinstance(value, float) else f"{key:>32}: {value}")
        for name in ("out= / copy", "out=, check_finite=False / copy"):
            verdict = "meets the target" if row[name] >= TARGET else \
                "meets the floor" if row[name] >= FLOOR else "BELOW the floor"
            print(f"{name:>32}: {verdict} ({TARGET} of copy bandwidth, at least {FLOOR})")
        print()


if __name__ == "__main__":
    main()
