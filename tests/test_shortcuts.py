import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake.data.shortcuts import WARN_AUC, audit_shortcuts, file_properties, jpeg_quality, property_auc
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
