"""One widget builder per chapter. The callbacks are plain functions that return figures,
so tests can call them without a browser; only the builders touch ipywidgets."""

from __future__ import annotations

from typing import Callable


def interactive_figure(controls: dict, layout: list[list[str]], draw: Callable, *, slow: bool = False):
    """Rows of ``controls`` (name → ipywidget) above an output area that shows
    ``draw(**values)``, the figure for the controls' current values, redrawn whenever
    one of them changes. Anything ``draw`` prints appears above the figure.

    ``slow=True`` is for a ``draw`` that takes longer than about 150 ms: sliders then
    redraw when released, not at every step of a drag, and a label says "computing…"
    while the figure is being made."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    out, status = widgets.Output(), widgets.Label("")

    def redraw(*_):
        status.value = "computing…" if slow else ""
        with out:
            out.clear_output(wait=True)
            fig = draw(**{name: control.value for name, control in controls.items()})
            display(fig)
            plt.close(fig)  # shown once, in the output area; closed so pyplot does not show it again
        status.value = ""

    for control in controls.values():
        if slow and "continuous_update" in control.trait_names():
            control.continuous_update = False
        control.observe(redraw, "value")
    redraw()
    box = widgets.VBox([widgets.HBox([controls[name] for name in row]) for row in layout] + [status, out])
    display(box)
    return box


def builders() -> list[Callable]:
    """Every widget builder of every chapter: the public functions named ``*_widget`` in this
    package's modules. The widget and browser tests find a new chapter's widget here."""
    import importlib
    import inspect
    import pkgutil

    found = []
    for module in pkgutil.iter_modules(__path__, __name__ + "."):
        for name, fn in inspect.getmembers(importlib.import_module(module.name), inspect.isfunction):
            if name.endswith("_widget") and fn.__module__ == module.name:
                found.append(fn)
    return found
