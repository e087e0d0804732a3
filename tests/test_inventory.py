"""The dataset's inventory (deepfake/pipeline/inventory.py): listed by stat, never opening what is not a regular file,
each file read once, rewritten only when its content changes, and the same in every clone."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from deepfake.core import paths
from deepfake.data.layouts import LayoutConfig
from deepfake.data.media import BadInputError, sha256_regular_file
from deepfake.pipeline import quick
from deepfake.pipeline.inventory import take_inventory
from deepfake.pipeline.quick import write_params

#: The special paths of a torture run and the reason each is listed with.
SPECIAL = {
    "real/fifo.jpg": "not_regular_file",
    "real/zero.jpg": "not_regular_file",
    "real/socket.jpg": "not_regular_file",
    "real/broken.jpg": "broken_link",
    "real/loop.jpg": "link_loop",
}


@contextlib.contextmanager
def hang_guard(seconds: int = 30) -> Iterator[None]:
    """Fail instead of hanging: a blocking open of a FIFO or an endless read is interrupted by SIGALRM."""

    def fail(*_: object) -> None:  # pytest's Failed is no OSError: no handler of the code under test swallows it
        pytest.fail(f"still running after {seconds} s: something opened a FIFO or read /dev/zero")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture()
def folders(tiny_dataset, tmp_path):
    """The tiny dataset as real/ and fake/ folders (no manifest.csv: every path below is listed)."""
    root = tmp_path / "raw"
    shutil.copytree(tiny_dataset, root, symlinks=True)
    (root / "manifest.csv").unlink()
    return root


def _inventory(root: Path, out: Path, stat: Path | None = None):
    return take_inventory(root, out, LayoutConfig(), None, 1 << 30, stat, progress=False)


def test_special_files_are_listed_with_their_reasons_never_opened(folders, tmp_path):
    quick.add_special_files(folders)
    with hang_guard():
        inv = _inventory(folders, tmp_path / "inventory.csv", tmp_path / "stat.json")
    table = pd.read_csv(tmp_path / "inventory.csv", dtype=str, keep_default_na=False)
    left = table[table["reason"] != ""].set_index("path")
    assert left["reason"].to_dict() == SPECIAL
    assert left.loc["real/fifo.jpg", "detail"] == "a FIFO (named pipe)"
    assert left.loc["real/zero.jpg", "detail"] == "a character device"
    assert left.loc["real/socket.jpg", "detail"] == "a socket"
    used = table[table["reason"] == ""]
    assert len(used) == 48 and used["sha256"].str.len().eq(64).all() and used["bytes"].astype(int).gt(0).all()
    assert inv.counts() == {"images": 48, "videos": 0, "left_out": 5}
    assert inv.hashed == 48 and inv.written


def test_a_second_run_reads_nothing_and_rewrites_nothing(folders, tmp_path):
    out, stat = tmp_path / "inventory.csv", tmp_path / "stat.json"
    _inventory(folders, out, stat)
    before = out.stat().st_mtime_ns
    again = _inventory(folders, out, stat)
    assert (again.hashed, again.reused, again.written) == (0, 48, False)
    assert out.stat().st_mtime_ns == before


def test_a_touched_file_is_read_again_and_changes_nothing_a_changed_one_does(folders, tmp_path):
    out, stat = tmp_path / "inventory.csv", tmp_path / "stat.json"
    first = _inventory(folders, out, stat).table
    image = sorted((folders / "fake").glob("*.jpg"))[0]
    os.utime(image, ns=(1, 1))  # a new time stamp, the same bytes
    touched = _inventory(folders, out, stat)
    assert (touched.hashed, touched.written) == (1, False)
    image.write_bytes(image.read_bytes() + b"\0")  # the same size would do too: its mtime and ctime change
    changed = _inventory(folders, out, stat)
    assert (changed.hashed, changed.written) == (1, True)
    diff = first.compare(changed.table)
    assert set(diff.columns.get_level_values(0)) == {"bytes", "sha256"} and len(diff) == 1


def test_the_inventory_is_the_same_in_every_clone(folders, tmp_path):
    """No time stamp, inode or absolute path in it: a copy made elsewhere, at another time, lists the same."""
    copy = tmp_path / "elsewhere" / "raw"
    shutil.copytree(folders, copy)  # new inodes and time stamps
    _inventory(folders, tmp_path / "a.csv")
    _inventory(copy, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_the_manifest_layout_lists_its_rows_and_their_own_columns(tiny_dataset, tmp_path):
    table = _inventory(tiny_dataset, tmp_path / "inventory.csv").table
    assert {"manipulation", "identity"} <= set(table.columns)
    assert table["group"].str.startswith("fam").all()  # the manifest's groups, as the preprocess stage takes them
    assert list(table.columns[:9]) == ["path", "kind", "label", "group", "split", "bytes", "sha256", "reason", "detail"]


def test_a_file_replaced_by_a_fifo_is_refused_on_the_open_handle(tmp_path):
    """What the stat record or a listing did not see (a file swapped after it) is still never read."""
    os.mkfifo(tmp_path / "swapped.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    with hang_guard():
        for name, detail in (("swapped.jpg", "a FIFO (named pipe)"), ("zero.jpg", "a character device")):
            with pytest.raises(BadInputError) as e:
                sha256_regular_file(tmp_path / name)
            assert (e.value.reason, e.value.detail) == ("not_regular_file", detail)


def test_a_file_above_the_byte_cap_is_listed_unread(folders, tmp_path):
    table = take_inventory(folders, tmp_path / "i.csv", LayoutConfig(), None, 100, None, progress=False).table
    assert table["reason"].eq("file_too_large").all() and table["sha256"].eq("").all()


def _project(tmp_path: Path, raw: Path, **overrides: dict) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "project"
    root.mkdir()
    write_params(root / "params.yaml", {"data": {"raw_dir": str(raw)}, **overrides})
    env = {**os.environ, "DEEPFAKE_ROOT": str(root), "PYTHONPATH": str(paths.ROOT)}
    return root, env


@pytest.mark.slow  # the command validates the whole params file: a few seconds of imports
def test_the_command_writes_the_inventory_of_data_raw_dir(folders, tmp_path):
    quick.add_special_files(folders)
    root, env = _project(tmp_path, folders)
    cmd = [sys.executable, "-m", "deepfake", "inventory", "--no-progress"]
    first = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "48 image(s), 0 video(s), 5 path(s) left out (written)" in first.stdout
    assert "not_regular_file 3" in first.stderr and "read 48 new or changed file(s)" in first.stderr
    table = pd.read_csv(root / "reports/inventory/inventory.csv", dtype=str, keep_default_na=False)
    assert len(table) == 53
    second = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert "(unchanged)" in second.stdout and "read 0 new or changed file(s), 48 unchanged" in second.stderr


@pytest.mark.slow  # the command validates the whole params file: a few seconds of imports
def test_the_command_lists_a_cross_dataset_and_refuses_an_unknown_name(folders, tmp_path):
    root, env = _project(tmp_path, folders, cross_dataset={"other": str(folders)})
    cmd = [sys.executable, "-m", "deepfake", "inventory", "--no-progress", "--cross"]
    ok = subprocess.run([*cmd, "other"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (root / "reports/inventory/cross_other.csv").is_file()
    bad = subprocess.run([*cmd, "nope"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "'nope' is not under cross_dataset" in bad.stderr


@pytest.mark.slow  # the command validates the whole params file: a few seconds of imports
def test_the_command_names_a_dataset_that_is_not_there(tmp_path):
    root, env = _project(tmp_path, tmp_path / "missing")
    out = subprocess.run(
        [sys.executable, "-m", "deepfake", "inventory"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1 and "does not exist" in out.stderr


@pytest.mark.slow  # three runs of the command: a few seconds of imports each
def test_in_a_dvc_experiments_copy_the_command_reads_the_queuing_workspaces_dataset(folders, tmp_path):
    """DVC runs a queued experiment in a copy of the repository that has no dataset (git-ignored) and no
    stat record, with ``DVC_ROOT`` naming the workspace that queued it: the copy lists that workspace's
    dataset, starts from its stat record (no file read again) and writes only its own files."""
    workspace, copy = tmp_path / "workspace", tmp_path / "copy"
    for root in (workspace, copy):
        root.mkdir()
        write_params(root / "params.yaml", {"data": {"raw_dir": "data/raw"}})
    shutil.move(folders, workspace / "data" / "raw")
    cmd = [sys.executable, "-m", "deepfake", "inventory", "--no-progress"]

    def run(root: Path, **extra: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "DEEPFAKE_ROOT": str(root), "PYTHONPATH": str(paths.ROOT), **extra}
        return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)

    assert run(workspace, DVC_ROOT=str(workspace)).returncode == 0  # dvc repro in the workspace itself
    record = workspace / "cache" / "inventory" / "raw.json"
    before = record.stat().st_mtime_ns
    queued = run(copy, DVC_ROOT=str(workspace))
    assert queued.returncode == 0, queued.stderr
    assert f"{workspace / 'data' / 'raw'} (folders): 48 image(s)" in queued.stderr
    assert "read 0 new or changed file(s), 48 unchanged" in queued.stderr
    inventory = "reports/inventory/inventory.csv"
    assert (copy / inventory).read_bytes() == (workspace / inventory).read_bytes()
    assert (copy / "cache" / "inventory" / "raw.json").is_file() and record.stat().st_mtime_ns == before
    shutil.rmtree(workspace / "data" / "raw")
    nowhere = run(copy, DVC_ROOT=str(workspace))
    assert nowhere.returncode == 1
    assert f"nor in the workspace that queued it ({workspace})" in nowhere.stderr
    assert "dvc exp run --queue --copy-paths data/raw" in nowhere.stderr and "absolute path" in nowhere.stderr
