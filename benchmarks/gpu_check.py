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


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here")
        return 1
    from benchmarks.formulas_bandwidth import measure

    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}\n")
    code, summary, seconds = run_tests()
    rows = [("CUDA tests", summary, f"{seconds:.0f} s")]
    for device in ("cuda", "cpu"):
        r = measure(torch.device(device), workers=4, megabytes=64, repeats=20)
        target = 0.85 if device == "cuda" else 0.75
        rows.append((f"aggregate_gradients out= / copy ({device})", f"{r['out= / copy']:.3f}",
                     f"target {target}; copy {r['copy GB/s']:.0f} GB/s"))
        rows.append((f"speed-up over stack().mean(0) ({device})", f"{r['speed-up over stack().mean(0)']:.2f}x", ""))
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<28} {note}")
    return code


if __name__ == "__main__":
    sys.exit(main())
