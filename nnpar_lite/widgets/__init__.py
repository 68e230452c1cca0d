"""One widget builder per chapter. The callbacks are plain functions that return figures,
so tests can call them without a browser; only the builders touch ipywidgets."""

from __future__ import annotations

from typing import Callable


def interactive_figure(controls: dict, layout: list[list[str]], draw: Callable, *, slow: bool = False):
    """Rows of ``controls`` (name → ipywidget) above the figure ``draw(**values)`` makes for the
    controls' current values, redrawn whenever one of them changes; what ``draw`` prints shows
    above the figure. The figure is shown as a PNG image widget, so a redraw replaces one
    picture and nothing else in the notebook's outputs.

    ``slow=True`` is for a ``draw`` that takes longer than about 150 ms: sliders then
    redraw when released, not at every step of a drag, and a label says "computing…"
    while the figure is being made."""
    import contextlib
    import html
    import io

    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    picture, printed, status = widgets.Image(format="png"), widgets.HTML(""), widgets.Label("")

    def redraw(*_):
        status.value = "computing…" if slow else ""
        text, png = io.StringIO(), io.BytesIO()
        with contextlib.redirect_stdout(text):
            fig = draw(**{name: control.value for name, control in controls.items()})
        fig.savefig(png, format="png", bbox_inches="tight")
        plt.close(fig)  # drawn once, into the picture; closed so pyplot does not show it again
        printed.value = f"<pre>{html.escape(text.getvalue())}</pre>" if text.getvalue() else ""
        picture.value = png.getvalue()
        status.value = ""

    for control in controls.values():
        if slow and "continuous_update" in control.trait_names():
            control.continuous_update = False
        control.observe(redraw, "value")
    redraw()
    box = widgets.VBox([widgets.HBox([controls[name] for name in row]) for row in layout] + [status, printed, picture])
    box.redraws_on_release = slow
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
