"""The Chinese edition says one thing one way: in every zh chapter and in every Chinese message of
the package, each idea has its preferred word and none of its rejected variants; a process's rank
is "rank", and 秩 is only a matrix's rank. Every term a zh chapter defines (in bold, its English
after it) is in chapter 00's glossary."""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ZH = sorted((ROOT / "notebooks" / "zh").glob("[0-9]*.ipynb"))
CJK = re.compile(r"[\u4e00-\u9fff]")

# idea: (preferred, rejected variants as regular expressions)
TERMS = {
    "a process's rank": ("rank", [r"(?<![低满])秩(?!\s*[r为=])(?<!矩阵的秩)", r"近似秩", r"进程号"]),
    "worker": ("计算单元", [r"工作者", r"工作节点"]),
    "widget": ("控件", [r"小部件"]),
    "tile": ("图块", [r"分块"]),
    "in place": ("原地", [r"就地"]),
    "batch": ("批量", [r"(?<!微)批次"]),
    "master weights": ("主权重", [r"主副本"]),
    "Dirichlet α": ("集中度参数", [r"浓度"]),
    "flush": ("刷新", [r"冲刷"]),
    "halo": ("光晕", [r"光环", r"晕区"]),
    "all-to-all": ("全对全", [r"全互换"]),
}


def chapter_markdown(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def package_chinese() -> str:
    """Every string literal of the package that holds Chinese: the messages the zh edition prints."""
    found = []
    for path in sorted((ROOT / "nnpar_lite").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CJK.search(node.value):
                found.append(f"{path.name}: {node.value}")
    return "\n".join(found)


SOURCES = [pytest.param(lambda p=p: chapter_markdown(p), id=p.stem) for p in ZH] + \
          [pytest.param(package_chinese, id="package messages")]


@pytest.mark.parametrize("text", SOURCES)
@pytest.mark.parametrize("idea", sorted(TERMS))
def test_one_word_per_idea(text, idea):
    preferred, rejected = TERMS[idea]
    body = text()
    hits = [m.group(0) + " in …" + body[max(0, m.start() - 20):m.end() + 20].replace("\n", " ") + "…"
            for pattern in rejected for m in re.finditer(pattern, body)]
    assert not hits, f"{idea}: write {preferred!r}, not {hits[:3]}"


def test_the_rank_rule_tells_a_matrix_from_a_process():
    pattern = TERMS["a process's rank"][1][0]
    for fine in ("低秩近似", "秩 r 的近似", "秩为 4", "矩阵的秩"):
        assert not re.search(pattern, fine), fine
    for wrong in ("秩 0 和秩 1", "每个秩"):
        assert re.search(pattern, wrong), wrong


def glossary() -> str:
    return chapter_markdown(ROOT / "notebooks" / "zh" / "00_start_here.ipynb")


@pytest.mark.parametrize("path", ZH, ids=lambda p: p.stem)
def test_every_term_a_chapter_defines_is_in_the_glossary(path):
    """Where a zh chapter defines a term it writes it in bold with its English after it,
    **中文**（English）: each such term is in chapter 00's glossary."""
    words = glossary()
    defined = {m.group(1).strip() for m in re.finditer(r"\*\*([^*\n]{1,20}?)\*\*\s*[（(]([A-Za-z][^）)]{0,40})[）)]",
                                                        chapter_markdown(path)) if CJK.search(m.group(1))}
    missing = sorted(t for t in defined if t not in words)
    assert not missing, f"{path.name} defines {missing}; add them to chapter 00's glossary"
