"""On a machine with CUDA: the CUDA tests and the GPU benchmarks in one call, then a short table.

    python benchmarks/gpu_check.py

Needs torch, numpy, matplotlib and pytest only (no Jupyter). Exits non-zero when a
test fails or there is no CUDA device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# Test files that need no Jupyter or hypothesis; their device-parametrised tests run on CUDA here.
TEST_FILES = ["tests/test_formulas.py", "tests/test_bad_input.py", "tests/test_data_and_devices.py",
              "tests/test_model_split.py"]


def run_tests() -> tuple[int, str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TEST_FILES],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    if proc.returncode != 0:
        print(proc.stdout[-6000:], proc.stderr[-3000:])
    return proc.returncode, summary, time.perf_counter() - start


def nccl_launch() -> tuple[str, str, str]:
    """A worker marked on_rank_device, launched on one rank: NCCL, its tensor on cuda:0."""
    from nnpar_lite.distributed import backend_for, launch
    from nnpar_lite.experiments.processes import whoami

    try:
        report = launch(whoami, 1, timeout=120)[0]
        ok = report["backend"] == "nccl" == backend_for(whoami, 1) and report["sum of ranks"] == 0.0
        return ("launch(whoami, 1) on the GPU", "NCCL ✔" if ok else f"✘ {report}", "")
    except Exception as error:  # report, do not stop the other checks
        return ("launch(whoami, 1) on the GPU", f"✘ {type(error).__name__}", str(error).splitlines()[0][:60])


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here")
        return 1
    from benchmarks.formulas_bandwidth import measure

    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}\n")
    code, summary, seconds = run_tests()
    rows = [("CUDA tests", summary, f"{seconds:.0f} s")]
    rows.append(nccl_launch())
    for device in ("cuda", "cpu"):
        r = measure(torch.device(device), workers=4, megabytes=64, rounds=15)
        target = 0.85 if device == "cuda" else 0.80
        rows.append((f"aggregate_gradients out= / copy ({device})", f"{r['out= / copy']:.3f}",
                     f"target {target}; copy {r['copy GB/s']:.0f} GB/s"))
        rows.append((f"speed-up over stack().mean(0) ({device})", f"{r['speed-up over stack().mean(0)']:.2f}x", ""))
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<28} {note}")
    return code


if __name__ == "__main__":
    sys.exit(main())
