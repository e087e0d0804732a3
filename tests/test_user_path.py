"""The user's own commands on a dataset holding what is not a regular file: ``make repro``, ``dvc repro``,
``dvc exp run`` and ``dvc status`` run for real, each under a hard time limit, so that a hang fails the
test instead of the CI run.

One temporary copy of the repository (a git repository, as a clone is) with tiny settings and a
48-image synthetic dataset in ``data/raw`` holding a FIFO, a link to ``/dev/zero``, a UNIX socket, a
broken link and a link loop, each also listed in the dataset's ``manifest.csv`` (the synthetic set's
layout: only the files it lists are the dataset's). DVC reads the dataset through its inventory
(``reports/inventory/inventory.csv``, stage ``inventory``), never the folder, and no stage opens
what is not a regular file. The tests run in order on that copy; the last one replaces the images.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from deepfake.pipeline import quick, sandbox

pytestmark = pytest.mark.slow

#: Hard limits: a command still running then is killed and the test fails (the tiny run takes a
#: minute or two on 2 CPU cores; a hang would never end).
MAKE_REPRO_SECONDS = 900
COMMAND_SECONDS = 300
#: The special paths and the reason the preprocess stage lists each with.
SPECIAL = {
    "real/fifo.jpg": "not_regular_file",
    "real/zero.jpg": "not_regular_file",
    "real/socket.jpg": "not_regular_file",
    "real/broken.jpg": "broken_link",
    "real/loop.jpg": "link_loop",
}
VENV = Path(sys.executable).parent.parent
DVC = str(Path(sys.executable).parent / "dvc")


def _add_special_files(raw: Path) -> None:
    """The five special paths in ``raw``/real, each also a row of the manifest."""
    quick.add_special_files(raw)
    manifest = pd.read_csv(raw / "manifest.csv", dtype=str, keep_default_na=False)
    rows = pd.DataFrame({"file": list(SPECIAL), "label": "real", "group": "special"})
    pd.concat([manifest, rows], ignore_index=True).fillna("").to_csv(raw / "manifest.csv", index=False)


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = COMMAND_SECONDS, ok: bool = True) -> str:
    """Run ``cmd``, its output and errors together; with ``ok``, fail the test when it exits non-zero,
    and always when it is still running after ``timeout`` seconds."""
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        out = e.output.decode() if isinstance(e.output, bytes) else e.output or ""
        pytest.fail(f"{' '.join(cmd)} still running after {timeout:.0f} s (a hang); its output:\n{out[-3000:]}")
    if ok:
        assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-4000:]}"
    else:
        assert proc.returncode != 0, f"{' '.join(cmd)} exited 0:\n{proc.stdout[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The repository copy, its dataset with the special paths, and the environment its commands run in."""
    if not (VENV / ".deepfake-installed").is_file():
        pytest.skip(f"{VENV} was not installed by make install: make repro would install it")
    root = tmp_path_factory.mktemp("user") / "deepfake"
    root.mkdir()
    sandbox.copy_repository(root, sandbox.TINY_PROJECT)
    env = {
        **os.environ,
        "PYTHONPATH": str(root),  # this copy's package, also in the commands DVC starts
        "DEEPFAKE_PYTHON": sys.executable,
        "DVC_NO_ANALYTICS": "1",
        "MPLBACKEND": "Agg",
        "TQDM_DISABLE": "1",
    }
    env.pop("DEEPFAKE_ROOT", None)
    run([sys.executable, "-m", "deepfake", "synth"], root, env)
    _add_special_files(root / "data" / "raw")
    return root, env


def _skipped(root: Path) -> dict[str, str]:
    table = pd.read_csv(root / "reports/preprocess/skipped.csv", dtype=str, keep_default_na=False)
    return dict(zip(table["source"], table["reason"]))


def test_make_repro_finishes_and_lists_every_special_path(project):
    root, env = project
    out = run(["make", "repro", f"VENV={VENV}"], root, env, timeout=MAKE_REPRO_SECONDS)
    assert "the dataset differs from the committed reports/inventory/inventory.csv" in out  # make data's check
    for stage in ("inventory", "preprocess", "split", "train", "evaluate", "plots", "benchmark"):
        assert f"Running stage '{stage}'" in out
    assert _skipped(root) == SPECIAL
    inventory = pd.read_csv(root / "reports/inventory/inventory.csv", dtype=str, keep_default_na=False)
    assert inventory.set_index("path").loc[list(SPECIAL), "reason"].to_dict() == SPECIAL
    assert (root / "models/best.pt").is_file()


def test_a_second_dvc_repro_runs_nothing_downstream_of_an_unchanged_inventory(project):
    root, env = project
    inventory = root / "reports/inventory/inventory.csv"
    before = inventory.stat().st_mtime_ns
    out = run([DVC, "repro"], root, env)
    assert "Running stage 'inventory'" in out  # every time: DVC cannot tell a folder changed without reading it
    ran = re.findall(r"Running stage '([^']+)'", out)
    assert ran == ["inventory"], out
    for stage in ("preprocess", "split", "train", "evaluate", "plots", "benchmark"):
        assert f"Stage '{stage}' didn't change, skipping" in out
    assert inventory.stat().st_mtime_ns == before  # not rewritten: its content is the same


def _strace_opens(cmd: list[str], root: Path, env: dict[str, str], under: Path) -> list[str]:
    """The files below ``under`` that ``cmd`` (and every process it starts) opened, by strace."""
    log = root.parent / "strace.log"
    run(["strace", "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(log), *cmd], root, env)
    text = log.read_text()
    log.unlink()
    # a call interrupted by another thread's is printed "<unfinished ...>": its flags end the match
    calls = re.findall(r'open\w*\([^"]*"([^"]+)",\s*([A-Z_|]+)', text)
    # listing a folder (O_DIRECTORY) reads no file; any other open counts, failed or not
    opened = {p if p.startswith("/") else str(root / p) for p, flags in calls if "O_DIRECTORY" not in flags}
    return sorted(p for p in opened if p.startswith(f"{under}/"))


def test_dvc_status_reads_no_file_of_the_dataset(project):
    """Counted with strace: every file any process of ``dvc status`` opens. None is below ``data/raw``,
    while the inventory, run the same way without its stat record, opens every image (the count can
    fail), and with it opens none."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    root, env = project
    raw = root / "data" / "raw"
    status = _strace_opens([DVC, "status"], root, env, raw)
    assert status == []
    inventory = [sys.executable, "-m", "deepfake", "inventory", "--no-progress"]
    assert _strace_opens(inventory, root, env, raw) == [str(raw / "manifest.csv")]  # unchanged files: stat only
    shutil.rmtree(root / "cache" / "inventory")
    opened = _strace_opens(inventory, root, env, raw)
    assert len([p for p in opened if p.endswith(".jpg")]) == 48 and not set(opened) & {str(raw / s) for s in SPECIAL}


def test_dvc_exp_run_finishes(project):
    root, env = project
    out = run([DVC, "exp", "run", "-S", "preprocess.retry_skipped=true"], root, env)
    ran = re.findall(r"Running stage '([^']+)'", out)
    # a preprocess setting changed (check_params reads every section); the crops are the same: nothing below runs
    assert ran == ["check_params", "inventory", "preprocess"], out
    assert _skipped(root) == SPECIAL  # tried again, each still listed, none opened


@pytest.mark.parametrize("arch", ["efficientnet_b0", "xception41", "convnext_atto"])
def test_dvc_exp_run_with_a_timm_backbone_runs_every_stage(project, arch):
    """A timm model by name through the user's command: train, evaluate and every stage after them run,
    and the metrics, the checkpoint and its preprocessing contract are the new backbone's."""
    root, env = project
    out = run([DVC, "exp", "run", "-S", f"train.arch={arch}"], root, env)
    ran = re.findall(r"Running stage '([^']+)'", out)
    for stage in ("train", "evaluate", "plots", "benchmark"):
        assert stage in ran, out
    assert "preprocess" not in ran and "split" not in ran  # the same crops and split as every detector
    import torch

    ckpt = torch.load(root / "models/best.pt", map_location="cpu", weights_only=False)
    assert ckpt["arch"] == arch
    metrics = json.loads((root / "reports/eval/metrics.json").read_text())
    assert 0.0 <= metrics["roc_auc"] <= 1.0 and metrics["n_images"] > 0


def test_dvc_status_opens_no_file_of_the_dataset_even_when_each_is_a_fifo(project):
    """Without strace: every image is replaced by a FIFO of its name. Opening any of them would block
    ``dvc status`` for ever; it returns within seconds, so it opened none (DVC's old dependency on the
    folder hashed every file). Last: the dataset is spoiled."""
    root, env = project
    raw = root / "data" / "raw"
    images = sorted(raw.rglob("*.jpg"))
    images = [p for p in images if p.relative_to(raw).as_posix() not in SPECIAL]
    assert len(images) == 48
    for p in images:
        p.unlink()
        os.mkfifo(p)
    out = run([DVC, "status"], root, env, timeout=120)
    assert "inventory:" in out and "always changed" in out
