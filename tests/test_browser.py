"""The demo notebook in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

Runs every cell of ``notebooks/05_demo.ipynb`` (its quick-check defaults), uploads an image of
the default synthetic dataset through the page's file input, reads the verdict from the page,
checks it against the Python API, and takes a screenshot of the widget (kept in the test's
temporary folder; with ``DEEPFAKE_SCREENSHOT=path``, e.g. ``make screenshot``, written there:
``reports/figures/demo_widget.png`` is made that way). Skipped only when Chromium or Playwright is missing
(``.ci/run`` installs both).
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from deepfake import paths, pipeline
from deepfake.synth import SynthConfig, make_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)"),
    pytest.mark.skipif(sync_playwright is None, reason="Playwright is not installed (pip install playwright)"),
]

NOTEBOOK = paths.NOTEBOOKS_DIR / "05_demo.ipynb"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# the notebook's quick-check defaults
QUICK = paths.layout("", "", quick=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and the kernels it started (they share its session)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server serving a copy of the demo notebook (so autosave never touches the repo)."""
    pipeline.open_stage(
        "demo", quick=True
    )  # the quick model and its calibration, as the notebook's first cell builds them
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(paths.ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "MPLBACKEND": "Agg",
        "TQDM_DISABLE": "1",
        "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.workspaces_dir={root / '.workspaces'}",
        "--LabApp.news_url=",
        "--ServerApp.port_retries=0",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        yield f"http://127.0.0.1:{port}", token, root
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def default_image(tmp_path_factory):
    """A fake image exactly as the default dataset (params.yaml 'synth') holds it."""
    data, row = make_image(SynthConfig(), identity=7, index=0, fake=True)
    path = tmp_path_factory.mktemp("upload") / f"id00007_00_{row['manipulation']}.jpg"
    path.write_bytes(data)
    return path


def test_demo_notebook_scores_an_upload_in_chromium(lab, default_image, tmp_path):
    screenshot = Path(os.environ.get("DEEPFAKE_SCREENSHOT") or tmp_path / "demo_widget.png").resolve()
    from deepfake.predict import get_predictor

    base, token, root = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", timeout=120_000)
            page.wait_for_function(
                "window.jupyterapp && window.jupyterapp.shell.currentWidget"
                " && window.jupyterapp.shell.currentWidget.sessionContext"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                timeout=120_000,
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            button = page.locator(".deepfake-upload")
            button.wait_for(state="visible", timeout=180_000)
            with page.expect_file_chooser() as chooser:  # the upload button opens its (detached) file input
                button.click()
            chooser.value.set_files(str(default_image))
            verdict = page.locator(".deepfake-verdict")
            verdict.wait_for(timeout=120_000)
            page.locator(".deepfake-gradcam").wait_for(state="visible", timeout=60_000)
            text = verdict.inner_text()
            shown_prob = float(page.locator(".deepfake-probability").inner_text())
            demo = page.locator(".deepfake-demo")
            demo.scroll_into_view_if_needed()
            page.wait_for_function(
                "[...document.querySelectorAll('.deepfake-demo img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            demo.screenshot(path=str(screenshot))
            errors = page.locator(".deepfake-message.deepfake-error").count()
        finally:
            browser.close()

    want = get_predictor(QUICK.checkpoint, "cpu", calibration_file=str(QUICK.calibration)).predict(default_image)
    assert errors == 0
    assert text.split()[0] == want.label.upper()
    assert shown_prob == pytest.approx(want.probability, abs=1e-3)
    from PIL import Image

    with Image.open(screenshot) as im:
        assert im.width > 400 and im.height > 250  # upload row, verdict, bar and two images
    assert not any(root.glob("*.jpg")), "the upload must not be written next to the notebook"
