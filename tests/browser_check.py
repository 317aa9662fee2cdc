"""Browser check of the workshop explorer: JupyterLab renders the executed notebook 09 without errors.

A standalone script, not collected by pytest (no ``test_`` prefix); the lead runs it by hand::

    apt-get install -y chromium                      # Debian's chromium, once
    make smoke                                       # or any run of notebooks 01-06 of the profile
    .venv/bin/python tests/browser_check.py          # --profile smoke --output figures/09_workshop_explorer.png

What it does, each step bounded in time:

1. executes ``notebooks/09_workshop_explorer.ipynb`` with papermill (``profile`` = ``--profile``) into a
   temporary folder; papermill stores the widgets' state in the notebook, so JupyterLab can draw them;
2. starts JupyterLab from the venv on a free local port (no token, no browser, its own settings and
   workspace folders, news and update checks off) serving that folder;
3. loads ``/lab/tree/09_workshop_explorer.ipynb`` in headless chromium twice: ``--dump-dom`` to check the
   page (widget views present; no "Error displaying widget", "Model not found", "Kernel error" or Python
   traceback in it) and ``--screenshot`` (1400 x 1000);
4. stops JupyterLab and writes the screenshot (reduced to a 256-colour palette when over 300 KB) to
   ``--output`` (default ``figures/09_workshop_explorer.png``).

Exit status 0 when the page rendered without errors, 1 otherwise (the reason on stderr). Runs artefacts
are read from ``runs/<profile>/`` or ``$SHAMSUL_RUNS/<profile>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
NOTEBOOK = "09_workshop_explorer.ipynb"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000", "--hide-scrollbars"]
ERRORS = ("Error displaying widget", "Model not found", "model not found", "Kernel error", "Traceback (most recent",
          'style="color:#b00020"')  # the last: the explorer's own one-line error message
MAX_BYTES = 300_000
# Drawn widget views (not CSS selectors): the status line's colour span and the upload button's label.
WIDGET_MARKERS = ('style="color:#1b5e20"', "upload PNG/JPEG")


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _browser() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("browser check: chromium not found; install Debian's package: apt-get install -y chromium")


def _execute(profile: str, folder: Path) -> Path:
    import papermill

    target = folder / NOTEBOOK
    papermill.execute_notebook(str(REPOSITORY / "notebooks" / NOTEBOOK), str(target), parameters={"profile": profile},
                               kernel_name="python3", cwd=str(REPOSITORY / "notebooks"), progress_bar=False)
    return target


def _settings(folder: Path) -> dict[str, str]:
    """Own settings/workspace folders for JupyterLab: no news pop-up, no update check."""
    settings = folder / "settings"
    notification = settings / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (folder / "workspaces").mkdir()
    return {"JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces"),
            "JUPYTER_CONFIG_DIR": str(folder / "config"), "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
            "JUPYTER_DATA_DIR": str(folder / "data")}


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


class _DevTools:
    """Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fds 3 and 4)."""

    def __init__(self, browser: str, profile_dir: Path):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def fds() -> None:  # the browser reads commands on fd 3 and writes answers to fd 4
            os.dup2(to_browser, 3)  # dup2 makes them inheritable
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--remote-debugging-pipe", "about:blank"],
            close_fds=False, preexec_fn=fds, stdout=subprocess.DEVNULL,  # fds 3, 4 survive; Python's are CLOEXEC
            stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next = 0
        self.session = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, **params):
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        try:
            self.session = None
            self.call("Browser.close")
        except (OSError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self._write)
        os.close(self._read)


# JavaScript run in the page: bring the explorer's cell to the top.
_ARRANGE = """(() => {
  const widget = document.querySelector('.jp-OutputArea-output .widget-vbox');
  const cell = widget && widget.closest('.jp-Cell');
  if (cell) cell.scrollIntoView({block: 'start'});
  return Boolean(cell);
})()"""


def _render(browser: str, profile_dir: Path, url: str, screenshot: Path, timeout: float) -> str:
    """Load ``url``, wait (real time) until the widgets are drawn or ``timeout``; screenshot; return the DOM."""
    import base64

    tools = _DevTools(browser, profile_dir)
    try:
        tools.call("Page.enable")
        tools.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        dom = ""
        while time.monotonic() < deadline:
            time.sleep(1.0)
            dom = tools.evaluate("document.documentElement ? document.documentElement.outerHTML : ''") or ""
            if all(marker in dom for marker in WIDGET_MARKERS) and "Loading widget" not in dom:
                break
        for kind in ("keyDown", "keyUp"):  # Ctrl+B: JupyterLab collapses the file browser (more room)
            tools.call("Input.dispatchKeyEvent", type=kind, modifiers=2, key="b", code="KeyB",
                       windowsVirtualKeyCode=66)
        time.sleep(0.5)
        tools.evaluate(_ARRANGE)
        time.sleep(2.0)  # let the layout settle and the figure paint
        dom = tools.evaluate("document.documentElement.outerHTML") or dom
        data = tools.call("Page.captureScreenshot", format="png")["data"]
        screenshot.write_bytes(base64.b64decode(data))
        return dom
    finally:
        tools.close()


def _shrink(png: Path) -> None:
    if png.stat().st_size <= MAX_BYTES:
        return
    from PIL import Image

    with Image.open(png) as image:
        reduced = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    reduced.save(png, optimize=True)


def check(profile: str, output: Path, *, timeout: float = 90, keep_dom: Path | None = None) -> list[str]:
    """Run the check; returns the problems found (empty: rendered without errors)."""
    browser = _browser()
    problems = []
    with tempfile.TemporaryDirectory(prefix="browser_check_") as temporary:
        folder = Path(temporary)
        served = folder / "served"
        served.mkdir()
        notebook = _execute(profile, served)
        environment = {**os.environ, **_settings(folder)}
        # JupyterLab draws widget outputs of trusted notebooks only; we executed this one ourselves.
        subprocess.run([sys.executable, "-m", "nbformat.sign", str(notebook)], env=environment, check=True,
                       capture_output=True, timeout=60)
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--ServerApp.token=", "--ServerApp.password=", "--no-browser",
             f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={served}",
             "--ServerApp.open_browser=False", "--allow-root"],
            cwd=served, env=environment, stdout=subprocess.DEVNULL, stderr=open(folder / "lab.log", "w"),
            start_new_session=True)
        try:
            _wait_for(f"http://127.0.0.1:{port}/api/status", timeout)
            url = f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}"
            screenshot = folder / "screenshot.png"
            dom = _render(browser, folder / "chromium", url, screenshot, timeout)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        if "jp-Notebook" not in dom:
            problems.append("the notebook did not open in JupyterLab (no jp-Notebook in the page)")
        if not all(marker in dom for marker in WIDGET_MARKERS):
            problems.append("the explorer's widgets were not drawn (missing from the page: "
                            f"{', '.join(marker for marker in WIDGET_MARKERS if marker not in dom)})")
        if keep_dom is not None:
            keep_dom.write_text(dom)
        problems += [f"the page shows {text!r}" for text in ERRORS if text in dom]
        if not screenshot.is_file():
            problems.append("chromium wrote no screenshot")
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(screenshot, output)
            _shrink(output)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke", help="profile whose run the explorer uses (default smoke)")
    parser.add_argument("--output", type=Path, default=REPOSITORY / "figures" / "09_workshop_explorer.png")
    parser.add_argument("--keep-dom", type=Path, help="also write the page's DOM to this file (for debugging)")
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    problems = check(arguments.profile, arguments.output, keep_dom=arguments.keep_dom)
    seconds = time.perf_counter() - started
    for problem in problems:
        print(f"browser check: {problem}", file=sys.stderr)
    size = arguments.output.stat().st_size // 1000 if arguments.output.is_file() else 0
    print(f"browser check: {'FAILED' if problems else 'ok'} in {seconds:.0f} s; screenshot {arguments.output} "
          f"({size} KB)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
