"""Step time of nnpar_lite's allreduce_gradients against PyTorch DDP, same processes, same run.

A ~1.6M-parameter MLP (512→1024→1024→10) trains on 2 gloo processes; each round
takes one step with each (order alternating), and the script prints the median
of the per-round ratios ours / DDP. Target: at most 1.10.

    python benchmarks/ddp_step_ratio.py [--rounds 30] [--batch 64] [--world-size 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnpar_lite.data_parallel import time_against_ddp  # noqa: E402
from nnpar_lite.distributed import launch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64, help="samples per rank and step")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--bucket-mb", type=float, default=25.0)
    args = parser.parse_args()
    reports = launch(time_against_ddp, args.world_size, (512, 1024, 1024, 10), args.batch, args.rounds,
                     args.bucket_mb, backend="gloo", timeout=600)
    r = reports[0]
    print(f"parameters            : {r['parameters']:,}")
    print(f"ranks, batch per rank : {args.world_size}, {args.batch}")
    print(f"median step, ours     : {r['ours'] * 1e3:.1f} ms")
    print(f"median step, DDP      : {r['ddp'] * 1e3:.1f} ms")
    print(f"median ratio ours/DDP : {r['median ratio']:.3f}   (target ≤ 1.10)")
    print(f"largest parameter difference from DDP after {args.rounds + 3} steps: {r['max difference']:.2e}")


if __name__ == "__main__":
    main()
