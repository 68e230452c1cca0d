"""Every name a chapter takes from the package exists where the chapter takes it from: its import
cells, and each ``alias.name`` it reads from an imported module (``comm.compare_with_ddp``,
``costmodel.ring_allreduce_time``). A module renamed or split without its chapters fails here,
in a second, instead of in the chapter's run."""

import ast
import importlib
import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))


def code_cells(path: Path) -> list[ast.Module]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    python = ["\n".join(line for line in s.splitlines() if not line.lstrip().startswith(("%", "!"))) for s in sources]
    return [ast.parse(s) for s in python]


def package_imports(trees: list[ast.Module]) -> dict[str, str]:
    """{alias: module} for every ``import nnpar_lite.x as a`` and ``from nnpar_lite[.x] import y [as a]``
    whose target is a module; the names imported are checked as they are collected."""
    aliases = {}
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in node.names if a.name.startswith("nnpar_lite")})
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nnpar_lite"):
            for a in node.names:
                found = imported(node.module, a.name)
                if isinstance(found, type(ast)):
                    aliases[a.asname or a.name] = found.__name__
    return aliases


def imported(module_name: str, name: str):
    """What ``from module_name import name`` gives: an attribute, else a submodule; fails naming both."""
    module = importlib.import_module(module_name)
    if not hasattr(module, name):
        try:
            importlib.import_module(f"{module_name}.{name}")
        except ModuleNotFoundError:
            pytest.fail(f"{module_name} has no {name}")
    return getattr(module, name)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem[:2])
def test_every_package_name_a_chapter_uses_exists_where_it_looks(chapter):
    trees = code_cells(chapter)
    aliases = package_imports(trees)
    missing = sorted({f"{node.value.id}.{node.attr}" for tree in trees for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id in aliases and isinstance(node.ctx, ast.Load)
                      and not hasattr(importlib.import_module(aliases[node.value.id]), node.attr)})
    assert not missing, f"{chapter.name} reads {missing}, which the package does not define there"
