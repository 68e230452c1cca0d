"""Step time of nnpar_lite's data parallelism against PyTorch DDP, same processes, same run.

A ~1.6M-parameter MLP (512→1024→1024→10) trains on 2 gloo processes. Each round times a few
steps of each of four contenders, in an order drawn afresh each round: chapter 03's all-reduce after
backward (``allreduce_gradients``), chapter 09's ``DataParallel`` (bucket all-reduces
overlapped with backward), DDP, and DDP again. The script prints, for each, the median of the
per-round ratios against DDP and their spread; DDP against itself shows how much a ratio moves
on this machine with nothing changed. Targets: after backward ≤ 1.10, DataParallel ≤ 1.00.

    python benchmarks/ddp_step_ratio.py [--rounds 30] [--steps-per-round 5] [--batch 64] [--world-size 2]
                                        [--bucket-mb 25]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnpar_lite.devices import describe_machine  # noqa: E402
from nnpar_lite.distributed import launch  # noqa: E402
from nnpar_lite.experiments.communication_efficiency import time_dataparallel_against_ddp  # noqa: E402

TARGETS = {"after backward": 1.10, "DataParallel": 1.00, "DDP again": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds (at least 9)")
    parser.add_argument("--batch", type=int, default=64, help="samples per rank and step")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--bucket-mb", type=float, default=25.0)
    parser.add_argument("--steps-per-round", type=int, default=5, help="steps of each contender per round")
    args = parser.parse_args()
    if args.rounds < 9:
        parser.error("--rounds must be at least 9")
    report = launch(time_dataparallel_against_ddp, args.world_size, (512, 1024, 1024, 10), args.batch, args.rounds,
                    args.bucket_mb, args.steps_per_round, backend="gloo", timeout=1800)[0]
    machine = describe_machine()
    print(f"CPU                   : {machine.get('cpu')}, {machine.get('cores (usable)')} usable cores")
    print(f"torch                 : {machine.get('torch')}")
    print(f"parameters            : {report['parameters']:,}")
    print(f"ranks, batch per rank : {args.world_size}, {args.batch}; bucket cap {args.bucket_mb:g} MiB; "
          f"{args.rounds} rounds of {args.steps_per_round} steps each")
    print(f"median step, DDP      : {np.median(report['times']['DDP']) * 1e3:.1f} ms")
    print(f"{'against DDP':<22}: median ratio   rounds from … to (10th–90th percentile)   target")
    for name, ratios in report["ratios"].items():
        low, high = np.percentile(ratios, [10, 90])
        target = TARGETS[name]
        verdict = "" if target is None else f"≤ {target:.2f} {'met' if np.median(ratios) <= target else 'missed'}"
        print(f"  {name:<20}: {np.median(ratios):.3f}          {min(ratios):.2f} … {max(ratios):.2f} "
              f"({low:.2f}–{high:.2f})          {verdict}")
    print(f"largest parameter difference DataParallel − DDP after {(args.rounds + 2) * args.steps_per_round} steps: "
          f"{report['max difference from DDP']:.1e}")


if __name__ == "__main__":
    main()
