"""The English and Chinese editions share one code: the Chinese chapter's code cells are the
English chapter's, character for character, in the same cell structure.

    python scripts/editions.py check     # report every difference; exit 1 if any
    python scripts/editions.py sync      # copy the English code cells into the Chinese chapters
    python scripts/editions.py new NAME  # start notebooks/zh/NAME.ipynb from the English one,
                                         # markdown to translate, outputs cleared

``sync`` needs the two editions to have the same cells in the same order (markdown where
markdown is, code where code is); a structural difference is reported, never guessed at.
After a sync the Chinese chapters must be executed again (make store-notebooks does both).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
ENGLISH, CHINESE = ROOT / "notebooks", ROOT / "notebooks" / "zh"
SHARED_METADATA = ("tags",)   # what a code cell's metadata must share across editions


def chapters() -> list[Path]:
    return sorted(ENGLISH.glob("[0-9]*.ipynb"))


def differences(english: nbformat.NotebookNode, chinese: nbformat.NotebookNode) -> list[str]:
    """Every way the Chinese edition's cells differ from the English in structure or code."""
    found = []
    if len(english.cells) != len(chinese.cells):
        found.append(f"{len(english.cells)} cells in English, {len(chinese.cells)} in Chinese")
    for i, (en, zh) in enumerate(zip(english.cells, chinese.cells)):
        if en.cell_type != zh.cell_type:
            found.append(f"cell {i} is {en.cell_type} in English, {zh.cell_type} in Chinese")
        elif en.cell_type == "code" and en.source != zh.source:
            found.append(f"code cell {i} differs: {first_line_that_differs(en.source, zh.source)}")
        elif en.cell_type == "code" and any(en.metadata.get(k) != zh.metadata.get(k) for k in SHARED_METADATA):
            found.append(f"code cell {i}: its tags differ")
    return found


def first_line_that_differs(a: str, b: str) -> str:
    for n, (x, y) in enumerate(zip(a.splitlines(), b.splitlines()), start=1):
        if x != y:
            return f"line {n}: English {x!r}, Chinese {y!r}"
    return "one has more lines than the other"


def sync(english: nbformat.NotebookNode, chinese: nbformat.NotebookNode) -> int:
    """Copy the English code cells (source and tags) into the Chinese edition; the number changed."""
    structural = [d for d in differences(english, chinese) if not d.startswith("code cell")]
    if structural:
        raise ValueError("; ".join(structural) + ": align the cells by hand before syncing")
    changed = 0
    for en, zh in zip(english.cells, chinese.cells):
        if en.cell_type == "code" and (en.source != zh.source or
                                       any(en.metadata.get(k) != zh.metadata.get(k) for k in SHARED_METADATA)):
            zh.source = en.source
            for key in SHARED_METADATA:
                if key in en.metadata:
                    zh.metadata[key] = en.metadata[key]
                else:
                    zh.metadata.pop(key, None)
            zh.outputs, zh.execution_count = [], None
            changed += 1
    return changed


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "new":
        english = nbformat.read(ENGLISH / f"{argv[1]}.ipynb", as_version=4)
        for cell in english.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        CHINESE.mkdir(exist_ok=True)
        nbformat.write(english, CHINESE / f"{argv[1]}.ipynb")
        return 0
    status = 0
    for path in chapters():
        twin = CHINESE / path.name
        if not twin.exists():
            print(f"{path.name}: no Chinese edition yet")
            status = 1
            continue
        english, chinese = nbformat.read(path, as_version=4), nbformat.read(twin, as_version=4)
        if command == "sync":
            changed = sync(english, chinese)
            if changed:
                nbformat.write(chinese, twin)
            print(f"{path.name}: {changed} code cells copied")
        else:
            for difference in differences(english, chinese):
                print(f"{path.name}: {difference}")
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
