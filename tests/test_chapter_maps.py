"""Every chapter is on every map: both READMEs (tests/test_packaging.py), both chapter 00s, and
the chapter before it, which links it as the next one. A new chapter fails here until listed."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))


def markdown(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("edition", [NOTEBOOKS, NOTEBOOKS / "zh"], ids=["en", "zh"])
def test_chapter_00_maps_every_chapter(edition):
    start = markdown(edition / "00_start_here.ipynb")
    missing = [c.name for c in CHAPTERS[1:] if f"]({c.name})" not in start]
    assert not missing, f"{edition.name}/00_start_here.ipynb's chapter map lacks {missing}"


@pytest.mark.parametrize("edition", [NOTEBOOKS, NOTEBOOKS / "zh"], ids=["en", "zh"])
@pytest.mark.parametrize("index", range(1, len(CHAPTERS) - 1), ids=lambda i: CHAPTERS[i].stem[:2])
def test_each_chapter_links_the_next(edition, index):
    following = CHAPTERS[index + 1].name
    assert f"]({following})" in markdown(edition / CHAPTERS[index].name), \
        f"{edition.name}/{CHAPTERS[index].name} does not link the next chapter, {following}"
