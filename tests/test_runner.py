"""The stage runner (``python -m deepfake stage NAME``), run as dvc.yaml runs it, in a scratch project."""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepfake.core import paths
from deepfake.data.preprocess import STAT_NAME
from deepfake.data.synth import SynthConfig, generate
from deepfake.pipeline.quick import write_params
from deepfake.pipeline.runner import NOTEBOOKS, scrub_times

pytestmark = pytest.mark.slow


def _digests(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    (root / "notebooks").symlink_to(paths.NOTEBOOKS_DIR)
    write_params(root / "params.yaml", {"preprocess": {"workers": 1}, "split": {"val_frac": 0.25, "test_frac": 0.25}})
    cfg = SynthConfig(n_identities=16, images_per_identity=1, image_size=48, seed=5, family_size=2, workers=1)
    generate(root / "data" / "raw", cfg, progress=False)
    return root


def _stage(root: Path, name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEEPFAKE_ROOT": str(root), "DEEPFAKE_PROGRESS_SECONDS": "0", "PYTHONPATH": str(paths.ROOT)}
    env.pop("TQDM_DISABLE", None)
    nb = NOTEBOOKS[name]
    return subprocess.run(
        [sys.executable, "-m", "deepfake", "stage", f"notebooks/{nb}.ipynb", f"reports/notebooks/{nb}.ipynb"]
        + ["-p", "params_file", "params.yaml", "-p", "quick", "False"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_stages_log_quietly_and_rewrite_identical_files_whatever_the_file_times(project):
    outputs = {}
    for attempt in range(2):
        logs = {}
        for name in ("preprocess", "split"):
            proc = _stage(project, name)
            assert proc.returncode == 0, proc.stderr[-3000:]
            logs[name] = proc.stderr
            assert f"[{name}] running notebooks/" in logs[name] and f"[{name}] done in" in logs[name]
            for noise in ("Executing Cell", "without encryption", "Ending Cell", "Input Notebook"):
                assert noise not in logs[name] + proc.stdout
        # the package's messages and progress lines (rate, time) reach the log, not the notebook
        assert "[preprocess] decoded 32 source(s)" in logs["preprocess"]
        assert "[preprocess] preprocess: 32/32 files (100%)" in logs["preprocess"]
        outputs[attempt] = {
            "cache": _digests(project / "cache" / "faces", skip=(STAT_NAME,)),
            "reports": _digests(project / "reports", skip=("timings.json",)),
        }
        # a fresh clone: the cache rebuilt from sources with other modification times
        for p in (project / "data" / "raw").rglob("*.jpg"):
            t = time.time() - 86400 * (attempt + 2)
            os.utime(p, (t, t))
        if attempt == 0:
            subprocess.run(["rm", "-rf", str(project / "cache")], check=True)
    assert outputs[0] == outputs[1]
    written = set(outputs[0]["reports"])
    assert {"notebooks/00_preprocess.ipynb", "preprocess/metrics.json", "split/metrics.json"} <= written
    assert (project / "cache" / "faces" / STAT_NAME).is_file()  # the times are kept, outside the hashed content


def test_a_failing_stage_exits_non_zero_naming_the_error_and_the_notebook(project, tmp_path):
    bad = project / "params.yaml"
    original = bad.read_text()
    try:
        bad.write_text(original.replace("val_frac: 0.25", "val_frac: 1.5"))
        proc = _stage(project, "split")
    finally:
        bad.write_text(original)
    assert proc.returncode == 1
    assert "error: stage split failed: ConfigError" in proc.stderr and "split.val_frac" in proc.stderr
    assert "reports/notebooks/01_split.ipynb" in proc.stderr


def test_scrub_times_drops_run_times_and_fixes_the_injected_cell_id():
    nb = {
        "metadata": {"papermill": {"start_time": "t0", "end_time": "t1", "duration": 3.0, "parameters": {"a": 1}}},
        "cells": [
            {"id": "a1b2", "metadata": {"tags": ["injected-parameters"], "papermill": {"duration": 0.1}}},
            {"id": "keep", "metadata": {"execution": {"iopub.status.busy": "t"}, "tags": []}},
        ],
    }
    out = scrub_times(nb, "notebooks/x.ipynb", "reports/notebooks/x.ipynb")
    assert out["metadata"]["papermill"] == {
        "parameters": {"a": 1},
        "input_path": "notebooks/x.ipynb",
        "output_path": "reports/notebooks/x.ipynb",
    }
    assert out["cells"][0] == {"id": "injected-parameters", "metadata": {"tags": ["injected-parameters"]}}
    assert out["cells"][1] == {"id": "keep", "metadata": {"tags": []}}
