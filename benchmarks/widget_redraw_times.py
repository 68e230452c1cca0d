"""How long each chapter's widget takes to redraw when a learner moves a control.

Every widget builder (found in nnpar_lite.widgets, as the tests find them) is built without
a browser; then each of its controls is moved across its range, a few settings each, and the
redraw (the figure computed and turned into a PNG) is timed. A widget meets its budget when
the median redraw is at most 150 ms, or at most 1 s for a widget that redraws on release
and says it is computing (built with slow=True).

    python benchmarks/widget_redraw_times.py [--settings 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import IPython.display  # noqa: E402

from nnpar_lite.devices import describe_machine  # noqa: E402
from nnpar_lite.widgets import builders  # noqa: E402


def settings(control, count: int) -> list:
    """Up to ``count`` values across a control's range, other than its current one."""
    if getattr(control, "options", None):
        values = [value for _, value in control._options_labels_values] if hasattr(
            control, "_options_labels_values") else list(control.options)
        values = [v[1] if isinstance(v, tuple) else v for v in values]
    elif hasattr(control, "min") and hasattr(control, "max"):
        step = (control.max - control.min) / max(count, 1)
        values = [control.min + i * step for i in range(count + 1)]
        if isinstance(control.value, int):
            values = sorted({int(round(v)) for v in values})
    elif isinstance(control.value, bool):
        values = [not control.value]
    else:
        return []
    values = [v for v in values if v != control.value]
    return values[:: max(1, len(values) // count)][:count]


def redraw_times(builder, count: int) -> tuple[list[float], bool]:
    IPython.display.display = lambda *args, **kwargs: None
    box = builder()
    controls = [c for row in box.children[:-3] for c in row.children]
    slow = getattr(box, "redraws_on_release", False)
    times = []
    for control in controls:
        start_value = control.value
        for value in settings(control, count):
            start = time.perf_counter()
            control.value = value
            times.append(time.perf_counter() - start)
        control.value = start_value
    return times, slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=int, default=6, help="settings per control")
    args = parser.parse_args()
    machine = describe_machine()
    print(f"cpu: {machine['cpu']} ({machine['cores (usable)']} cores usable), torch {machine['torch']}\n")
    print(f"{'widget':<46} {'redraws':>7} {'median ms':>10} {'max ms':>8}  {'on release':>10}  budget")
    for builder in builders():
        times, slow = redraw_times(builder, args.settings)
        if not times:
            continue
        median, budget = statistics.median(times) * 1e3, 1000 if slow else 150
        name = f"{builder.__module__.rsplit('.', 1)[-1]}.{builder.__name__}"
        print(f"{name:<46} {len(times):>7} {median:>10.0f} {max(times) * 1e3:>8.0f}  {'yes' if slow else 'no':>10}  "
              f"≤ {budget} ms: {'meets' if median <= budget else 'OVER'}")


if __name__ == "__main__":
    main()
