"""The two editions share one code: every English chapter has a Chinese twin whose code cells
are the same, character for character, in the same cell structure; and the twin speaks Chinese."""

import copy
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("editions", ROOT / "scripts" / "editions.py")
editions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(editions)

CHAPTERS = editions.chapters()
CJK = re.compile(r"[\u4e00-\u9fff]")
MISTRANSLATIONS = {"渐变": "梯度 (gradient)", "培训": "训练 (training)", "玩具网": "toy network: 小型网络"}


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_a_chinese_twin_with_the_same_code(path):
    twin = editions.CHINESE / path.name
    assert twin.exists(), f"no notebooks/zh/{path.name}"
    english, chinese = nbformat.read(path, as_version=4), nbformat.read(twin, as_version=4)
    assert editions.differences(english, chinese) == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_twin_speaks_chinese(path):
    chinese = nbformat.read(editions.CHINESE / path.name, as_version=4)
    markdown = [c.source for c in chinese.cells if c.cell_type == "markdown"]
    translated = [m for m in markdown if CJK.search(m)]
    assert len(translated) >= 0.9 * len(markdown), f"{len(markdown) - len(translated)} markdown cells untranslated"
    text = "\n".join(markdown)
    for wrong, right in MISTRANSLATIONS.items():
        assert wrong not in text, f"{wrong!r} in {path.name}: use {right}"
    english_exercises = len(re.findall(r"^### Exercise \d+:", "\n".join(
        c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"), re.M))
    assert len(re.findall(r"^### 练习 \d+：", text, re.M)) == english_exercises


def test_a_code_cell_changed_in_one_edition_only_is_caught():
    english = nbformat.read(CHAPTERS[0], as_version=4)
    chinese = copy.deepcopy(english)
    code = next(c for c in chinese.cells if c.cell_type == "code")
    code.source += "\nprint('only in one edition')"
    assert any(d.startswith("code cell") for d in editions.differences(english, chinese))
    chinese.cells.insert(0, nbformat.v4.new_markdown_cell("多出来的单元格"))
    assert any("cells in English" in d for d in editions.differences(english, chinese))


def test_sync_copies_code_and_refuses_a_different_structure():
    english = nbformat.read(CHAPTERS[0], as_version=4)
    chinese = copy.deepcopy(english)
    code = next(c for c in chinese.cells if c.cell_type == "code")
    code.source = "x = 'stale'"
    assert editions.sync(english, chinese) == 1 and editions.differences(english, chinese) == []
    chinese.cells.pop()
    with pytest.raises(ValueError, match="align the cells"):
        editions.sync(english, chinese)
