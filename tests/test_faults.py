"""Fault injection: every input is used or listed, every machine fault stops the stage, nothing hangs.

Each test reproduces one case of a torture run: special files (FIFO, a link to ``/dev/zero``),
unreadable folders and files, broken and looping links, read-only or full output folders,
a process killed during a write, tiny images, one-class and conflicting labels, a decompression
bomb. Permission errors are injected with mocks where the tests run as root (CI does), since
root ignores a folder's permission bits; a real ``chmod`` variant runs for other users.
"""

import errno
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_predict import write_checkpoint

from deepfake.__main__ import main
from deepfake.core import utils
from deepfake.core.utils import OutputError, clean_temporaries, prepare_output_dir
from deepfake.data.ingest import walk
from deepfake.data.preprocess import STATE_NAME, PreprocessConfig, preprocess
from deepfake.data.split import LabelError, SplitConfig
from deepfake.inference import predict as P
from deepfake.pipeline.stages import run_split

CFG = PreprocessConfig(detect=False, size=32, workers=1)
ROOT = os.geteuid() == 0


def image(path: Path, seed: int = 0, size: int = 40) -> Path:
    """A small noise JPEG (different bytes for each seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=90)
    return path


def dataset(root: Path, n: int = 3) -> Path:
    for i in range(n):
        image(root / "real" / f"r{i}.jpg", seed=i)
        image(root / "fake" / f"f{i}.jpg", seed=100 + i)
    return root


def run(data: Path, out: Path, cfg: PreprocessConfig = CFG, timeout: float = 60.0):
    """``preprocess`` in a thread with a deadline: a hang fails the test instead of blocking the suite."""
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = preprocess(data, out, cfg, progress=False)
        except BaseException as e:  # handed to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"preprocess of {data} did not finish within {timeout} s (it hangs)"
    if "error" in box:
        raise box["error"]
    return box["result"]


def skipped(result) -> dict[str, tuple[str, str]]:
    return {r.source: (r.reason, r.detail) for r in result.skipped.itertuples()}


def fail_mkstemp_in(monkeypatch, folder: Path, code: int) -> None:
    """Creating a file in ``folder`` fails with ``code`` (a read-only folder, a full disk)."""
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if Path(kwargs.get("dir", "")).resolve() == folder.resolve():
            raise OSError(code, os.strerror(code), str(folder))
        return real(*args, **kwargs)

    monkeypatch.setattr(utils.tempfile, "mkstemp", mkstemp)


# --------------------------------------------------------------------------------------------
# Environment faults stop the stage and never mark an input bad
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_crop_folder_stops_the_stage_and_the_input_is_used_once_writable(tmp_path, monkeypatch, code):
    data, out = dataset(tmp_path / "data"), tmp_path / "cache"
    run(data, out)
    image(data / "real" / "new.jpg", seed=7)
    with monkeypatch.context() as m:
        fail_mkstemp_in(m, out / "real", code)
        with pytest.raises(OutputError, match=rf"cannot write .*real/new.png: .*\[{errno.errorcode[code]}\]"):
            run(data, out)
    assert not (out / "manifest.csv").exists()  # a cache being changed never looks complete
    again = run(data, out)  # writable again: the new image is used, not remembered as bad
    assert "real/new.png" in set(again.manifest["path"])
    assert again.skipped.empty
    assert again.summary["processed_now"] == 1  # the other crops were kept


def test_full_disk_during_a_crop_write_stops_the_stage_and_keeps_the_work_done(tmp_path, monkeypatch):
    data, out = dataset(tmp_path / "data", n=4), tmp_path / "cache"
    real_write = Path.write_bytes
    calls = {"n": 0}

    def write_bytes(self, data_):
        calls["n"] += 1
        if calls["n"] > 3:  # the disk fills after three crops
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, data_)

    with monkeypatch.context() as m:
        m.setattr(Path, "write_bytes", write_bytes)
        with pytest.raises(OutputError, match=r"No space left on device \[ENOSPC\]; free disk space"):
            run(data, out)
    assert not (out / "manifest.csv").exists()
    again = run(data, out)
    assert again.skipped.empty and len(again.manifest) == 8
    assert again.summary["processed_now"] == 5  # the three crops written before the fault were kept


def test_a_blocked_output_path_stops_parallel_workers_too(tmp_path):
    data, out = dataset(tmp_path / "data", n=6), tmp_path / "cache"
    out.mkdir()
    (out / STATE_NAME).write_text('{"settings": null, "sources": {}}')
    (out / "fake").write_text("a file where the crops' folder should be")  # fails as root too
    cfg = PreprocessConfig(detect=False, size=32, workers=2)
    with pytest.raises(OutputError, match=r"cache/fake/f\d\.png"):
        run(data, out, cfg)
    (out / "fake").unlink()
    again = run(data, out, cfg)
    assert again.skipped.empty and len(again.manifest) == 12


def test_a_failed_removal_of_stale_crops_leaves_the_cache_as_it_was(tmp_path, monkeypatch):
    data, out = dataset(tmp_path / "data"), tmp_path / "cache"
    run(data, out)
    before = (out / "manifest.csv").read_text()
    (data / "real" / "r0.jpg").unlink()
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self.suffix == ".png":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    with monkeypatch.context() as m:
        m.setattr(Path, "unlink", unlink)
        with pytest.raises(OutputError, match=r"cannot remove the stale crop .*real/r0.png"):
            run(data, out)
    assert (out / "manifest.csv").read_text() == before  # nothing was rewritten before the failure
    again = run(data, out)
    assert "real/r0.png" not in set(again.manifest["path"]) and not (out / "real" / "r0.png").exists()


def test_output_folders_are_checked_before_any_work(tmp_path, monkeypatch):
    data, out = dataset(tmp_path / "data"), tmp_path / "cache"
    out.mkdir()
    fail_mkstemp_in(monkeypatch, out, errno.EROFS)
    with pytest.raises(OutputError, match=r"cannot write to the output folder .*cache: .*\[EROFS\]"):
        run(data, out)
    assert not (out / STATE_NAME).exists()  # nothing decoded, nothing written


def test_training_checks_its_model_folder_before_the_first_epoch(tmp_path, monkeypatch, tiny_splits, tiny_dataset):
    from deepfake.training.train import TrainConfig, train

    models = tmp_path / "models"
    models.mkdir()
    fail_mkstemp_in(monkeypatch, models, errno.EROFS)
    epochs = []
    cfg = TrainConfig(arch="dilated_cnn", weights="none", epochs=1, batch_size=8, image_size=32)
    with pytest.raises(OutputError, match=r"models: .*\[EROFS\]"):
        train(cfg, tiny_splits, tiny_dataset, models, on_epoch=lambda *a: epochs.append(a))
    assert epochs == []


def test_machine_out_of_file_handles_is_not_an_input_fault(tmp_path, monkeypatch):
    from deepfake.data import media

    data, out = dataset(tmp_path / "data", n=1), tmp_path / "cache"

    def no_handles(*args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    with monkeypatch.context() as m:
        m.setattr(media, "open", no_handles, raising=False)
        with pytest.raises(utils.EnvironmentFault, match="out of file handles"):
            run(data, out)
    assert run(data, out).skipped.empty


# --------------------------------------------------------------------------------------------
# Remembered skips are tried again when the file, its permissions or the settings change
# --------------------------------------------------------------------------------------------


def test_unreadable_file_is_tried_again_on_the_next_run(tmp_path, monkeypatch):
    from deepfake.data import media

    data, out = dataset(tmp_path / "data", n=1), tmp_path / "cache"
    target = data / "real" / "r0.jpg"
    real_open = open

    def denied(path, *args, **kwargs):
        if Path(path) == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(media, "open", denied, raising=False)
        first = run(data, out)
    assert skipped(first)["real/r0.jpg"][0] == "unreadable"
    second = run(data, out)  # permission fixed (nothing else changed): used
    assert "real/r0.png" in set(second.manifest["path"]) and second.skipped.empty


def test_remembered_skip_is_retried_when_permissions_change_or_when_asked(tmp_path):
    data, out = dataset(tmp_path / "data", n=1), tmp_path / "cache"
    bad = data / "real" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)  # a JPEG header, no image
    first = run(data, out)
    assert skipped(first)["real/broken.jpg"][0] == "corrupt"
    assert run(data, out).summary["processed_now"] == 0  # unchanged: remembered
    os.chmod(bad, 0o600)
    assert run(data, out).summary["processed_now"] == 1  # permissions changed: tried again
    assert run(data, out).summary["processed_now"] == 0
    retry = PreprocessConfig(detect=False, size=32, workers=1, retry_skipped=True)
    res = run(data, out, retry)
    assert res.summary["processed_now"] == 1 and skipped(res)["real/broken.jpg"][0] == "corrupt"
    assert run(data, out).up_to_date  # retry_skipped is not a setting of the cache's content


# --------------------------------------------------------------------------------------------
# Only regular files are read; every path walked past is used or listed
# --------------------------------------------------------------------------------------------


def test_fifo_and_device_links_are_listed_not_read(tmp_path):
    data, out = dataset(tmp_path / "data", n=1), tmp_path / "cache"
    os.mkfifo(data / "real" / "fifo_pipe.jpg")
    (data / "fake" / "zero.jpg").symlink_to("/dev/zero")
    res = run(data, out, timeout=30)
    got = skipped(res)
    assert got["real/fifo_pipe.jpg"] == ("not_regular_file", "a FIFO (named pipe)")
    assert got["fake/zero.jpg"] == ("not_regular_file", "a character device")
    assert len(res.manifest) == 2


def test_files_above_the_byte_cap_are_refused_before_reading(tmp_path, monkeypatch):
    from deepfake.data import media

    data, out = dataset(tmp_path / "data", n=1), tmp_path / "cache"
    with open(data / "fake" / "huge.png", "wb") as f:
        f.truncate(3 * 2**20)  # sparse: 3 MiB that take no disk
    read = []
    real_open = open
    monkeypatch.setattr(media, "open", lambda p, *a, **k: read.append(str(p)) or real_open(p, *a, **k), raising=False)
    res = run(data, out, PreprocessConfig(detect=False, size=32, workers=1, max_file_mb=1))
    assert skipped(res)["fake/huge.png"] == ("file_too_large", "3 MiB > 1 MiB")
    assert not any(p.endswith("huge.png") for p in read)


def test_unreadable_folder_broken_and_looping_links_are_listed(tmp_path, monkeypatch):
    data = dataset(tmp_path / "data", n=1)
    (data / "real" / "locked").mkdir()
    image(data / "real" / "locked" / "hidden_from_us.jpg")
    (data / "real" / "gone.jpg").symlink_to(data / "real" / "nowhere.jpg")
    (data / "real" / "a.jpg").symlink_to(data / "real" / "b.jpg")
    (data / "real" / "b.jpg").symlink_to(data / "real" / "a.jpg")
    (data / "fake" / "up").symlink_to(data / "fake")  # a folder link back to itself
    (data / "fake" / "notes.txt").write_text("x")
    (data / "fake" / ".DS_Store").write_bytes(b"\0")
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    res = run(data, tmp_path / "cache")
    got = {k: v[0] for k, v in skipped(res).items()}
    assert got == {
        "real/locked": "unreadable_folder",
        "real/gone.jpg": "broken_link",
        "real/a.jpg": "link_loop",
        "real/b.jpg": "link_loop",
        "fake/up": "link_loop",
        "fake/notes.txt": "unsupported_extension",
        "fake/.DS_Store": "hidden",
    }
    assert set(res.skipped.set_index("source").loc[["real/locked", "fake/up"], "label"]) == {"real", "fake"}
    assert res.summary["unsupported_by_extension"] == {".txt": 1}
    assert len(res.manifest) == 2


@pytest.mark.skipif(ROOT, reason="root reads any folder; the mocked variant above covers it")
def test_unreadable_folder_with_real_permissions(tmp_path):
    data = dataset(tmp_path / "data", n=1)
    locked = data / "real" / "locked"
    image(locked / "x.jpg")
    locked.chmod(0)
    try:
        assert [(e.path.name, e.problem) for e in walk(data) if e.problem] == [("locked", "unreadable_folder")]
    finally:
        locked.chmod(0o755)


def test_every_path_of_a_walk_is_accounted_for(tmp_path):
    data = dataset(tmp_path / "data", n=2)
    (data / "real" / "loop").symlink_to(data)
    (data / "x.bin").write_bytes(b"1")
    entries = list(walk(data))
    on_disk = {p for p in data.rglob("*") if not p.is_dir() or p.is_symlink()}  # rglob does not follow links
    assert {e.path for e in entries} >= on_disk
    assert [e.problem for e in entries if e.path.name == "loop"] == ["link_loop"]


# --------------------------------------------------------------------------------------------
# Interrupted runs leave nothing that looks complete, and their leftovers are removed
# --------------------------------------------------------------------------------------------


WRITER = """
import sys, time
from deepfake.core.utils import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as f:
        f.write(b"x" * 1000)
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
"""


def test_a_write_killed_midway_leaves_a_temporary_the_next_run_removes(tmp_path):
    target = tmp_path / "models" / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    leftovers = list(target.parent.glob(".last.pt.*.tmp"))
    alive = clean_temporaries(target.parent)  # its writer still runs: kept
    assert len(leftovers) == 1 and alive == []
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert not target.exists() and leftovers[0].exists()  # the kill left a partial file, never last.pt
    prepare_output_dir(target.parent)  # what training does before its first epoch
    assert not leftovers[0].exists()


def test_an_interrupted_preprocess_keeps_its_work_and_no_manifest(tmp_path, monkeypatch):
    from deepfake.data import preprocess as pp

    data, out = dataset(tmp_path / "data", n=4), tmp_path / "cache"
    real = pp.process_source
    calls = {"n": 0}

    def interrupted(job):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(job)

    with monkeypatch.context() as m:
        m.setattr(pp, "process_source", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run(data, out)
    assert not (out / "manifest.csv").exists()
    again = run(data, out)
    assert again.summary["processed_now"] == 4 and len(again.manifest) == 8


# --------------------------------------------------------------------------------------------
# Inputs too small, labels that cannot train, bombs
# --------------------------------------------------------------------------------------------


def test_tiny_images_are_skipped_as_too_small(tmp_path):
    data = dataset(tmp_path / "data", n=1)
    image(data / "real" / "one_pixel.png", size=1)
    image(data / "fake" / "small.jpg", size=20)
    res = run(data, tmp_path / "cache")
    got = skipped(res)
    assert got["real/one_pixel.png"] == ("too_small", "1x1 px")
    assert got["fake/small.jpg"] == ("too_small", "20x20 px")
    res = run(data, tmp_path / "cache2", PreprocessConfig(detect=False, size=32, workers=1, min_side=16))
    assert set(skipped(res)) == {"real/one_pixel.png"}


def test_one_class_dataset_is_refused_at_split(tmp_path, caplog):
    data = tmp_path / "data"
    for i in range(4):
        image(data / "real" / f"r{i}.jpg", seed=i)
    with caplog.at_level("WARNING"):
        cache = run(data, tmp_path / "cache").out_dir
    assert "holds only real images (4)" in caplog.text and "(the split stage will refuse it)" in caplog.text
    with pytest.raises(LabelError, match=r"holds only real images \(4\).*real_dirs / fake_dirs"):
        run_split(cache, tmp_path / "splits", tmp_path / "reports", SplitConfig())


def test_conflicting_labels_are_refused_at_split_naming_the_files(tmp_path, caplog):
    data = dataset(tmp_path / "data", n=4)
    (data / "fake" / "copy.jpg").write_bytes((data / "real" / "r1.jpg").read_bytes())
    with caplog.at_level("WARNING"):
        res = run(data, tmp_path / "cache")
    assert res.summary["conflicting_labels"] == 1
    assert "1 file(s) under both labels (identical bytes): fake/copy.jpg (fake) = real/r1.jpg (real)" in caplog.text
    with pytest.raises(
        LabelError, match=r"1 file\(s\) under both labels .*fake/copy.jpg \(fake\) = real/r1.jpg \(real\)"
    ):
        run_split(res.out_dir, tmp_path / "splits", tmp_path / "reports", SplitConfig())


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, tiny_dataset):
    ckpt = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", sorted(tiny_dataset.rglob("*.jpg"))[:8])
    return P.Predictor(ckpt, "cpu", P.PredictConfig(calibration_file=""))


def test_predict_names_bombs_and_tiny_images(predictor, tmp_path):
    bomb = Image.new("L", (9000, 8000))
    bomb.save(tmp_path / "bomb.png")
    with pytest.raises(P.InputTooLargeError, match=r"9000x8000 = 72 MP > max 64 MP\): refused .* decompression bomb"):
        predictor.predict(tmp_path / "bomb.png")
    with pytest.raises(P.InputTooSmallError, match=r"1x1 px, smaller than the 32 px"):
        predictor.predict(image(tmp_path / "dot.png", size=1))


def test_predict_folder_gives_a_row_for_every_image_path(predictor, tmp_path, capsys):
    folder = tmp_path / "in"
    for i in range(25):
        image(folder / f"img{i:02d}.jpg", seed=i)
    (folder / "broken1.jpg").symlink_to(folder / "missing.jpg")
    (folder / "broken2.png").symlink_to(folder / "gone" / "x.png")
    (folder / "loop1.jpg").symlink_to(folder / "loop2.jpg")
    (folder / "loop2.jpg").symlink_to(folder / "loop1.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "readme.txt").write_text("not an image")
    (folder / "._img00.jpg").write_bytes(b"\0\5\26\7")  # AppleDouble metadata: hidden, not an error
    rows = predictor.predict(folder, on_error="collect")
    assert len(rows) == 30  # 30 image paths in, 30 rows out
    errors = {Path(r.source).name: r.error for r in rows if isinstance(r, P.PredictionError)}
    assert set(errors) == {"broken1.jpg", "broken2.png", "loop1.jpg", "loop2.jpg", "pipe.jpg"}
    assert "broken symbolic link" in errors["broken1.jpg"] and "loops" in errors["loop1.jpg"]
    assert "FIFO" in errors["pipe.jpg"]
    args = ["predict", str(folder), "--checkpoint", str(predictor.checkpoint), "--calibration", "", "--csv"]
    assert main([*args, "--no-progress"]) == 1
    out, err = capsys.readouterr()
    frame = pd.read_csv(io.StringIO(out))
    assert len(frame) == 30
    assert "2 file(s) not scored (not images or videos): .txt 1, hidden 1" in err


def test_nothing_escapes_to_a_crash_when_a_file_vanishes_mid_run(tmp_path, monkeypatch):
    from deepfake.data import preprocess as pp

    data, out = dataset(tmp_path / "data", n=2), tmp_path / "cache"
    real = pp.process_source

    def vanish(job):
        src, _ = job
        if src.rel == "real/r1.jpg":
            src.path.unlink()
        return real(job)

    monkeypatch.setattr(pp, "process_source", vanish)
    res = run(data, out)
    assert skipped(res)["real/r1.jpg"][0] == "missing_file"
    monkeypatch.undo()
    image(data / "real" / "r1.jpg", seed=1)
    assert "real/r1.png" in set(run(data, out).manifest["path"])  # missing files are tried again


def test_environment_fault_messages_say_what_to_do():
    e = utils.output_error("models/best.pt", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert str(e) == "cannot write models/best.pt: No space left on device [ENOSPC]; free disk space, then run again"
    assert not isinstance(e, OSError)  # no handler of bad inputs takes it


def test_time_stamps_alone_do_not_retry_a_used_file(tmp_path):
    data, out = dataset(tmp_path / "data", n=1), tmp_path / "cache"
    run(data, out)
    f = data / "real" / "r0.jpg"
    os.utime(f, (time.time() + 100, time.time() + 100))
    assert run(data, out).summary["processed_now"] == 0  # same bytes: reused


def test_only_leftovers_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    names = [
        f".last.pt.{pid}.k3j4h5g6.tmp",  # a checkpoint write killed midway
        f".02_train.ipynb.{pid}.notebook.tmp.ipynb",  # a stage notebook of a killed runner
        ".last.pt.x1y2z3w4.tmp",  # an hour-old leftover of a version without the pid in the name
        f".best.pt.{os.getpid()}.abcdefgh.tmp",  # a write of this (running) process: kept
        ".best.pt.q9r8s7t6.tmp",  # old form, just written: kept (its writer cannot be checked)
        ".notes.tmp",  # not ours: kept
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    hour_ago = time.time() - 3700
    os.utime(tmp_path / names[2], (hour_ago, hour_ago))
    removed = {p.name for p in clean_temporaries(tmp_path)}
    assert removed == set(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])
