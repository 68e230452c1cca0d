"""Every chapter's widget builds without a browser, and moving its first control redraws it."""

import matplotlib
import pytest

from nnpar_lite.widgets import builders

BUILDERS = builders()      # found, not listed: a new chapter's widget is tested without editing this file


def test_every_chapter_module_has_a_widget():
    import pkgutil

    import nnpar_lite.widgets as package
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert modules <= {b.__module__.rsplit(".", 1)[-1] for b in BUILDERS}, "a widget module without a *_widget"


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: f"{b.__module__.rsplit('.', 1)[-1]}.{b.__name__}")
def test_widget_redraws_when_its_first_control_moves(builder, monkeypatch):
    matplotlib.use("Agg")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    box = builder()
    assert shown == [box]
    picture = box.children[-1]
    before = bytes(picture.value)
    assert before.startswith(b"\x89PNG"), "the figure is drawn as a PNG at once"
    control = box.children[0].children[0]
    if getattr(control, "options", None):
        control.index = (control.index + 1) % len(control.options)
    elif hasattr(control, "base"):
        control.value = control.value * 2
    else:
        control.value = control.value + control.step
    assert bytes(picture.value).startswith(b"\x89PNG") and bytes(picture.value) != before, "moving the control redrew nothing"
