"""Rewrite stored notebook outputs so they show no path of the machine that ran them.

Tracebacks and messages name files by absolute path; a learner's checkout lives
elsewhere. After `make store-notebooks` executes the chapters, this script
replaces the repository's root with nothing (paths become relative, such as
`nnpar_lite/formulas.py`), the Python installation with `<python>` and the home
folder with `~`.

    python scripts/relative_paths.py notebooks/*.ipynb
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
REPLACEMENTS = [(str(ROOT) + os.sep, ""), (str(ROOT), "."), (sys.base_prefix, "<python>"),
                (str(Path.home()) + os.sep, "~/")]


def relative(text: str) -> str:
    for old, new in REPLACEMENTS:
        text = text.replace(old, new)
    return text


def rewrite(value):
    if isinstance(value, str):
        return relative(value)
    if isinstance(value, list):
        return [rewrite(v) for v in value]
    if isinstance(value, dict):
        return {k: rewrite(v) if k != "image/png" else v for k, v in value.items()}
    return value


def main(paths: list[str]) -> None:
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [nbformat.from_dict(rewrite(dict(o))) for o in cell.outputs]
        nbformat.write(nb, path)


if __name__ == "__main__":
    main(sys.argv[1:])
