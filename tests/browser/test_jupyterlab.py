"""The workbook as learners meet it: JupyterLab in a real browser (headless Chromium).

For each chapter: open it in JupyterLab, run all cells in a fresh kernel, wait for the
kernel to go idle, then check that no cell failed except those tagged to fail, that the
chapter's main widget rendered (its slider is visible), that moving the slider redraws the
figure it drives, and that its widgets' figures are labelled in the chapter's language
(asked of the kernel: Chinese titles, axis labels and legends in zh/00 and zh/04). A
screenshot of each chapter goes to build/screenshots/.

Needs Chromium at /usr/bin/chromium (Debian's package `chromium`; Playwright's own
browser download is not used). Run with `make browser-test`.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("NNPAR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
# Every English chapter (found, not listed), and two Chinese ones: the Chinese chapters run the
# same code, so two of them show that the edition's text and messages render (CJK glyphs, not boxes).
CHAPTERS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
CHINESE = [f"zh/{name}" for name in ("00_start_here.ipynb", "04_task_parallel_model_averaging.ipynb")
           if (ROOT / "notebooks" / "zh" / name).exists()]
SCREENSHOTS = ROOT / "build" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("NNPAR_REQUIRE_BROWSER"),
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free port with a token, serving a copy of the notebooks (running them
    in the browser must not change the stored ones)."""
    from nnpar_lite.distributed import free_port

    folder = tmp_path_factory.mktemp("lab")
    (folder / "zh").mkdir()
    for name in CHAPTERS + CHINESE:       # zh/ keeps its name: a kernel started there speaks Chinese
        shutil.copy(ROOT / "notebooks" / name, folder / name)
    port, token = free_port(), "nnpar-browser-test"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--ServerApp.token={token}", f"--ServerApp.root_dir={folder}", "--LabApp.expose_app_in_browser=True",
               "--ServerApp.allow_root=True"]
    log = open(folder / "lab.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"JupyterLab did not start: {(folder / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield base, token
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


KERNEL_IDLE = """(path) => {
    const panel = window.jupyterapp?.shell.currentWidget;
    return panel?.context?.path === path && panel.sessionContext?.session?.kernel?.status === 'idle';
}"""
ALL_CELLS_RUN = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    return panel.sessionContext?.session?.kernel?.status === 'idle'
        && cells.every(c => c.model.executionCount !== null && !c.promptNode.textContent.includes('*'));
}"""
CELL_ERRORS = """() => window.jupyterapp.shell.currentWidget.content.widgets
    .map((cell, index) => ({index, type: cell.model.type, tags: cell.model.getMetadata('tags') || [],
        errors: cell.model.type === 'code'
            ? cell.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)
            : []}))
    .filter(cell => cell.errors.length > 0)"""
IMAGE_CHANGED = "([box, old]) => { const img = box.querySelector('img'); return img && img.getAttribute('src') !== old; }"
# Asks the chapter's kernel what the figure of each of its widgets says (titles, axis labels,
# legends: interactive_figure's figure_text), as it is drawn now, after the slider moved.
FIGURE_TEXT = """async () => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const code = 'import json, ipywidgets.widgets.widget as w\\n' + 'print(json.dumps([x.figure_text for x in '
        + 'list(w._instances.values()) if isinstance(getattr(x, "figure_text", None), list)]))';
    const future = kernel.requestExecute({code, store_history: false});
    let printed = '';
    future.onIOPub = msg => { if (msg.header.msg_type === 'stream') printed += msg.content.text; };
    await future.done;
    return JSON.parse(printed);
}"""
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_a_cjk_font_is_installed():
    """Without one, Chromium draws Chinese text as boxes (Debian: fonts-noto-cjk)."""
    listed = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout
    assert listed.strip(), "no font with Chinese glyphs: apt-get install fonts-noto-cjk"


@pytest.mark.parametrize("chapter", CHAPTERS + CHINESE)
def test_chapter_runs_in_jupyterlab_and_its_widget_responds(lab, browser, chapter):
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        # A workspace of its own, reset: only this chapter open, whatever ran before.
        workspace = chapter.replace("/", "-").removesuffix(".ipynb")
        page.goto(f"{base}/lab/workspaces/{workspace}/tree/{chapter}?reset&token={token}")
        page.wait_for_function(KERNEL_IDLE, arg=chapter, timeout=90_000)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(ALL_CELLS_RUN, timeout=240_000, polling=500)

        failed = page.evaluate(CELL_ERRORS)
        unexpected = [cell for cell in failed if "raises-exception" not in cell["tags"]]
        assert not unexpected, f"{chapter}: cells failed in JupyterLab: {unexpected}"

        widget = page.locator(".jupyter-widgets.widget-vbox").first
        widget.scroll_into_view_if_needed()
        slider = widget.locator(".widget-slider").first
        assert slider.is_visible(), f"{chapter}: the main widget's slider is not visible"
        widget.locator("img").first.wait_for(timeout=60_000)
        before = widget.locator("img").first.get_attribute("src")
        widget.locator(".noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(IMAGE_CHANGED, arg=[widget.element_handle(), before], timeout=60_000)

        # The figures speak the chapter's language: Chinese in the Chinese edition (the kernel runs
        # in zh/, and a CJK font is installed), English in the English one.
        figures = page.evaluate(FIGURE_TEXT)
        assert figures and all(figures), f"{chapter}: a widget's figure has no title, axis label or legend"
        chinese = [any(CJK.search(text) for text in texts) for texts in figures]
        assert all(chinese) if chapter.startswith("zh/") else not any(chinese), f"{chapter}: {figures}"

        # The workbook's lab settings (jupyterlab-overrides.json) turn the news pop-up off: a class
        # projecting the notebook must not see it covering a corner.
        assert page.get_by_text("Jupyter news").count() == 0, "JupyterLab's news pop-up is showing"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{chapter.replace('/', '-').removesuffix('.ipynb')}.png"))
    finally:
        page.close()
