import numpy as np
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
