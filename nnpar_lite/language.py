"""Which edition a chapter runs in: English, or Chinese (中文) for the notebooks in ``notebooks/zh``.

Both editions run the same code cells, character for character, so the language cannot be
set in a cell. It is read from where the kernel runs: Jupyter, nbval and nbconvert start a
notebook's kernel in the notebook's folder, so a kernel started in a folder named ``zh``
speaks Chinese. ``NNPAR_LANG=zh`` (or ``en``) overrides that.
"""

from __future__ import annotations

import os
from pathlib import Path


def language() -> str:
    """"zh" or "en"."""
    chosen = os.environ.get("NNPAR_LANG", "").lower()
    if chosen in ("zh", "en"):
        return chosen
    return "zh" if Path.cwd().name == "zh" else "en"


def say(english: str, chinese: str) -> str:
    """The message in the edition's language."""
    return chinese if language() == "zh" else english
