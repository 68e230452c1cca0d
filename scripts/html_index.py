"""Write build/html/index.html: the chapters of both editions in order, with their titles.

    python scripts/html_index.py build/html
"""

import html
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def title(notebook: Path) -> str:
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            first = "".join(cell["source"]).strip().splitlines()[0]
            return first.lstrip("# ").strip()
    return notebook.stem


def chapter_list(folder: Path, prefix: str) -> str:
    return "\n".join(f'<li><a href="{prefix}{nb.stem}.html">{html.escape(title(nb))}</a></li>'
                     for nb in sorted(folder.glob("[0-9]*.ipynb")))


def main(folder: str) -> None:
    out = Path(folder)
    (out / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>nnpar-lite</title>"
        "<h1>nnpar-lite: the parallel optimisation of neural networks · 神经网络的并行优化</h1>"
        "<p>The workbook's chapters, executed. To run and change them: <code>make lab</code>.</p>"
        f"<h2>English</h2><ol>{chapter_list(ROOT / 'notebooks', '')}</ol>"
        f"<h2>中文</h2><ol>{chapter_list(ROOT / 'notebooks' / 'zh', 'zh/')}</ol>\n",
        encoding="utf-8")
    print(f"wrote {out / 'index.html'}")


if __name__ == "__main__":
    main(sys.argv[1])
