"""Every chapter's widget builds without a browser, and moving its first control redraws it."""

import matplotlib
import pytest

from nnpar_lite.widgets import article_code, data_parallel, model_averaging, model_split, scaling, start_here

BUILDERS = [start_here.loss_average_widget, article_code.training_widget, data_parallel.gradient_comparison_widget,
            model_averaging.compare_schemes_widget, model_split.pipeline_widget, model_split.halo_widget,
            scaling.laws_widget, scaling.heterogeneous_widget, scaling.memory_widget]


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: f"{b.__module__.rsplit('.', 1)[-1]}.{b.__name__}")
def test_widget_redraws_when_its_first_control_moves(builder, monkeypatch):
    matplotlib.use("Agg")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    box = builder()
    assert len(shown) == 2  # the figure, then the box
    control = box.children[0].children[0]
    if getattr(control, "options", None):
        control.index = (control.index + 1) % len(control.options)
    elif hasattr(control, "base"):
        control.value = control.value * 2
    else:
        control.value = control.value + control.step
    assert len(shown) == 3 and isinstance(shown[-1], matplotlib.figure.Figure)
