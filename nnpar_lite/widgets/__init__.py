"""One widget builder per chapter. The callbacks are plain functions that return figures,
so tests can call them without a browser; only the builders touch ipywidgets.

A figure's text is in the edition's language: Chinese in the Chinese edition when matplotlib
can draw Chinese, English otherwise.

matplotlib draws a character its font lacks as an empty box, and its default font, DejaVu Sans,
has no Chinese. So a figure's text is Chinese only where a CJK font is installed (Debian and
Ubuntu: ``fonts-noto-cjk``; macOS and Windows ship one); without one the Chinese edition's
figures stay in English, readable, never boxes. :func:`caption` decides, and puts the CJK font
first in matplotlib's fonts. Text made after that falls back to DejaVu Sans for the few symbols
the CJK font lacks (✔, ⌈, ⁻⁵); an axis's title and labels, made with the axes before the first
caption, do not, so their Chinese captions use none of those (tests/test_widgets.py draws every
figure in Chinese and fails on a missing glyph).

Controls and printed text are shown by the browser, which has fonts of its own: they follow
the edition with :func:`nnpar_lite.language.say` alone.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

from ..language import language, say

# Fonts that draw simplified Chinese, the most common first; Noto Sans CJK SC is fonts-noto-cjk's.
CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "Source Han Sans CN", "Noto Sans SC", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB", "Heiti SC", "SimHei",
             "Noto Sans CJK JP", "Noto Sans CJK TC")
# File names of CJK fonts, for a font cache built before the font was installed.
CJK_FILE = re.compile(r"cjk|sourcehan|wqy|wenquanyi|yahei|msyh|pingfang|hiragino|heiti|simhei|notosanssc", re.I)
SAMPLE = "中文图标题轮"    # characters every figure of the Chinese edition needs


@functools.lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The name of an installed font that draws Chinese, or None (looked up once)."""
    from matplotlib import font_manager

    for attempt in range(2):
        known = {entry.name: entry.fname for entry in font_manager.fontManager.ttflist}
        found = next((name for name in CJK_FONTS if name in known and _draws(known[name])), None)
        if found or attempt:
            return found
        # matplotlib's font list is cached once: a font installed since is on disk but not in it.
        for path in font_manager.findSystemFonts():
            if CJK_FILE.search(path) and path not in known.values():
                font_manager.fontManager.addfont(path)
    return None


def _draws(path: str) -> bool:
    """Does the font file at ``path`` hold glyphs for every character of :data:`SAMPLE`?"""
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(path)
    except (OSError, RuntimeError, ValueError):
        return False
    return all(font.get_char_index(ord(c)) for c in SAMPLE)


def chinese_figures() -> bool:
    """Are figures drawn in Chinese: the Chinese edition, with a CJK font installed?"""
    return language() == "zh" and cjk_font() is not None


def caption(english: str, chinese: str) -> str:
    """A figure's text (title, axis label, legend entry, annotation) in the edition's language:
    ``chinese`` where :func:`chinese_figures`, after putting the CJK font first in matplotlib's
    font families; ``english`` otherwise."""
    if not chinese_figures():
        return english
    _use_font(cjk_font())
    return chinese


def _use_font(name: str) -> None:
    """Draw text with the font ``name``. Text made from now on lists ``name`` first and the
    sans-serif font before it second, which draws a character ``name`` lacks (✔, ⁻⁵);
    text made already (an axis's title and labels, made with the axes) names the sans-serif
    family, read when it is drawn: ``name`` heads that list too."""
    import matplotlib

    sans = [f for f in matplotlib.rcParams["font.sans-serif"] if f != name]
    if matplotlib.rcParams["font.sans-serif"][:1] != [name]:
        matplotlib.rcParams["font.sans-serif"] = [name] + sans
    if matplotlib.rcParams["font.family"][:1] != [name]:
        matplotlib.rcParams["font.family"] = [name] + sans[:1]


MEMORY_PARTS = {"parameters": "参数", "gradients": "梯度", "optimizer state": "优化器状态", "activations": "激活值",
                "total": "合计"}


def memory_part(part: str) -> str:
    """What a part of training memory is called in the figure's language (chapters 07, 08, 12)."""
    return caption(part, MEMORY_PARTS.get(part, part))


def figure_text(fig) -> list[str]:
    """What a figure's titles, axis labels and legends say (the words a reader reads first):
    the widget tests and the browser suite check their language."""
    import matplotlib.legend

    texts = [fig.get_suptitle()] + [t.get_text() for legend in fig.findobj(matplotlib.legend.Legend)
                                    for t in legend.get_texts()]
    for ax in fig.axes:
        texts += [ax.get_title(loc) for loc in ("left", "center", "right")] + [ax.get_xlabel(), ax.get_ylabel()]
    return [t for t in texts if t.strip()]


def interactive_figure(controls: dict, layout: list[list[str]], draw: Callable, *, slow: bool = False):
    """Rows of ``controls`` (name → ipywidget) above the figure ``draw(**values)`` makes for the
    controls' current values, redrawn whenever one of them changes; what ``draw`` prints shows
    above the figure. The figure is a PNG image widget, so a redraw replaces one picture and
    nothing else in the outputs; ``box.figure_text`` is what it says (:func:`figure_text`).

    ``slow=True`` is for a ``draw`` that takes longer than about 150 ms: sliders then
    redraw when released, not at every step of a drag, and a label says "computing…"
    (计算中…) while the figure is being made."""
    import contextlib
    import html
    import io

    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    picture, printed, status, shown = widgets.Image(format="png"), widgets.HTML(""), widgets.Label(""), []

    def redraw(*_):
        status.value = say("computing…", "计算中…") if slow else ""
        text, png = io.StringIO(), io.BytesIO()
        with contextlib.redirect_stdout(text):
            fig = draw(**{name: control.value for name, control in controls.items()})
        fig.savefig(png, format="png", bbox_inches="tight")
        shown[:] = figure_text(fig)
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
    box.redraws_on_release, box.figure_text = slow, shown
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
