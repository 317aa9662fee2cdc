"""Live browser test of the workshop explorer (``make test-browser``; not part of ``make test``).

JupyterLab serves notebook 09 with a real kernel; headless Chromium (Debian's, driven by
Playwright) runs all its cells, then uses the explorer as a participant would: a method button, the
side-by-side mode, the Otsu checkbox and the threshold slider, another image, an upload. After each
action it waits for the status line to describe the new choice and checks that the picture changed
and that no error is shown; each latency is printed. The run explored is the smoke profile's,
built by the test (``SHAMSUL_BROWSER_PROFILE=demo`` explores the demo run under ``runs/`` instead;
``SHAMSUL_BROWSER_SCREENSHOT=path`` keeps a screenshot of the explorer at 1280 x 720, which is how
``figures/09_workshop_explorer.png`` is made from the demo run).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

REPOSITORY = Path(__file__).resolve().parents[2]
NOTEBOOK = "09_workshop_explorer.ipynb"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ERRORS = ("Error displaying widget", "Model not found", "Traceback (most recent", "color:#b00020")
STATUS = ".widget-html span"  # the explorer's status line (a coloured span in an HTML widget)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("chromium not found: install Debian's package (apt-get install -y chromium); "
                ".ci/run does this itself")


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds:.0f} s")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, str]:
    profile = os.environ.get("SHAMSUL_BROWSER_PROFILE", "smoke")
    if profile != "smoke":
        folder = Path(os.environ.get("SHAMSUL_RUNS", REPOSITORY / "runs"))
        if not (folder / profile / "checkpoints").is_dir():
            pytest.fail(f"no run of profile {profile!r} under {folder}: run `make reproduce PROFILE={profile}` first")
        return folder, profile
    from smoke_run import build_smoke_run

    return build_smoke_run(tmp_path_factory.mktemp("runs")), profile


@pytest.fixture(scope="module")
def lab(runs, tmp_path_factory):
    """JupyterLab on a free local port serving notebook 09 with ``profile`` injected; yields its URL."""
    import nbformat

    folder, profile = runs
    home = tmp_path_factory.mktemp("lab")
    served = home / "served"
    served.mkdir()
    notebook = nbformat.read(REPOSITORY / "notebooks" / NOTEBOOK, as_version=4)
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0].source.startswith("profile: str = ")
    parameters[0].source = f"profile: str = {profile!r}  # set by the browser test"
    nbformat.write(notebook, served / NOTEBOOK)
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    environment = {**os.environ, "SHAMSUL_RUNS": str(folder), "MPLCONFIGDIR": str(home),
                   "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
                   "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
                   "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={served}",
         "--LabApp.expose_app_in_browser=True"],
        cwd=served, env=environment, stdout=subprocess.DEVNULL, stderr=open(home / "lab.log", "w"),
        start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/api/status", 90)
        yield f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def page(lab):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="make test-browser installs playwright")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(lab, wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=120_000)
            page.wait_for_function("document.querySelector('.jp-Notebook-ExecutionIndicator, .jp-KernelStatus')"
                                   " !== null", timeout=120_000)
            time.sleep(2)  # the kernel connects
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_selector(f"{STATUS}", timeout=300_000)
            yield page
        finally:
            browser.close()


def _status(page) -> str:
    return page.locator(STATUS).first.inner_text()


def _picture(page) -> str:
    return page.locator(".widget-image").first.get_attribute("src") or ""


def _act(page, label: str, action, expected: str, timings: list, *, timeout: float = 180) -> None:
    """Do ``action``; wait until the status contains ``expected`` and no control is disabled."""
    before = _picture(page)
    start = time.monotonic()
    action()
    deadline = start + timeout
    must_change = not label.startswith("threshold")  # a threshold may leave the segmentation as it was
    while time.monotonic() < deadline:
        status = _status(page)
        busy = page.locator(".widget-toggle-button:disabled, .widget-dropdown select:disabled").count()
        picture = _picture(page)
        if expected in status and not busy and picture and (picture != before or not must_change):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"{label}: the status did not reach {expected!r} within {timeout:.0f} s "
                             f"(it says {_status(page)!r})")
    timings.append((label, time.monotonic() - start))
    content = page.content()
    shown = [text for text in ERRORS if text in content]
    assert not shown, f"{label}: the page shows {shown}"
    assert _picture(page) != before or not must_change, f"{label}: the picture did not change"


def test_every_control_updates_the_picture_and_the_status(page, runs, tmp_path):
    timings = []
    page.wait_for_function(f"document.querySelector('{STATUS}').innerText.includes('Grad-CAM for')",
                           timeout=180_000)
    assert not [text for text in ERRORS if text in page.content()]
    _act(page, "method: LRP", lambda: page.locator(".widget-toggle-button", has_text="LRP").first.click(),
         "LRP for", timings)
    _act(page, "show: all methods", lambda: page.locator(".widget-toggle-button", has_text="all methods").click(),
         "class(es) x", timings)
    assert "IoU per class and method" in page.content() and "Predictions" in page.content()
    _act(page, "show: one method", lambda: page.locator(".widget-toggle-button", has_text="one method").click(),
         "LRP for", timings)
    _act(page, "Otsu off", lambda: page.get_by_label("Otsu threshold (CheXlocalize)").uncheck(),
         "threshold 0.", timings)

    def slide() -> None:
        readout = page.locator(".widget-readout").first
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0.3")
        page.keyboard.press("Enter")

    _act(page, "threshold 0.30", slide, "threshold 0.30", timings)
    _act(page, "another image", lambda: page.locator(".widget-dropdown select").first.select_option(index=1), "for", timings)
    rows, columns = np.mgrid[0:300, 0:260]
    picture = (255 * (1.0 - np.hypot(rows / 300 - 0.5, columns / 260 - 0.5))).astype(np.uint8)
    upload = tmp_path / "my_radiograph.png"
    Image.fromarray(picture).save(upload)
    def send() -> None:  # the upload button opens the browser's file chooser, as for a participant
        with page.expect_file_chooser() as chooser:
            page.locator(".widget-upload").first.click()
        chooser.value.set_files(str(upload))

    _act(page, "upload a PNG", send, "my_radiograph.png", timings)
    _act(page, "upload: SHAP", lambda: page.locator(".widget-toggle-button", has_text="SHAP").first.click(),
         "SHAP for", timings)
    for label, seconds in timings:
        print(f"[browser] {label:22s} {seconds:5.2f} s")
    screenshot = os.environ.get("SHAMSUL_BROWSER_SCREENSHOT")
    if screenshot:  # the first image of the explanation set, Grad-CAM, Otsu: what a participant sees first
        _act(page, "first image", lambda: page.locator(".widget-dropdown select").first.select_option(index=0),
             "for", timings)
        _act(page, "method: Grad-CAM", lambda: page.locator(".widget-toggle-button", has_text="Grad-CAM").first
             .click(), "Grad-CAM for", timings)
        _act(page, "Otsu on", lambda: page.get_by_label("Otsu threshold (CheXlocalize)").check(), "Otsu threshold 0.",
             timings)
        page.evaluate("document.querySelector('.widget-vbox').closest('.jp-Cell').scrollIntoView({block: 'start'})")
        time.sleep(1.0)
        data = page.screenshot(full_page=False)
        image = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        image.save(screenshot, optimize=True)
