"""Processes end with their parent: killing a stage (or DVC running it) leaves nothing running or writing.

Each test tags the processes it starts with a unique environment variable, which every
descendant inherits (forked workers too), and finds the survivors by scanning ``/proc``.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepfake.core import lifetime, paths
from deepfake.pipeline.quick import write_params

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="scans /proc (Linux)")

MARK = "DEEPFAKE_TEST_TREE"


# --------------------------------------------------------------------------------------------
# Finding a tree's processes
# --------------------------------------------------------------------------------------------


def _tree_env(marker: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, MARK: marker, "PYTHONPATH": str(paths.ROOT), **extra}
    env.pop("DEEPFAKE_STAGE", None)
    return env


def _marked(marker: str) -> dict[int, tuple[int, str]]:
    """Live (not zombie) processes carrying ``marker``: pid -> (parent pid, command line)."""
    needle = f"{MARK}={marker}".encode()
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle not in (d / "environ").read_bytes().split(b"\0"):
                continue
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if stat[0] != "Z":
            found[int(d.name)] = (int(stat[1]), cmd)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def _kill_tree(marker: str) -> None:
    """SIGKILL every process of this test's tree still running (clean-up after a failure)."""
    for pid in _marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _deaths(
    marker: str, tree: dict[int, tuple[int, str]], t0: float, timeout: float
) -> tuple[dict[int, float], dict[int, tuple[int, str]]]:
    """Follow ``tree`` for up to ``timeout`` s: seconds from ``t0`` until each pid ended, and the survivors."""
    left, ended = dict(tree), {}
    while left and time.monotonic() - t0 < timeout:
        now = _marked(marker)
        for pid in set(left) - set(now):
            ended[pid] = time.monotonic() - t0
        left = {pid: v for pid, v in left.items() if pid in now}
        time.sleep(0.02)
    return ended, left


def _roles(tree: dict[int, tuple[int, str]], named: dict[int, str]) -> dict[int, str]:
    """Name each process of a stage's tree: runner, kernel, forkserver, worker, resource tracker."""
    roles = dict(named)
    by_cmd = [("deepfake stage", "runner"), ("ipykernel", "kernel"), ("resource_tracker", "resource tracker")]
    for pid, (_, cmd) in tree.items():
        roles.setdefault(pid, next((role for text, role in by_cmd if text in cmd), cmd[:60]))
    for pid, (_, cmd) in tree.items():
        if "forkserver" in cmd:  # the server and the workers it forked share its command line
            roles[pid] = "worker" if "forkserver" in tree.get(tree[pid][0], (0, ""))[1] else "forkserver"
    return roles


def _crops(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.png"))


# --------------------------------------------------------------------------------------------
# end_with_parent
# --------------------------------------------------------------------------------------------

_CHILD = {
    "prctl": "from deepfake.core import lifetime\nlifetime.end_with_parent()\nlifetime.end_with_parent()\n",
    # the watcher thread used where prctl is missing; called twice, it still runs one thread
    "thread": "from deepfake.core import lifetime\nlifetime._set_death_signal = lambda sig: False\n"
    "lifetime.end_with_parent()\nlifetime.end_with_parent()\nimport threading\n"
    "assert threading.active_count() == 2, threading.enumerate()\n",
    "none": "",
}
_MIDDLE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["prctl", "thread", "none"])
def test_a_child_ends_when_its_parent_is_killed(how):
    marker = uuid.uuid4().hex
    code = _CHILD[how] + "print('ready', flush=True)\nimport time\ntime.sleep(60)\n"
    middle = subprocess.Popen(
        [sys.executable, "-c", _MIDDLE, code], stdout=subprocess.PIPE, text=True, env=_tree_env(marker)
    )
    try:
        child = int(middle.stdout.readline())
        assert _alive(child)
        middle.kill()
        middle.wait()
        if how == "none":  # the control: nothing ties the child to its parent
            assert not _wait_for(lambda: not _alive(child), timeout=1.0)
        else:
            assert _wait_for(lambda: not _alive(child), timeout=3.0), f"the child ({how}) outlived its parent"
    finally:
        middle.kill()
        _kill_tree(marker)


def test_a_parent_gone_before_the_call_ends_the_caller_at_once():
    # os.getppid() differs before and after arming the signal: the parent died in between
    code = (
        "import os, time\nfrom deepfake.core import lifetime\nreal = os.getppid\nseen = [real() + 1]\n"
        "os.getppid = lambda: seen.pop() if seen else real()\nlifetime.end_with_parent()\ntime.sleep(10)\n"
    )
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=_tree_env(uuid.uuid4().hex), timeout=30)
    assert proc.returncode == -signal.SIGTERM and time.monotonic() - t0 < 5


def test_sigterm_exits_raises_in_the_block_once_then_restores_the_handler(caplog):
    before, called = signal.getsignal(signal.SIGTERM), []
    with pytest.raises(SystemExit) as e, lifetime.sigterm_exits("cleaning up", on_signal=lambda: called.append(1)):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler raises here
        finally:
            during = signal.getsignal(signal.SIGTERM)
    assert e.value.code == 143 and called == [1] and "stopped by SIGTERM: cleaning up" in caplog.text
    assert during == signal.SIG_DFL  # a second SIGTERM ends the process, for a clean-up that hangs
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_exits_outside_the_main_thread_changes_nothing():
    before, errors = signal.getsignal(signal.SIGTERM), []

    def enter() -> None:
        try:
            with lifetime.sigterm_exits("x"):
                assert signal.getsignal(signal.SIGTERM) is before
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            errors.append(e)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join(10)
    assert errors == [] and signal.getsignal(signal.SIGTERM) is before


# --------------------------------------------------------------------------------------------
# Preprocessing and the stage, killed
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_dataset(tmp_path_factory):
    """200 copies (hard links) of two 3000-pixel JPEGs: ~20 s of preprocessing on two workers."""
    root = tmp_path_factory.mktemp("slow") / "raw"
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        folder = root / label
        folder.mkdir(parents=True)
        image = cv2.resize(rng.integers(0, 256, (190, 190, 3), dtype=np.uint8), (3000, 3000))
        image = cv2.add(image, rng.integers(0, 40, image.shape, dtype=np.uint8))  # slow to decode
        cv2.imwrite(str(folder / "000.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        for i in range(1, 100):
            os.link(folder / "000.jpg", folder / f"{i:03d}.jpg")
    return root


def _wait_for_crops(proc: subprocess.Popen, cache: Path, log: Path) -> None:
    started = _wait_for(lambda: (cache.is_dir() and _crops(cache) > 0) or proc.poll() is not None, 120, 0.1)
    assert started and proc.poll() is None, f"no crop written:\n{log.read_text()[-3000:]}"


def _kill_and_follow(victim: int, marker: str, roles: dict[int, str], cache: Path, timeout: float) -> None:
    """SIGKILL ``victim``; every process of the tree must end within ``timeout`` s, and no crop be written after."""
    tree = _marked(marker)
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    ended, left = _deaths(marker, tree, t0, timeout)
    shown = ", ".join(f"{roles.get(pid, pid)} {t:.2f} s" for pid, t in sorted(ended.items(), key=lambda x: x[1]))
    print(f"\nended after SIGKILL to the {roles[victim]}: {shown}")
    assert not left, f"still running {timeout} s after the kill: {[(roles.get(p), c) for p, (_, c) in left.items()]}"
    written = _crops(cache)
    time.sleep(2.0)  # a surviving writer would show within this
    assert _crops(cache) == written


@pytest.mark.slow
def test_killed_preprocessing_leaves_no_worker_running_or_writing(slow_dataset, tmp_path):
    """``deepfake.data.preprocess.preprocess`` on two workers in a process of its own, killed while it crops."""
    marker, cache, log = uuid.uuid4().hex, tmp_path / "faces", tmp_path / "log.txt"
    code = (
        "import sys\nfrom dataclasses import replace\nfrom deepfake.pipeline.params import load_params\n"
        "from deepfake.data.preprocess import preprocess\n"
        "preprocess(sys.argv[1], sys.argv[2], replace(load_params().preprocess, workers=2), progress=False)\n"
    )
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(slow_dataset), str(cache)],
            env=_tree_env(marker),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_crops(proc, cache, log)
        roles = _roles(_marked(marker), {proc.pid: "preprocess"})
        assert list(roles.values()).count("worker") == 2, roles
        _kill_and_follow(proc.pid, marker, roles, cache, timeout=15.0)
    finally:
        proc.kill()
        _kill_tree(marker)


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["dvc", "runner"])
def test_killing_dvc_or_the_runner_ends_the_whole_stage(slow_dataset, tmp_path, victim):
    """A stand-in for ``dvc repro`` runs the preprocess stage's command; it (or the runner) is killed while it crops."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "notebooks").symlink_to(paths.NOTEBOOKS_DIR)
    write_params(root / "params.yaml", {"data": {"raw_dir": str(slow_dataset)}, "preprocess": {"workers": 2}})
    stage = [sys.executable, "-m", "deepfake", "stage", "notebooks/00_preprocess.ipynb"]
    stage += [str(tmp_path / "out.ipynb"), "-p", "params_file", "params.yaml", "-p", "quick", "False"]
    dvc = "import subprocess, sys\nsys.exit(subprocess.Popen(sys.argv[1:]).wait())\n"
    marker, cache, log = uuid.uuid4().hex, root / "cache" / "faces", tmp_path / "log.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", dvc, *stage],
            cwd=root,
            env=_tree_env(marker, DEEPFAKE_ROOT=str(root)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_crops(proc, cache, log)
        roles = _roles(_marked(marker), {proc.pid: "dvc"})
        assert {"runner", "kernel", "forkserver"} <= set(roles.values()), roles
        assert list(roles.values()).count("worker") == 2, roles
        _kill_and_follow(next(pid for pid, role in roles.items() if role == victim), marker, roles, cache, timeout=20.0)
        if victim == "dvc":  # the runner, told by its death signal, shut its kernel down itself
            assert "stopped by SIGTERM: shutting the kernel down" in log.read_text()
    finally:
        proc.kill()
        _kill_tree(marker)
