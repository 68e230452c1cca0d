"""A progress bar for long loops in the chapters: live while it runs, one line of text after.

The line it ends as ("4 workers: ████████████████████ 150/150") holds no rate and no time,
so a chapter stored with it reads the same on every machine. In a notebook the live bar is
an ipywidgets progress bar shown with that line as its plain-text form; when the loop
ends, the display is replaced by the line. Outside a notebook it shows nothing.

Why not tqdm, the field's usual bar: ``tqdm.auto`` in a notebook stores the widget's text form
as it was when the bar was *created* (0 %, with an elapsed time and a rate that differ on every
machine), so a stored chapter would not hold under nbval; this bar stores its final state,
with neither, in twenty lines of ipywidgets, which the chapters use anyway.
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


def progress(iterable: Iterable[T], description: str = "", total: int | None = None) -> Iterator[T]:
    """Yield from ``iterable`` while a bar counts the items."""
    total = len(iterable) if total is None else total
    final = f"{description}: {'█' * 20} {total}/{total}"
    if not _in_notebook():
        yield from iterable
        return
    import ipywidgets
    from IPython.display import display

    bar = ipywidgets.IntProgress(value=0, max=max(total, 1), description=description)
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": bar.model_id, "version_major": 2,
                                                          "version_minor": 0}, "text/plain": final}
    handle = display(view, raw=True, display_id=True)
    try:
        for done, item in enumerate(iterable, start=1):
            yield item
            bar.value = done
    finally:
        bar.close()
        handle.update({"text/plain": f"{description}: {'█' * (20 * bar.value // max(total, 1))}"
                                     f"{'░' * (20 - 20 * bar.value // max(total, 1))} {bar.value}/{total}"}, raw=True)
