"""How close `aggregate_gradients(..., out=)` comes to the machine's copy bandwidth.

For K workers of S bytes each, aggregation reads K·S and writes S, so its
effective bandwidth is (K+1)·S / time. A plain copy into a reused buffer moves
2·S (read + write) in its time; that is the baseline, measured in the same run.
Also printed: the speed-up over `torch.stack(grads).mean(0)`, which reads and
writes everything twice and allocates K·S of scratch.

    python benchmarks/formulas_bandwidth.py            # CPU, and CUDA when present
    python benchmarks/formulas_bandwidth.py --device cpu --mb 64 --workers 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nnpar_lite import aggregate_gradients, available_devices, synchronize


def median_seconds(fn, device, repeats: int) -> float:
    fn()  # warm-up: page faults, allocator, kernel caches
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(device: torch.device, workers: int, megabytes: float, repeats: int) -> dict:
    numel = int(megabytes * 2**20) // 4
    gen = torch.Generator(device="cpu").manual_seed(0)
    grads = [torch.randn(numel, generator=gen).to(device) for _ in range(workers)]
    out = torch.empty(numel, device=device)
    source, copy_buffer = grads[0], torch.empty(numel, device=device)
    nbytes = numel * 4

    t_copy = median_seconds(lambda: copy_buffer.copy_(source), device, repeats)
    t_ours = median_seconds(lambda: aggregate_gradients(grads, out=out), device, repeats)
    t_fresh = median_seconds(lambda: aggregate_gradients(grads), device, repeats)
    t_stack = median_seconds(lambda: torch.stack(grads).mean(0), device, repeats)
    assert torch.allclose(out, torch.stack(grads).mean(0), rtol=1e-5, atol=1e-6)

    copy_bw = 2 * nbytes / t_copy
    ours_bw = (workers + 1) * nbytes / t_ours
    fresh_bw = (workers + 1) * nbytes / t_fresh
    return {
        "device": str(device), "K": workers, "MB per worker": megabytes,
        "copy GB/s": copy_bw / 1e9, "out= GB/s": ours_bw / 1e9,
        "out= / copy": ours_bw / copy_bw, "fresh output / copy": fresh_bw / copy_bw,
        "speed-up over stack().mean(0)": t_stack / t_ours,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", help="cpu or cuda (default: every device present)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--mb", type=float, default=64.0, help="megabytes of float32 per worker")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    devices = [torch.device(d) for d in args.device] if args.device else available_devices()
    targets = {"cpu": 0.75, "cuda": 0.85}
    for device in devices:
        row = measure(device, args.workers, args.mb, args.repeats)
        for key, value in row.items():
            print(f"{key:>32}: {value:.3f}" if isinstance(value, float) else f"{key:>32}: {value}")
        target = targets[device.type]
        verdict = "meets" if row["out= / copy"] >= target else "BELOW"
        print(f"{'target':>32}: {target} of copy bandwidth ({verdict})\n")


if __name__ == "__main__":
    main()
