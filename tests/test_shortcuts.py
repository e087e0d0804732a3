import json
import types

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake.data.shortcuts import (
    VIDEO_CATEGORICAL,
    VIDEO_NUMERIC,
    WARN_AUC,
    audit_shortcuts,
    file_properties,
    jpeg_quality,
    property_auc,
    video_properties,
)
from deepfake.pipeline.quick import face_image


def _jpeg(path, rgb, **kw):
    Image.fromarray(rgb).save(path, format="JPEG", **kw)
    return path


@pytest.mark.parametrize("quality", [30, 60, 75, 90, 95])
def test_jpeg_quality_is_recovered_from_the_quantisation_tables(tmp_path, quality):
    rgb, _ = face_image()
    p = _jpeg(tmp_path / "a.jpg", rgb[:128, :128], quality=quality)
    with Image.open(p) as im:
        assert jpeg_quality(im.quantization[0]) == quality
    props = file_properties(p)
    assert props["jpeg_quality"] == quality and props["format"] == "jpeg" and props["pixels"] == 128 * 128


def test_coding_and_subsampling_are_read_from_the_header(tmp_path):
    rgb = face_image()[0][:64, :64]
    a = file_properties(_jpeg(tmp_path / "a.jpg", rgb, quality=90, progressive=True, subsampling=0))
    b = file_properties(_jpeg(tmp_path / "b.jpg", rgb, quality=90, subsampling=2))
    assert (a["progressive"], a["subsampling"]) == ("progressive", "4:4:4")
    assert (b["progressive"], b["subsampling"]) == ("baseline", "4:2:0")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    c = file_properties(tmp_path / "c.png")
    assert c["format"] == "png" and np.isnan(c["jpeg_quality"]) and c["progressive"] == "n/a"
    v = tmp_path / "clip.mp4"
    v.write_bytes(b"\x00" * 100)
    assert file_properties(v)["format"] == "mp4" and file_properties(v)["file_bytes"] == 100


def test_a_fifo_or_a_device_is_not_opened(tmp_path):
    """A FIFO would block ``Image.open`` for ever and ``/dev/zero`` never ends: only regular files are read."""
    import os
    import signal

    os.mkfifo(tmp_path / "fifo.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.png")
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("file_properties opened a FIFO or read /dev/zero"))
    signal.alarm(20)
    try:
        rows = [file_properties(tmp_path / name) for name in ("fifo.jpg", "zero.png")]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert [r["format"] for r in rows] == ["jpg", "png"]
    assert all(np.isnan(r["file_bytes"]) and np.isnan(r["pixels"]) for r in rows)


def test_a_class_told_apart_by_its_files_is_a_warning(tmp_path):
    rng = np.random.default_rng(0)
    files, labels = [], []
    for i in range(12):  # reals: JPEG 95; fakes: PNG of the same pictures, bigger files
        img = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        files.append(_jpeg(tmp_path / f"r{i}.jpg", img, quality=95))
        Image.fromarray(img).save(tmp_path / f"f{i}.png")
        files.append(tmp_path / f"f{i}.png")
        labels += ["real", "fake"]
    audit = audit_shortcuts(files, labels)
    auc = dict(zip(audit.table["property"], audit.table["auc"]))
    assert auc["format"] == 1.0 and auc["file_bytes"] >= WARN_AUC and auc["pixels"] == 0.5
    assert any(w.startswith("format alone separates") for w in audit.warnings)
    assert "re-encode both classes" in audit.warnings[0]
    assert audit.summary()["auc"]["format"] == 1.0


def test_property_auc_is_direction_free_and_scores_categories_by_their_share_of_fakes():
    import pandas as pd

    y = np.array([0, 0, 0, 1, 1, 1])
    assert property_auc(y, pd.Series([1, 2, 3, 4, 5, 6]), False) == 1.0
    assert property_auc(y, pd.Series([6, 5, 4, 3, 2, 1]), False) == 1.0
    assert property_auc(y, pd.Series(["a", "a", "b", "b", "b", "b"]), True) == pytest.approx(0.8333, abs=1e-3)
    assert property_auc(y, pd.Series([1, 1, 1, 1, 1, 1]), False) == 0.5


def test_no_warning_when_both_classes_are_encoded_alike(tmp_path):
    rng = np.random.default_rng(1)
    files, labels = [], []
    for i in range(16):
        img = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        files.append(_jpeg(tmp_path / f"{i}.jpg", img, quality=90))
        labels.append("fake" if i % 2 else "real")
    audit = audit_shortcuts(files, labels)
    assert audit.warnings == [] and audit.files == 16


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------


def _clips(folder, n, fourcc, fps, frames=4, seed=0, side=64):
    """``n`` clips of seeded noise (no two frames alike) written by OpenCV with ``fourcc`` at ``fps``."""
    import cv2

    ext = ".avi" if fourcc == "MJPG" else ".mp4"
    folder.mkdir(parents=True, exist_ok=True)
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        path = folder / f"{fourcc.lower()}{fps}_{i}{ext}"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (side, side))
        assert writer.isOpened(), f"OpenCV cannot write {fourcc} into {ext}"
        for _ in range(frames):
            writer.write(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
        writer.release()
        out.append(path)
    return out


@pytest.fixture(scope="module")
def video_dataset(tmp_path_factory):
    """real/: 8 MJPG clips at 25 fps; fake/: 8 mp4v clips at 30 fps (one group per clip)."""
    raw = tmp_path_factory.mktemp("videos") / "raw"
    _clips(raw / "real", 8, "MJPG", 25, seed=1)
    _clips(raw / "fake", 8, "mp4v", 30, seed=2)
    return raw


def test_the_split_stage_audits_a_video_dataset_without_an_auc_for_image_properties(video_dataset, tmp_path):
    from deepfake.data.preprocess import PreprocessConfig, preprocess
    from deepfake.data.split import SplitConfig
    from deepfake.pipeline import stages

    faces = tmp_path / "faces"
    pre = preprocess(video_dataset, faces, PreprocessConfig(detect=False, size=32, workers=1, frames_per_video=2))
    assert len(pre.manifest) == 32 and pre.manifest.groupby("group").size().eq(2).all()  # 2 frames of 16 clips
    cfg = SplitConfig(val_frac=0.25, test_frac=0.25, min_val_images=1, min_val_groups=1)
    result = stages.run_split(faces, tmp_path / "splits", tmp_path / "reports", cfg, sources_dir=video_dataset)
    assert result.leakage["groups_across_splits"] == [] and result.leakage["n_groups"] == 16
    leak = json.loads((tmp_path / "reports" / "leakage.json").read_text())
    aucs = leak["shortcuts"]["auc"]
    assert aucs["jpeg_quality"] is None and aucs["pixels"] is None  # no JPEG, no image: reported without an AUC
    assert aucs["format"] == 1.0  # avi against mp4
    headline = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert headline["shortcut_max_auc"] == 1.0
    table = pd.read_csv(tmp_path / "reports" / "shortcuts.csv", keep_default_na=False).set_index("property")
    assert tuple(table.loc["jpeg_quality"]) == ("n/a", "n/a", "")  # no value in either class, an empty AUC
    assert result.shortcuts.shown().set_index("property").loc["pixels", "auc"] == "n/a"
    assert list(table.index[6:]) == [*VIDEO_CATEGORICAL, *VIDEO_NUMERIC]  # the video rows follow the image rows
    assert tuple(table.loc["video_codec"]) == ("mjpeg 8", "mpeg4 8", "1.0")
    assert table.loc["video_fps", "real"] == "median 25 (IQR 25-25)" and aucs["video_fps"] == 1.0
    assert any(w.startswith("video_codec alone separates") for w in result.warnings)
    assert any(w.startswith("video_fps alone separates") and "one codec, frame rate" in w for w in result.warnings)


def test_video_properties_come_from_the_container_header(video_dataset):
    real = video_properties(video_dataset / "real" / "mjpg25_0.avi")
    fake = video_properties(video_dataset / "fake" / "mp4v30_0.mp4")
    assert real[1] == fake[1] == ""  # both readable
    assert {k: real[0][k] for k in (*VIDEO_CATEGORICAL, "video_fps")} == {
        "video_container": "AVI (Audio Video Interleaved)",
        "video_codec": "mjpeg",
        "video_resolution": "64x64",
        "video_fps": 25.0,
    }
    assert real[0]["video_duration"] == pytest.approx(4 / 25) and fake[0]["video_duration"] == pytest.approx(4 / 30)
    size = (video_dataset / "real" / "mjpg25_0.avi").stat().st_size
    assert real[0]["video_bitrate"] == pytest.approx(size * 8 / (4 / 25))  # AVI has no stream bitrate: size / duration
    assert (fake[0]["video_codec"], fake[0]["video_fps"]) == ("mpeg4", 30.0) and fake[0]["video_bitrate"] > 0


def test_a_frame_rate_alone_is_found(tmp_path):
    real = _clips(tmp_path / "real", 6, "MJPG", 25, frames=5, seed=3)
    fake = _clips(tmp_path / "fake", 6, "MJPG", 30, frames=6, seed=4)  # the same 0.2 s, codec and size
    audit = audit_shortcuts(real + fake, ["real"] * 6 + ["fake"] * 6)
    auc = audit.summary()["auc"]
    assert auc["video_fps"] == 1.0
    assert auc["video_codec"] == auc["video_container"] == auc["video_resolution"] == auc["video_duration"] == 0.5
    assert [w.split(" alone")[0] for w in audit.warnings if w.startswith("video_")] == ["video_fps", "video_bitrate"]


def test_videos_encoded_alike_tell_nothing(tmp_path):
    real = _clips(tmp_path / "real", 6, "MJPG", 25, seed=5)
    fake = _clips(tmp_path / "fake", 6, "MJPG", 25, seed=5)  # the same encoder on the same pictures
    audit = audit_shortcuts(real + fake, ["real"] * 6 + ["fake"] * 6)
    video = {k: v for k, v in audit.summary()["auc"].items() if k.startswith("video_")}
    assert video == dict.fromkeys([*VIDEO_CATEGORICAL, *VIDEO_NUMERIC], 0.5)
    assert audit.warnings == [] and audit.max_auc() == 0.5


def test_a_mixed_dataset_gets_image_and_video_rows(tmp_path, video_dataset):
    rgb = face_image()[0][:64, :64]
    photos = [_jpeg(tmp_path / f"{i}.jpg", rgb, quality=q) for i, q in enumerate((70, 80, 90, 95))]
    clips = sorted((video_dataset / "fake").glob("*.mp4"))[:2]
    audit = audit_shortcuts(photos + clips, ["real", "fake", "real", "fake", "fake", "fake"])
    table = audit.table.set_index("property")
    assert list(table.index) == ["jpeg_quality", "file_bytes", "pixels", "format", "progressive", "subsampling",
                                 *VIDEO_CATEGORICAL, *VIDEO_NUMERIC]  # fmt: skip
    assert table.loc["jpeg_quality", "fake"] == "median 87.5 (IQR 83.75-91.25)"  # 80 and 95: the photos only
    assert (table.loc["video_codec", "real"], table.loc["video_codec", "fake"]) == ("n/a 2", "n/a 2, mpeg4 2")
    assert table.loc["video_fps", "real"] == "n/a" and np.isnan(table.loc["video_fps", "auc"])  # no real video


def test_an_unreadable_video_is_listed_not_fatal(tmp_path, video_dataset):
    clips = sorted((video_dataset / "real").glob("*.avi"))[:3] + sorted((video_dataset / "fake").glob("*.mp4"))[:3]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    (tmp_path / "notes.mov").write_text("not a video\n")
    (tmp_path / "gone.mkv").symlink_to(tmp_path / "missing.mkv")
    files = [*clips, broken, tmp_path / "notes.mov", tmp_path / "gone.mkv"]
    audit = audit_shortcuts(files, ["real"] * 3 + ["fake"] * 6)
    assert [u.split(" (")[0] for u in audit.unreadable] == [str(f) for f in files[6:]]
    assert "broken_link" in audit.unreadable[2]
    table = audit.table.set_index("property")
    assert table.loc["video_codec", "fake"] == "mpeg4 3, unreadable 3"
    assert table.loc["video_codec", "auc"] == 1.0  # the unreadable ones are left out: mjpeg against mpeg4
    assert audit.warnings[-1].startswith("3 video(s) could not be opened to read their header")


class _HeaderOnly:
    """A PyAV container, stream or codec context whose decoding methods fail; everything else reads through."""

    def __init__(self, obj):
        self._obj = obj

    def __getattr__(self, name):
        if name in ("decode", "demux", "seek", "open", "parse"):
            raise AssertionError(f"{name}() called: the shortcut audit must read headers only")
        value = getattr(self._obj, name)
        if name == "streams":
            return types.SimpleNamespace(video=tuple(_HeaderOnly(s) for s in value.video))
        return _HeaderOnly(value) if name == "codec_context" else value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._obj.__exit__(*exc)


def test_the_audit_decodes_no_frame(video_dataset, monkeypatch):
    import av
    import cv2

    from deepfake.data import video

    def refuse(*args, **kwargs):
        raise AssertionError("a frame reader was called by the shortcut audit")

    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a[0]) or _HeaderOnly(real_open(*a, **k)))
    monkeypatch.setattr(cv2, "VideoCapture", refuse)
    monkeypatch.setattr(video, "sample_video", refuse)
    files = sorted(video_dataset.rglob("*.*"))
    audit = audit_shortcuts(files, [f.parent.name for f in files])
    assert len(opened) == 16 and audit.unreadable == []
    assert audit.summary()["auc"]["video_codec"] == 1.0
