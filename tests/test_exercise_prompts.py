"""The exercises' prompts, read as a learner reads them, in both editions: every number a check
computes its answer from is stated in its prompt (so a prompt changed without its check fails
here), no typical wrong belief gives the answer, every section opens with the same line on how
to answer, every exercise ends with the way on (hint, then solution), and a function that runs
on ranks is told what it may use."""

import math
import re
from pathlib import Path

import nbformat
import pytest

from nnpar_lite.exercises import all_exercises, check

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EDITIONS = {"en": NOTEBOOKS, "zh": NOTEBOOKS / "zh"}
CHAPTERS = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))

OPENING = {
    "en": ('Each exercise ends in a `check`: replace `None` (or the function\'s body) with your answer and run the '
           'cell. A cell left as it is says "not solved yet"; a ✘ says what is wrong. Stuck? `hint("NN.M")` gives a '
           'nudge, then `solution("NN.M")` shows one answer (NN.M is the number in the exercise\'s `check`).'),
    "zh": ('每道练习都以一个 `check` 结束：把 `None`（或函数体）换成你的答案，再运行这个单元格。原样未动的单元格会显示'
           '“尚未作答”；✘ 会说明哪里不对。卡住了？先用 `hint("NN.M")` 看提示，再用 `solution("NN.M")` 看一种解答'
           '（NN.M 是该练习 `check` 中的编号）。'),
}
STUCK = {"en": 'Stuck? `hint("{id}")`, then `solution("{id}")`.', "zh": '卡住了？先看 `hint("{id}")`，再看 `solution("{id}")`。'}
ON_RANKS = {"en": "Your function runs in other processes", "zh": "你的函数在其他进程中运行"}
HEADING = {"en": re.compile(r"^### Exercise (\d+):", re.M), "zh": re.compile(r"^### 练习 (\d+)：", re.M)}
SECTION = {"en": "## Exercises", "zh": "## 练习"}

SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
POWER = re.compile(r"10\^\{?(-?\d+)\}?|10([⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+)")
NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?")


def flat(text: str) -> str:
    """The text with each run of white space (a wrapped line's end among them) read as one space."""
    return " ".join(text.split())


def numbers_in(text: str) -> list[float]:
    """Every number a prompt writes: 2,048 and $1{,}024$, 0.95, −8, 10^8, $10^{8}$ and 10⁷."""
    text = text.replace("{,}", ",").replace("−", "-")
    found = [10.0 ** int(m.group(1) or m.group(2).translate(SUPERSCRIPTS)) for m in POWER.finditer(text)]
    return found + [float(m.group(0).replace(",", "")) for m in NUMBER.finditer(POWER.sub(" ", text))]


def section(edition: str, chapter: str) -> list:
    """The cells of a chapter's exercise section, from its heading to the next ## heading."""
    cells = nbformat.read(EDITIONS[edition] / chapter, as_version=4).cells
    start = next(i for i, c in enumerate(cells) if c.cell_type == "markdown"
                 and SECTION[edition] in [line.strip() for line in c.source.splitlines()])
    out = [cells[start]]
    for cell in cells[start + 1:]:
        out.append(cell)
        if cell.cell_type == "markdown" and re.search(r"^## \S", cell.source, re.M):
            break
    return out


def section_text(edition: str, chapter: str) -> str:
    """The section's markdown, cut at the next ## heading, with each code cell as a marked block."""
    parts = []
    for cell in section(edition, chapter):
        parts.append(f"<code>\n{cell.source}\n</code>" if cell.cell_type == "code" else cell.source)
    text = "\n\n".join(parts)
    text = text[text.index(SECTION[edition]):]
    end = re.search(r"^## \S", text[len(SECTION[edition]):], re.M)
    return text if end is None else text[:len(SECTION[edition]) + end.start()]


def exercises_of(edition: str, chapter: str) -> dict[str, tuple[str, str]]:
    """Each exercise's id → (its prompt up to its code, everything from its heading to the next)."""
    text, found = section_text(edition, chapter), {}
    headings = list(HEADING[edition].finditer(text))
    for m, following in zip(headings, headings[1:] + [None]):
        whole = text[m.start():following.start() if following else len(text)]
        found[f"{chapter[:2]}.{m.group(1)}"] = (whole.split("<code>")[0], whole)
    return found


CASES = [(e, c) for c in CHAPTERS for e in EDITIONS]


@pytest.mark.parametrize("edition, chapter", CASES)
def test_every_section_opens_with_the_same_line_on_how_to_answer(edition, chapter):
    assert OPENING[edition] in flat(section_text(edition, chapter))


@pytest.mark.parametrize("edition, chapter", CASES)
def test_every_exercise_is_registered_and_ends_with_its_hint_then_its_solution(edition, chapter):
    found = exercises_of(edition, chapter)
    registered = {i for i in all_exercises() if i.startswith(chapter[:2] + ".")}
    assert set(found) == registered
    for exercise_id, (_, whole) in found.items():
        assert STUCK[edition].format(id=exercise_id) in flat(whole), exercise_id


@pytest.mark.parametrize("edition, chapter", CASES)
def test_a_function_run_on_ranks_is_told_what_it_may_use(edition, chapter):
    for exercise_id, (prompt, whole) in exercises_of(edition, chapter).items():
        if "torch.distributed" in whole:
            assert ON_RANKS[edition] in flat(prompt), exercise_id


STATED = sorted((i, e) for i, e in all_exercises().items() if e.stated)


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("exercise_id", [i for i, _ in STATED])
def test_every_number_the_answer_is_computed_from_is_stated_in_the_prompt(edition, exercise_id):
    chapter = next(c for c in CHAPTERS if c.startswith(exercise_id[:2]))
    prompt = exercises_of(edition, chapter)[exercise_id][0]
    written = numbers_in(prompt)
    for name, value in all_exercises()[exercise_id].stated.items():
        assert any(math.isclose(value, w, rel_tol=1e-9) for w in written), \
            f"{exercise_id} computes its answer from {name} = {value}, which its prompt does not state: {written}"


def test_the_number_reader_reads_what_prompts_write():
    assert numbers_in("$h = 1{,}024$, 2,048 tokens, −8 times, f = 0.95, 10 %") == [1024, 2048, -8, 0.95, 10]
    assert numbers_in("$n = 10^8$ bytes, 1000 万（10⁷）, ZeRO-2, fp32, 64×64, $n_0/60$") == [1e8, 1e7, 1000, 2, 64, 64, 60]


TYPICAL = sorted((i, e) for i, e in all_exercises().items() if e.typical)


@pytest.mark.parametrize("exercise_id", [i for i, _ in TYPICAL])
def test_no_typical_wrong_belief_gives_the_answer_or_another_beliefs_value(capsys, exercise_id):
    """Each belief's value fails the check, so the ✘ can name it, and no two beliefs coincide."""
    values = [value for value, _ in all_exercises()[exercise_id].typical]
    for value in values:
        assert not check(exercise_id, value), f"{exercise_id}: a typical wrong belief gives {value}, which passes"
    for i, a in enumerate(values):
        for b in values[i + 1:]:
            assert not math.isclose(a, b, rel_tol=1e-6), f"{exercise_id}: two beliefs both give {a}"
    capsys.readouterr()


def test_the_chinese_edition_says_how_to_go_on_in_chinese(capsys, monkeypatch):
    monkeypatch.setenv("NNPAR_LANG", "zh")
    assert not check("05.2", 3)
    printed = capsys.readouterr().out
    assert '卡住了？先看 hint("05.2")，再看 solution("05.2")。' in printed and "预热" in printed


def test_a_prompt_changed_without_its_check_is_caught():
    """05.3's prompt with t = 4 workers where the check computes with t = 8: the 8 is missing."""
    prompt = exercises_of("en", "05_model_split_pipeline_tensor.ipynb")["05.3"][0]
    assert "$t = 8$" in prompt
    written = numbers_in(prompt.replace("$t = 8$", "$t = 4$"))
    assert not any(math.isclose(all_exercises()["05.3"].stated["t"], w) for w in written)
