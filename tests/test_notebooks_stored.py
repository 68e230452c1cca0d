"""Each chapter, in both editions, is stored as nbval and a learner expect it: executed top to
bottom in a fresh kernel, with outputs that hold on any machine, and every exercise unsolved."""

import configparser
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")) + sorted((ROOT / "notebooks" / "zh").glob("[0-9]*.ipynb"))
IDS = [str(p.relative_to(ROOT / "notebooks")).removesuffix(".ipynb") for p in NOTEBOOKS]
EXERCISE = re.compile(r"^### (Exercise \d+:|练习 \d+：)", re.M)
# What differs between machines: a raw rounding error (a tolerance in a verdict is fine), a
# CPU's name, a core count.
MACHINE_BOUND = re.compile(r"(?<!below )(?<!within )(?<!under )(?<!< )(?<!≤ )\b\d(\.\d+)?e-(0[6-9]|[1-9]\d)\b"
                           r"|Intel|AMD|EPYC|Xeon|cores \(usable\)")


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell):
    return "".join(cell["source"])


def output_text(cell):
    return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                   for o in cell.get("outputs", []))


def sanitizers():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "notebooks" / "nbval_sanitize.cfg", encoding="utf-8")
    return [(re.compile(parser[s]["regex"]), parser[s]["replace"]) for s in parser.sections()]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_in_order_without_unexpected_errors(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), \
        "store the notebook after Restart & Run All (make store-notebooks)"
    for i, cell in enumerate(code, start=1):
        errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
        if "NBVAL_RAISES_EXCEPTION" in source(cell):
            assert errors and "raises-exception" in cell["metadata"].get("tags", []), \
                f"cell {i} is meant to fail: it must store its error and carry the raises-exception tag"
        else:
            assert not errors, f"cell {i} stored an error: {errors[0].get('ename')}"


def test_there_is_a_first_chapter():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_start_here.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_outputs_show_no_path_of_this_machine(path):
    """Tracebacks are stored with paths relative to the repository (make store-notebooks)."""
    text = path.read_text(encoding="utf-8")
    for marker in (str(ROOT), "/root/", "/home/", "/tmp/"):
        assert marker not in text, f"{path.name} stores the local path {marker!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_checked_outputs_hold_on_any_machine(path):
    """No raw rounding error, CPU model or core count in a cell nbval checks (after the named
    sanitize patterns): those go in # NBVAL_IGNORE_OUTPUT cells that assert inside."""
    patterns = sanitizers()
    for i, cell in enumerate(cells(path)):
        if cell["cell_type"] != "code" or "NBVAL_IGNORE_OUTPUT" in source(cell) or "NBVAL_SKIP" in source(cell):
            continue
        text = output_text(cell)
        for pattern, replacement in patterns:
            text = pattern.sub(replacement, text)
        found = MACHINE_BOUND.search(text)
        assert not found, f"cell {i} prints {found.group(0)!r}, which differs between machines"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_three_or_more_exercises_stored_unsolved(path):
    headings = [m.group(0) for c in cells(path) if c["cell_type"] == "markdown" for m in EXERCISE.finditer(source(c))]
    assert len(headings) >= 3, f"{len(headings)} exercise headings (### Exercise N: / ### 练习 N：)"
    checks = [c for c in cells(path) if c["cell_type"] == "code" and re.search(r"\bcheck\(", source(c))]
    assert len(checks) >= 3
    for cell in checks:
        printed = output_text(cell)
        assert "✔" not in printed, "an exercise is stored solved"
        assert "not solved yet" in printed or "尚未作答" in printed, "an exercise's check is stored without its verdict"
    if int(path.name[:2]) >= 2:
        assert any(re.search(r"^def \w+\(", source(c), re.M) for c in checks), \
            "from chapter 02 on, one exercise asks for a function"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_solution_is_shown_by_default(path):
    for i, cell in enumerate(cells(path)):
        if cell["cell_type"] == "code":
            assert "solution(" not in source(cell) or not source(cell).lstrip().startswith("solution("), \
                f"cell {i} prints a solution: solutions are shown on demand only"
