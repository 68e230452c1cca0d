"""Run notebooks under nbval as a one-core machine would: each chapter confined to one CPU, one
thread, torch's scalar kernels (ATEN_CPU_CAPABILITY=default). Where two CPUs are free, two
chapters run at once, each pinned to a CPU of its own, so the profile takes half the time and
every chapter still sees one core.

    python scripts/one_core_profile.py notebooks/[0-9]*.ipynb -- <extra pytest arguments>
"""

from __future__ import annotations

import os
import subprocess
import sys


def pinned(cpu: int | None):
    """A preexec function that confines the child (and every rank it starts) to ``cpu``."""
    return None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))


def main(argv: list[str]) -> int:
    notebooks, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    cpus = sorted(os.sched_getaffinity(0))[:2] if hasattr(os, "sched_getaffinity") else [None]
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(OMP_NUM_THREADS="1", ATEN_CPU_CAPABILITY="default")
    halves = [notebooks[i::len(cpus)] for i in range(len(cpus))]
    runs = [subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *extra, *half], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=pinned(cpu))
            for cpu, half in zip(cpus, halves) if half]
    codes = []
    for cpu, run in zip(cpus, runs):
        output, _ = run.communicate()
        print(f"--- one core (CPU {cpu}): {' '.join(os.path.basename(n) for n in run.args if n.endswith('.ipynb'))}")
        print(output, end="")
        codes.append(run.returncode)
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
