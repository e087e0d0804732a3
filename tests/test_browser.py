"""The demo notebook in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

Runs every cell of ``notebooks/05_demo.ipynb`` with its defaults (``model="auto"``) twice:

* under this test run, where ``auto`` means the quick model: uploads an image of the default
  synthetic dataset through the page's file input, reads the verdict and the model line from the
  page, checks them against the Python API and takes a screenshot of the widget (kept in the
  test's temporary folder; with ``DEEPFAKE_SCREENSHOT=path``, e.g. ``make screenshot``, written
  there: ``docs/demo_widget.png`` is made that way); then uploads a file over the size limit,
  which must replace the verdict with a visible message;
* in a temporary project (``DEEPFAKE_ROOT``) holding a trained ``models/best.pt`` and its
  ``reports/eval/calibration.json``, as ``make repro`` leaves them, with nothing marking a test
  run: the widget must load that model and say so.

Skipped only when Chromium or Playwright is missing (``.ci/run`` installs both).
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from deepfake.core import paths
from deepfake.data.synth import SynthConfig, make_image
from deepfake.metrics.calibration import checkpoint_record, save_calibration
from deepfake.pipeline import sandbox, stages

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


@contextlib.contextmanager
def _jupyterlab(root: Path, env: dict[str, str]):
    """A JupyterLab server serving a copy of the demo notebook in ``root`` (so autosave never touches the repo)."""
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = sandbox.free_port(), secrets.token_hex(16)
    env = {
        **env,
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
def lab(tmp_path_factory):
    """The demo under this test run (``PYTEST_CURRENT_TEST`` reaches the kernel): ``auto`` is the quick model."""
    stages.open_stage("demo", quick=True)  # the quick model and its calibration, as the notebook builds them
    with _jupyterlab(tmp_path_factory.mktemp("lab"), dict(os.environ)) as server:
        yield server


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory):
    """A project after ``make repro``: params.yaml, a trained models/best.pt and the calibration fitted for it.

    The checkpoint is the quick check's (trained for one epoch); its calibration file records its
    temperature and threshold and the checkpoint's hash, as the evaluate stage writes them.
    """
    stages.open_stage("demo", quick=True)
    root = tmp_path_factory.mktemp("project")
    shutil.copy(paths.PARAMS_FILE, root / "params.yaml")
    ckpt = root / "models" / "best.pt"
    ckpt.parent.mkdir()
    shutil.copy(QUICK.checkpoint, ckpt)
    quick = json.loads(QUICK.calibration.read_text())
    calibration = root / "reports" / "eval" / "calibration.json"
    save_calibration(
        calibration, quick["temperature"], quick["threshold"], quick["threshold_rule"], **checkpoint_record(ckpt)
    )
    return root, ckpt, calibration


@pytest.fixture(scope="module")
def trained_lab(trained_project, tmp_path_factory):
    """The demo as a person opens it after ``make repro``: the project is ``DEEPFAKE_ROOT``, and no test run shows."""
    root, _, _ = trained_project
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    with _jupyterlab(tmp_path_factory.mktemp("lab"), {**env, "DEEPFAKE_ROOT": str(root)}) as server:
        yield server


@pytest.fixture(scope="module")
def default_image(tmp_path_factory):
    """A fake image exactly as the default dataset (params.yaml 'synth') holds it."""
    data, row = make_image(SynthConfig(), identity=7, index=0, fake=True)
    path = tmp_path_factory.mktemp("upload") / f"id00007_00_{row['manipulation']}.jpg"
    path.write_bytes(data)
    return path


def _run_notebook(page, base: str, token: str) -> None:
    """Open the notebook copy, wait for its kernel, run every cell and wait for the widget."""
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
    page.locator(".deepfake-upload").wait_for(state="visible", timeout=180_000)


def _upload(page, path: Path) -> None:
    with page.expect_file_chooser() as chooser:  # the upload button opens its (detached) file input
        page.locator(".deepfake-upload").click()
    chooser.value.set_files(str(path))


def _verdict(page) -> tuple[str, float]:
    verdict = page.locator(".deepfake-verdict")
    verdict.wait_for(timeout=120_000)
    page.locator(".deepfake-gradcam").wait_for(state="visible", timeout=60_000)
    return verdict.inner_text(), float(page.locator(".deepfake-probability").inner_text())


@contextlib.contextmanager
def _demo_page(base: str, token: str):
    """Chromium on the demo notebook in JupyterLab, every cell run."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            _run_notebook(page, base, token)
            yield page
        finally:
            browser.close()


def test_demo_notebook_scores_an_upload_in_chromium(lab, default_image, tmp_path):
    screenshot = Path(os.environ.get("DEEPFAKE_SCREENSHOT") or tmp_path / "demo_widget.png").resolve()
    from deepfake.inference.predict import get_predictor

    big = tmp_path / "big.jpg"  # over the demo's 10 MB, under the 10 MiB Jupyter carries: it reaches the kernel
    big.write_bytes(default_image.read_bytes() + bytes(10_200_000))
    base, token, root = lab
    with _demo_page(base, token) as page:
        model_line = page.locator(".deepfake-model").inner_text()
        limit = page.locator(".deepfake-limit").inner_text()
        note = page.locator(".deepfake-limit-note").inner_text()
        _upload(page, default_image)
        text, shown_prob = _verdict(page)
        demo = page.locator(".deepfake-demo")
        demo.scroll_into_view_if_needed()
        page.wait_for_function(
            "[...document.querySelectorAll('.deepfake-demo img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        demo.screenshot(path=str(screenshot))
        errors = page.locator(".deepfake-message.deepfake-error").count()
        _upload(page, big)  # too large: the verdict must give way to a message
        message = page.locator(".deepfake-message.deepfake-error")
        message.wait_for(timeout=120_000)
        too_large = message.inner_text()
        verdicts_after = page.locator(".deepfake-verdict").count()

    want = get_predictor(QUICK.checkpoint, "cpu", calibration_file=str(QUICK.calibration)).predict(default_image)
    assert errors == 0
    assert text.split()[0] == want.label.upper()
    assert shown_prob == pytest.approx(want.probability, abs=1e-3)
    assert "Model build/quick/models/best.pt: resnet18, epoch 1" in model_line and "under a test run" in model_line
    assert "Calibration build/quick/reports/eval/calibration.json: temperature" in model_line
    assert "fitted for this checkpoint" in model_line
    assert limit == "files up to 10 MB" and "10 MiB" in note and "never reaches Python" in note
    assert too_large.startswith("Too large: big.jpg is 10.2 MB") and verdicts_after == 0
    from PIL import Image

    with Image.open(screenshot) as im:
        assert im.width > 400 and im.height > 250  # model line, upload row, verdict, bar and two images
    assert not any(root.glob("*.jpg")), "the upload must not be written next to the notebook"


def test_demo_notebook_loads_the_trained_model_when_it_exists(trained_lab, trained_project, default_image):
    from deepfake.inference.predict import PredictConfig, Predictor

    root, ckpt, calibration = trained_project
    base, token, _ = trained_lab
    with _demo_page(base, token) as page:
        model_line = page.locator(".deepfake-model").inner_text()
        _upload(page, default_image)
        text, shown_prob = _verdict(page)
        errors = page.locator(".deepfake-message.deepfake-error").count()

    want_model = Predictor(ckpt, "cpu", PredictConfig(calibration_file=str(calibration)))
    want = want_model.predict(default_image)
    cal = json.loads(calibration.read_text())
    assert f"Model models/best.pt: resnet18, epoch {want_model.meta['epoch']}, validation AUC" in model_line
    assert "(trained by make repro: model='auto' picks it when it exists)" in model_line
    assert (
        f"Calibration reports/eval/calibration.json: temperature {cal['temperature']:.3g}, "
        f"threshold {cal['threshold']:.3f}, fitted for this checkpoint"
    ) in model_line
    assert errors == 0 and text.split()[0] == want.label.upper()
    assert shown_prob == pytest.approx(want.probability, abs=1e-3)
