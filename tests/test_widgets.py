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


# ---------------------------------------------------------------- the figures' language
import inspect  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Text  # noqa: E402

import nnpar_lite.widgets as widgets_package  # noqa: E402
from nnpar_lite.widgets import caption, chinese_figures, cjk_font, figure_text  # noqa: E402
from widget_figures import CASES, FIGURES, figure  # noqa: E402

CJK = re.compile(r"[\u4e00-\u9fff]")
# Names a Chinese figure keeps in English: methods, papers' names, units, code, a process's rank.
KEPT = {"GPipe", "PowerSGD", "ZeRO", "FSDP", "DataParallel", "Megatron", "Ulysses", "Amdahl", "Gustafson", "Adam",
        "SGD", "GFLOP", "GiB", "KiB", "MiB", "TiB", "conv2d", "all_reduce", "dist", "gloo", "tanh", "softmax", "rank",
        "wte", "wpe", "ln_f", "head", "float64", "bf16", "fp32", "epoch", "sum", "mean", "mixed", "top", "sgd",
        "adamw", "embedding", "model", "skew", "GPU", "GPT", "torch", "sin", "rtol", "F1B", "f1b", "gpipe", "IID"}
DRAWN = {**FIGURES, **CASES}
needs_font = pytest.mark.skipif(cjk_font() is None, reason="no CJK font installed (Debian: fonts-noto-cjk)")


def english_words(text: str) -> list[str]:
    """The English words of ``text`` (three letters or more) that a Chinese text does not keep
    (mathtext's commands, \\mathdefault of a log axis's ticks, are not words)."""
    return [w for w in re.findall(r"[A-Za-z][A-Za-z0-9_]{2,}", re.sub(r"\\[A-Za-z]+", "", text)) if w not in KEPT]


def drawn(make, caplog) -> tuple[list[str], list[str], list[str]]:
    """Draw a figure as the first of a fresh kernel (matplotlib's defaults): its texts, the texts
    of its titles, axis labels and legends, and what matplotlib said of glyphs it lacked."""
    with matplotlib.rc_context(), warnings.catch_warnings(record=True) as said, caplog.at_level(logging.WARNING):
        matplotlib.rcdefaults()
        warnings.simplefilter("always")
        fig = figure(make)
        fig.canvas.draw()
    texts = [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    named = figure_text(fig)
    plt.close(fig)
    missing = [str(w.message) for w in said if "missing from" in str(w.message)]
    missing += [r.getMessage() for r in caplog.records if "does not have a glyph" in r.getMessage()]
    return texts, named, missing


def test_every_figure_function_is_drawn_in_both_editions():
    """widget_figures.FIGURES calls every public figure function of every widget module."""
    found = {f"{name}.{fn}" for name, module in _widget_modules()
             for fn, f in inspect.getmembers(module, inspect.isfunction)
             if f.__module__ == module.__name__ and fn.endswith(("_figure", "_diagram"))}
    assert found == set(FIGURES), f"figure functions not in tests/widget_figures.py: {sorted(found - set(FIGURES))}"


def _widget_modules():
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(widgets_package.__path__):
        yield module.name, importlib.import_module(f"nnpar_lite.widgets.{module.name}")


@needs_font
@pytest.mark.parametrize("name", DRAWN)
def test_a_chinese_figure_speaks_chinese_with_no_missing_glyph(name, monkeypatch, caplog):
    """In the Chinese edition with a CJK font, a figure's titles, axis labels and legends are in
    Chinese (a diagram's texts, when it has none of those), no text keeps an English word
    (names aside), and no glyph is missing: no boxes."""
    monkeypatch.setenv("NNPAR_LANG", "zh")
    texts, named, missing = drawn(DRAWN[name], caplog)
    assert not missing, missing
    assert any(CJK.search(t) for t in named or texts), f"{name}: no Chinese in {named or texts}"   # a diagram: its texts
    english = {t: english_words(t) for t in texts if english_words(t)}
    assert not english, f"{name} keeps English: {english}"


@pytest.mark.parametrize("name", DRAWN)
def test_an_english_figure_and_a_chinese_one_without_a_font_are_in_english(name, monkeypatch, caplog):
    texts, named, missing = drawn(DRAWN[name], caplog)
    assert not missing and texts and not [t for t in texts if CJK.search(t)], texts
    monkeypatch.setenv("NNPAR_LANG", "zh")
    monkeypatch.setattr(widgets_package, "cjk_font", lambda: None)
    assert drawn(DRAWN[name], caplog)[0] == texts


def test_a_caption_follows_the_edition_and_the_font(monkeypatch):
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        assert caption("loss", "损失") == "loss" and matplotlib.rcParams["font.family"] == ["sans-serif"]
        monkeypatch.setenv("NNPAR_LANG", "zh")
        monkeypatch.setattr(widgets_package, "cjk_font", lambda: None)
        assert not chinese_figures() and caption("loss", "损失") == "loss"
        assert matplotlib.rcParams["font.family"] == ["sans-serif"], "no font: matplotlib's fonts stay as they were"
        monkeypatch.setattr(widgets_package, "cjk_font", lambda: "Noto Sans CJK SC")
        assert chinese_figures() and caption("loss", "损失") == "损失"
        assert matplotlib.rcParams["font.family"] == ["Noto Sans CJK SC", "DejaVu Sans"]
        assert matplotlib.rcParams["font.sans-serif"][0] == "Noto Sans CJK SC"


@needs_font
def test_the_cjk_font_found_draws_chinese():
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    path = font_manager.findfont(cjk_font(), fallback_to_default=False)
    assert all(FT2Font(path).get_char_index(ord(c)) for c in "计算单元的梯度")


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: f"{b.__module__.rsplit('.', 1)[-1]}.{b.__name__}")
def test_a_widgets_controls_and_figure_follow_the_editions_language(builder, monkeypatch):
    """Descriptions and the options shown to the learner are in Chinese in the Chinese edition
    (symbols and names aside), in English in the English edition; so is the text of the figure
    the widget shows, which it reports as ``figure_text`` (Chinese where a CJK font is found)."""
    matplotlib.use("Agg")
    monkeypatch.setattr("IPython.display.display", lambda obj: None)
    for edition in ("en", "zh"):
        monkeypatch.setenv("NNPAR_LANG", edition)
        with matplotlib.rc_context():
            box = builder()
        shown = [text for row in box.children[:-3] for control in row.children for text in _shown(control)]
        in_chinese = edition == "zh" and chinese_figures()
        assert box.figure_text and any(CJK.search(t) for t in box.figure_text) == in_chinese, box.figure_text
        assert not [t for t in shown if CJK.search(t)] if edition == "en" else not \
            [t for t in shown if english_words(t)], f"{edition}: {shown}"


def _shown(control) -> list[str]:
    labels = list(getattr(control, "_options_labels", ()))
    return [control.description] + [str(label) for label in labels]
