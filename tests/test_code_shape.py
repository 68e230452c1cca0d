"""The package's shape, checked: the formulas short enough to read whole, short functions,
widgets that only draw, one concern per file, harnesses named after their chapter's topic,
and a guide (CONTRIBUTING.md) that says so."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nnpar_lite"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def functions(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_formulas_fit_in_100_lines_and_their_checks_in_150():
    """A reader opens formulas.py and reads it whole; the checks stay apart, short too."""
    for name, limit in (("formulas.py", 100), ("checks.py", 150)):
        lines = len((PACKAGE / name).read_text(encoding="utf-8").splitlines())
        assert lines <= limit, f"{name}: {lines} lines"



def relative(path) -> str:
    return str(path.relative_to(PACKAGE))


@pytest.mark.parametrize("path", MODULES, ids=relative)
def test_no_package_file_is_longer_than_400_lines(path):
    """A file holds one concern, which a reader can read whole; a longer one holds several."""
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 400, f"{relative(path)}: {lines} lines"


def classes(path):
    return [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.ClassDef)]


LONG_CLASS_NOTE = "# Over 120 lines:"     # the comment just above a longer class says why it is not split


@pytest.mark.parametrize("path", MODULES, ids=relative)
def test_no_class_is_longer_than_120_lines_unless_a_note_says_why(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    first_line = {c.name: min([c.lineno] + [d.lineno for d in c.decorator_list]) for c in classes(path)}
    long = [f"{c.name} ({c.end_lineno - c.lineno + 1} lines)" for c in classes(path)
            if c.end_lineno - c.lineno + 1 > 120 and not lines[first_line[c.name] - 2].startswith(LONG_CLASS_NOTE)]
    assert not long, f"{relative(path)}: {long}; split it, or say why above it with {LONG_CLASS_NOTE!r}"


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "article.py"], ids=relative)
def test_no_function_is_longer_than_40_lines(path):
    """Docstring included. The article's verbatim classes (article.py) are the one exception."""
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in functions(path)
            if f.end_lineno - f.lineno + 1 > 40]
    assert not long, f"{path.name}: {long}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "widgets").glob("*.py")), ids=lambda p: p.name)
def test_widgets_only_draw(path):
    """No training, no data loading, no workers in a widget module: they import what they draw."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    from_imports = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported = {alias.name for node in from_imports for alias in node.names}
    imported |= {node.module or "" for node in from_imports}
    forbidden = {"torch", "torch.distributed", "digits", "load_digits", "load_sample_image", "launch"}
    assert not (imported & forbidden), f"{path.name} imports {imported & forbidden}"
    assert "import torch" not in source and ".backward(" not in source and "optim." not in source
    for f in functions(path):
        args = [a.arg for a in f.args.args]
        assert args[:2] != ["rank", "world_size"], f"{path.name} defines a worker, {f.name}"


PROGRAMS = {"distributed", "train", "train_gpt"}   # the launcher and the torchrun programs: not schemes


def communicates(path) -> bool:
    """Does the module call torch.distributed (``dist.<something>(...)``) itself?"""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and isinstance(c.func.value, ast.Name)
               and c.func.value.id == "dist" for c in ast.walk(tree))


# Every module of the package that communicates, discovered: a new scheme cannot escape the rules.
SCHEMES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in PROGRAMS and communicates(p))


def test_the_schemes_are_discovered():
    assert {"collectives", "data_parallel", "data_parallel_overlap", "pipeline", "tensor_parallel"} <= set(SCHEMES)


@pytest.mark.parametrize("name", SCHEMES)
def test_scheme_modules_hold_no_chapter_workers(name):
    """Workers that compare a scheme with its reference or time it live in nnpar_lite/experiments."""
    for f in functions(PACKAGE / f"{name}.py"):
        args = [a.arg for a in f.args.args]
        assert args[:2] != ["rank", "world_size"], f"{name}.py defines the worker {f.name}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "costmodel").glob("*.py")), ids=lambda p: p.name)
def test_the_cost_model_holds_formulas_only(path):
    """No torch, no clock: what a formula predicts, the chapters measure elsewhere."""
    source = path.read_text(encoding="utf-8")
    assert "torch" not in source and "import time" not in source and "perf_counter" not in source


@pytest.mark.parametrize("name", SCHEMES)
def test_every_collective_takes_a_group(name):
    """Collectives over a process group accept group= (default: all ranks)."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    top_level = [n for n in tree.body if isinstance(n, ast.FunctionDef)]   # nested helpers use the outer group
    methods = [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body if isinstance(m, ast.FunctionDef)
               and not any(i.name == "__init__" and "group" in [a.arg for a in i.args.args + i.args.kwonlyargs]
                           for i in c.body if isinstance(i, ast.FunctionDef))]   # a class given its group once
    for f in top_level + methods:
        calls = {c.func.attr for c in ast.walk(f) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                 and isinstance(c.func.value, ast.Name) and c.func.value.id == "dist"}
        communicates = calls & {"all_reduce", "send", "recv", "isend", "irecv", "all_gather", "broadcast",
                                "reduce_scatter", "reduce_scatter_tensor", "all_gather_into_tensor", "barrier",
                                "reduce_scatter_single", "all_gather_single", "all_to_all", "all_to_all_single"}
        if communicates and f.name not in ("forward", "backward"):
            params = [a.arg for a in f.args.args + f.args.kwonlyargs]
            assert "group" in params, f"{name}.{f.name} communicates ({communicates}) without a group= argument"


GUIDE = (PACKAGE.parent / "CONTRIBUTING.md").read_text(encoding="utf-8")
MACHINERY = {"core", "compare", "ranks", "own_work"}   # the exercises' shared machinery, not a chapter's


def topics(folder: str) -> set[str]:
    """The harness modules and subpackages of experiments/, widgets/ or exercises/, by name."""
    found = {p.stem for p in (PACKAGE / folder).glob("*.py")}
    found |= {p.parent.name for p in (PACKAGE / folder).glob("*/__init__.py")}
    return found - {"__init__"} - MACHINERY


def test_a_chapters_harnesses_share_its_topics_name_in_experiments_widgets_and_exercises():
    """Chapter 13 (outlook) has exercises only; processes.py holds chapters 01 and 03's first processes."""
    assert topics("widgets") == topics("experiments") - {"processes"}
    assert topics("exercises") == topics("widgets") | {"outlook"}


def test_the_guide_names_every_chapter_topic_and_every_test_worker_module():
    table = GUIDE[GUIDE.index("| chapter | topic name |"):GUIDE.index("**The rules of shape**")]
    assert set(re.findall(r"`(\w+)`", table)) >= topics("exercises") and "experiments/processes.py" in table
    workers = sorted(p.name for p in (PACKAGE.parent / "tests").glob("*workers.py"))
    assert [name for name in workers if f"`{name}`" not in GUIDE] == []
