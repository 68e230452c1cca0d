"""The workbook installs the way the README says: same dependencies everywhere, pinned torch; and
README.zh.md is README.md's twin, section for section and command for command."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name → PyPI name


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert "conda-forge" in env["channels"]
    conda = {CONDA_NAMES.get(_name(d), _name(d)) for d in env["dependencies"] if isinstance(d, str)}
    conda -= {"python", "pip"}
    project = pyproject()
    wanted = {_name(d) for d in project["dependencies"]} | {_name(d) for d in project["optional-dependencies"]["test"]}
    assert conda == wanted, f"only in environment.yml: {conda - wanted}; only in pyproject.toml: {wanted - conda}"
    pip_parts = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert pip_parts == [{"pip": ["-e ."]}], "conda users must get the package itself, editable"


def test_torch_is_a_range_for_users_and_pinned_for_make():
    assert "torch>=2.3" in pyproject()["dependencies"]
    pins = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    assert "torch==2.13.0" in pins
    for dep in pyproject()["dependencies"] + pyproject()["optional-dependencies"]["test"]:
        assert any(_name(line) == _name(dep) and "==" in line for line in pins), f"{dep} is not pinned"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make lab" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "set -euo pipefail" in ci and re.search(r"^make test$", ci, re.M)


def test_every_notebook_is_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for notebook in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        assert f"notebooks/{notebook.name}" in readme, f"{notebook.name} is missing from the README's chapter map"


def test_every_chinese_notebook_is_in_the_chinese_readme():
    readme = (ROOT / "README.zh.md").read_text(encoding="utf-8")
    assert "make lab" in readme and "make test" in readme and "environment.yml" in readme
    for notebook in sorted((ROOT / "notebooks" / "zh").glob("[0-9]*.ipynb")):
        assert f"notebooks/zh/{notebook.name}" in readme, f"{notebook.name} is missing from README.zh.md"
    assert "README.zh.md" in (ROOT / "README.md").read_text(encoding="utf-8").split("\n## ")[0]


def test_ci_installs_chromium_and_a_cjk_font():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "chromium" in ci and "fonts-noto-cjk" in ci


def sections(readme: str) -> list[str]:
    """The README's `## ` headings, in order."""
    return re.findall(r"^## (.+)$", readme, re.M)


def bash_commands(readme: str) -> list[str]:
    """Every line of every ```bash block, its comment and surrounding blanks removed, blank lines dropped."""
    lines = [line for block in re.findall(r"^```bash\n(.*?)^```", readme, re.M | re.S) for line in block.splitlines()]
    commands = [re.sub(r"(^|\s)#.*$", "", line).strip() for line in lines]
    return [command for command in commands if command]


def twin_drift(english: str, chinese: str) -> list[str]:
    """What keeps README.zh.md from being README.md's twin: a section count that differs, a command it lacks."""
    problems = []
    if len(sections(english)) != len(sections(chinese)):
        problems.append(f"README.md has {len(sections(english))} sections {sections(english)}, "
                        f"README.zh.md {len(sections(chinese))} {sections(chinese)}")
    chinese_commands = set(bash_commands(chinese))
    problems += [f"README.zh.md lacks README.md's command: {command}"
                 for command in bash_commands(english) if command not in chinese_commands]
    return problems


def test_the_chinese_readme_is_a_full_twin_of_the_english_one():
    english = (ROOT / "README.md").read_text(encoding="utf-8")
    chinese = (ROOT / "README.zh.md").read_text(encoding="utf-8")
    assert len(sections(english)) >= 7 and len(bash_commands(english)) >= 15, "README.md's sections or commands not found"
    assert twin_drift(english, chinese) == []


def test_the_twin_check_sees_a_new_section_and_a_changed_command():
    english = (ROOT / "README.md").read_text(encoding="utf-8")
    chinese = (ROOT / "README.zh.md").read_text(encoding="utf-8")
    drifted = english.replace("make test   #", "make test-all   #") + "\n## Citing\n\n```bash\nmake cite  # BibTeX\n```\n"
    problems = twin_drift(drifted, chinese)
    assert len(problems) == 3, problems
    assert "8 sections" in problems[0] and "make test-all" in problems[1] and "make cite" in problems[2]


def test_the_chinese_readme_opens_the_chinese_chapter_00_the_way_the_makefile_allows():
    chinese = (ROOT / "README.zh.md").read_text(encoding="utf-8")
    assert "make lab START=notebooks/zh/00_start_here.ipynb" in bash_commands(chinese)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^START \?= notebooks/00_start_here\.ipynb$", makefile, re.M)
    assert re.search(r"^lab:.*\n\t.*jupyter lab .*\$\(START\)$", makefile, re.M), "make lab does not open $(START)"
    assert "](README.md)" in chinese.split("\n## ")[0], "README.zh.md's opening does not link the English README"
