"""The workbook installs the way the README says: same dependencies everywhere, pinned torch."""

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
