import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake.__main__ import main
from deepfake.core.config import ConfigError
from deepfake.data.ingest import Source
from deepfake.data.inputs import read_contract
from deepfake.data.preprocess import (
    SHARDS_DIR,
    PreprocessConfig,
    Shard,
    ShardsIncomplete,
    explain_reasons,
    output_keys,
    preprocess,
    shard_of,
)
from deepfake.data.split import SplitConfig, index_dataset
from deepfake.data.synth import SynthConfig, make_image
from deepfake.pipeline import quick, stages
from deepfake.pipeline.params import load_params

SHARED = Path(__file__).resolve().parents[2] / "shared" / "real-faces" / "yonsei-rffd"
FACE_BOX = (120, 40, 160, 160)  # where the synthetic face is pasted on the canvas (x, y, w, h)


def synthetic_face() -> np.ndarray:
    """A 160 px synthetic face that dlib's HOG detector and Haar find (identity 1 of seed 0)."""
    data, _ = make_image(
        SynthConfig(n_identities=8, images_per_identity=1, image_size=160, seed=0, workers=1), 1, 0, False
    )
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def face_photo() -> np.ndarray:
    """A 240 x 320 'photo': flat grey background with the synthetic face at FACE_BOX."""
    canvas = np.full((240, 320, 3), 128, np.uint8)
    x, y, w, h = FACE_BOX
    canvas[y : y + h, x : x + w] = synthetic_face()
    return canvas


def save(rgb: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **kw)
    return path


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v")), fps, (w, h)
    )
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def noise(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def messy_dataset(root: Path) -> Path:
    """Every awkward input in one folder layout: the files the tests expect, with their fate."""
    face = face_photo()
    (root / "fake").mkdir(parents=True)
    save(face, root / "real" / "face.jpg", quality=95)
    save(np.asarray(Image.fromarray(face).convert("L")), root / "real" / "sub" / "face_grey.png")
    Image.fromarray(face).convert("CMYK").save(root / "fake" / "face_cmyk.jpg", quality=95)
    Image.fromarray(face).convert("RGBA").save(root / "fake" / "face_rgba.png")
    Image.fromarray(face).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "fake" / "face_palette.png")
    Image.fromarray(face[:, :, 1].astype(np.uint16) * 257).save(root / "real" / "face_16bit.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(face, k=1))).save(
        root / "real" / "face_exif.png", exif=exif
    )  # upright once rotated
    save(noise(), root / "fake" / "no_face.png")
    (root / "fake" / "empty.jpg").write_bytes(b"")
    (root / "real" / "notes.jpg").write_text("not an image")
    data = (root / "real" / "face.jpg").read_bytes()
    (root / "fake" / "cut.jpg").write_bytes(data[: len(data) // 3])
    from test_ingest import bomb_png

    (root / "fake" / "bomb.png").write_bytes(bomb_png())
    write_video(root / "fake" / "clip.avi", [face] * 10)
    write_video(root / "real" / "dark.avi", [noise(96, 128, s) // 8 for s in range(6)])  # no face in any frame
    (root / "fake" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    return root


EXPECTED_SKIPS = {
    ("fake/bomb.png", "too_large"),
    ("fake/broken.mp4", "video_unreadable"),
    ("fake/cut.jpg", "truncated"),
    ("fake/empty.jpg", "empty_file"),
    ("fake/no_face.png", "no_face"),
    ("real/dark.avi", "no_face"),
    ("real/notes.jpg", "not_an_image"),
}
CONVERTED = {
    "real/face.png",
    "real/sub/face_grey.png",
    "fake/face_cmyk.png",
    "fake/face_rgba.png",
    "fake/face_palette.png",
    "real/face_16bit.png",
    "real/face_exif.png",
}


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return messy_dataset(tmp_path_factory.mktemp("messy") / "raw")


@pytest.fixture(scope="module")
def messy_result(messy, tmp_path_factory):
    cfg = PreprocessConfig(detect=True, size=64, frames_per_video=4, workers=1)
    return preprocess(messy, tmp_path_factory.mktemp("cache") / "faces", cfg, progress=False)


def test_every_bad_input_is_listed_with_its_reason_and_nothing_crashes(messy_result):
    skipped = messy_result.skipped
    assert {(s, r) for s, r in zip(skipped["source"], skipped["reason"])} == EXPECTED_SKIPS
    assert skipped.loc[skipped["source"] == "real/dark.avi", "frame"].tolist() == [
        "all"
    ]  # one line for a faceless video
    s = messy_result.summary
    assert s["skipped_by_reason"] == {
        "empty_file": 1,
        "no_face": 2,
        "not_an_image": 1,
        "too_large": 1,
        "truncated": 1,
        "video_unreadable": 1,
    }
    assert explain_reasons(skipped).loc["no_face", "count"] == 2


def test_valid_awkward_images_are_converted_and_cropped_on_the_face(messy_result):
    m = messy_result.manifest
    images = m[m["kind"] == "image"]
    assert set(images["path"]) == CONVERTED
    assert (images["crop"] == "face").all()
    for path, box in zip(images["path"], images["box"]):
        x, y, w, h = map(int, box.split(","))
        cx, cy = x + w / 2, y + h / 2
        fx, fy, fw, fh = FACE_BOX
        assert abs(cx - (fx + fw / 2)) < 25 and abs(cy - (fy + fh / 2)) < 25, (
            path,
            box,
        )  # the face, upright (EXIF applied)
        crop = cv2.imread(str(messy_result.out_dir / path))
        assert crop.shape == (64, 64, 3)


def test_labels_come_from_the_folders_unchanged(messy_result):
    m = messy_result.manifest
    assert (m["label"] == m["source"].str.split("/").str[0]).all()
    assert (m["target"].astype(int) == (m["label"] == "fake")).all()


def test_video_frames_are_grouped_by_their_video(messy_result):
    m = messy_result.manifest
    frames = m[m["kind"] == "video"]
    assert frames["frame"].astype(int).tolist() == [0, 3, 6, 9]  # 4 evenly spaced of 10
    assert set(frames["group"]) == {"fake/clip.avi"} and set(frames["video"]) == {"fake/clip.avi"}
    assert set(frames["video_label"]) == {"fake"} and set(frames["label"]) == {"fake"}
    assert frames["path"].tolist() == [f"fake/clip.avi.frames/{i:06d}.png" for i in (0, 3, 6, 9)]
    assert messy_result.summary["videos"] == 3 and messy_result.summary["videos_with_frames"] == 1


def test_counts_add_up(messy_result):
    s = messy_result.summary
    assert s["images"] == 12 and s["written"] == len(CONVERTED) + 4
    assert s["faces_found"] == s["written"]
    assert s["no_face"] == 1 + 4  # the noise image and the four sampled frames of the faceless video
    assert s["decoded"] == len(CONVERTED) + 1 + 4 + 4


def test_keep_full_keeps_faceless_images_whole(tmp_path):
    save(noise(80, 120), tmp_path / "raw" / "fake" / "n.png")
    save(face_photo(), tmp_path / "raw" / "real" / "f.png")
    res = preprocess(
        tmp_path / "raw",
        tmp_path / "c",
        PreprocessConfig(detect=True, no_face="keep_full", size=32, workers=1),
        progress=False,
    )
    rows = res.manifest.set_index("path")
    assert rows.loc["fake/n.png", "crop"] == "full" and rows.loc["real/f.png", "crop"] == "face"
    assert res.skipped.empty and res.summary["kept_full"] == 1 and res.summary["no_face"] == 1
    crop = cv2.cvtColor(cv2.imread(str(tmp_path / "c" / "fake" / "n.png")), cv2.COLOR_BGR2RGB)
    expected = cv2.resize(noise(80, 120)[:, 20:100], (32, 32), interpolation=cv2.INTER_AREA)  # the centre square
    assert np.array_equal(crop, expected)


def test_detect_off_keeps_pixels_exactly(tiny_dataset, tmp_path):
    res = preprocess(tiny_dataset, tmp_path / "c", PreprocessConfig(detect=False, size=48, workers=1), progress=False)
    assert res.summary["written"] == 48 and res.skipped.empty
    row = res.manifest.iloc[0]
    cached = np.asarray(Image.open(tmp_path / "c" / row["path"]))
    original = np.asarray(Image.open(tiny_dataset / row["source"]).convert("RGB"))
    assert np.array_equal(cached, original)  # lossless: the JPEG traces are kept as decoded
    synth = pd.read_csv(tiny_dataset / "manifest.csv", dtype=str).set_index("file")
    assert (
        res.manifest["group"].to_numpy() == synth.loc[res.manifest["source"], "group"].to_numpy()
    ).all()  # identities kept
    assert set(res.manifest["manipulation"]) <= {"", "swap", "upsample", "partial"}  # source columns carried


def test_the_cache_is_a_dataset_root_for_split_and_training(tiny_dataset, tmp_path):
    preprocess(tiny_dataset, tmp_path / "c", PreprocessConfig(detect=False, size=48, workers=1), progress=False)
    index = index_dataset(tmp_path / "c")
    groups = pd.read_csv(tiny_dataset / "manifest.csv", dtype=str)["group"].nunique()
    assert len(index) == 48 and index["path"].str.endswith(".png").all() and index["group"].nunique() == groups
    result = stages.run_split(
        tmp_path / "c", tmp_path / "splits", tmp_path / "reports", SplitConfig(val_frac=0.25, test_frac=0.25)
    )
    assert result.leakage["groups_across_splits"] == []


def test_rerun_with_unchanged_inputs_does_nothing(tiny_dataset, tmp_path):
    cfg = PreprocessConfig(detect=False, size=48, workers=1)
    first = preprocess(tiny_dataset, tmp_path / "c", cfg, progress=False)
    assert not first.up_to_date and first.summary["processed_now"] == 48
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("*") if p.is_file()}
    again = preprocess(tiny_dataset, tmp_path / "c", cfg, progress=False)
    assert again.up_to_date and again.summary["processed_now"] == 0 and again.summary["reused"] == 48
    assert {
        p: p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("*") if p.is_file()
    } == before  # not one file rewritten
    pd.testing.assert_frame_equal(again.manifest.astype(str), first.manifest.astype(str))


def test_only_new_or_changed_inputs_are_decoded(tiny_dataset, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_dataset, raw)
    cfg = PreprocessConfig(detect=False, size=48, workers=1)
    preprocess(raw, tmp_path / "c", cfg, progress=False)
    some = sorted((raw / "real").glob("*.jpg"))
    os.utime(some[0], ns=(1, 1))  # new time stamp, same bytes: reused after hashing
    save(noise(48, 48), some[1], quality=90)  # new content: decoded again
    man = pd.read_csv(raw / "manifest.csv", dtype=str, keep_default_na=False)
    removed = man.iloc[-1]["file"]
    man.iloc[:-1].to_csv(raw / "manifest.csv", index=False)  # a source dropped from the dataset
    res = preprocess(raw, tmp_path / "c", cfg, progress=False)
    assert res.summary["processed_now"] == 1 and res.summary["reused"] == 46
    out = res.manifest.set_index("source")
    cached = np.asarray(Image.open(tmp_path / "c" / out.loc[some[1].relative_to(raw).as_posix(), "path"]))
    assert np.array_equal(cached, np.asarray(Image.open(some[1]).convert("RGB")))
    assert not (tmp_path / "c" / Path(removed).with_suffix(".png")).exists()  # its crop is gone
    changed = preprocess(raw, tmp_path / "c", PreprocessConfig(detect=False, size=32, workers=1), progress=False)
    assert changed.summary["processed_now"] == 47  # new settings: everything again
    assert cv2.imread(str(tmp_path / "c" / changed.manifest["path"].iloc[0])).shape == (32, 32, 3)


def test_parallel_and_serial_runs_write_the_same_cache(messy, tmp_path):
    cfg = dict(detect=True, size=48, frames_per_video=3)
    serial = preprocess(messy, tmp_path / "one", PreprocessConfig(workers=1, **cfg), progress=False)
    parallel = preprocess(messy, tmp_path / "two", PreprocessConfig(workers=2, **cfg), progress=False)
    assert parallel.summary["workers"] == 2
    pd.testing.assert_frame_equal(serial.manifest, parallel.manifest)
    pd.testing.assert_frame_equal(serial.skipped, parallel.skipped)
    for p in serial.manifest["path"]:
        assert (tmp_path / "one" / p).read_bytes() == (tmp_path / "two" / p).read_bytes()


def test_refuses_folders_that_are_not_its_cache(tiny_dataset, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a preprocess cache"):
        preprocess(tiny_dataset, tmp_path / "busy", PreprocessConfig(detect=False, workers=1), progress=False)
    for inside in (tiny_dataset, tiny_dataset / "faces", tiny_dataset.parent):
        with pytest.raises(ValueError, match="overlaps"):
            preprocess(tiny_dataset, inside, PreprocessConfig(detect=False, workers=1), progress=False)
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"


def test_output_names_never_collide(tmp_path):
    srcs = [
        Source(tmp_path / n, n, "real", n, k)
        for n, k in (("real/a.jpg", "image"), ("real/a.png", "image"), ("real/b.jpg", "image"), ("real/v.mp4", "video"))
    ]
    assert output_keys(srcs) == ["real/a.jpg.png", "real/a.png.png", "real/b.png", "real/v.mp4.frames"]


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="no_face"):
        PreprocessConfig(no_face="drop")
    with pytest.raises(ValueError, match="margin"):
        PreprocessConfig(margin=0.5)
    with pytest.raises(ValueError, match="group_by"):
        PreprocessConfig(group_by="person")


def test_run_preprocess_writes_reports(messy, tmp_path):
    res = stages.run_preprocess(
        messy,
        tmp_path / "c",
        tmp_path / "rep",
        PreprocessConfig(detect=True, size=32, frames_per_video=2, workers=1),
        progress=False,
    )
    summary = json.loads((tmp_path / "rep" / "details.json").read_text())
    assert summary["written"] == res.summary["written"] and summary["skipped"] == 7
    headline = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert headline == {k: res.summary[k] for k in ("images", "videos", "written", "skipped", "faces_found", "no_face")}
    timings = json.loads((tmp_path / "rep" / "timings.json").read_text())  # run facts, kept out of the metrics
    assert timings["processed_now"] == res.summary["processed_now"] and "seconds" not in summary
    assert len(pd.read_csv(tmp_path / "rep" / "skipped.csv")) == 7
    figure = cv2.imread(str(tmp_path / "rep" / stages.FACE_CHECK_FIGURE))
    assert figure is not None and figure.shape[0] > 150  # crops above, the photo without a face below


def test_quick_mixed_dataset_shows_each_kind_of_problem(tmp_path, monkeypatch):
    raw = quick.ensure_quick_mixed_dataset(
        tmp_path / "mixed", SynthConfig(n_identities=6, images_per_identity=2, image_size=32, workers=1)
    )
    res = preprocess(raw, tmp_path / "c", PreprocessConfig(detect=False, size=32, workers=1), progress=False)
    assert res.summary["skipped_by_reason"] == {
        "empty_file": 1,
        "not_an_image": 1,
        "truncated": 1,
        "video_unreadable": 1,
    }
    assert res.summary["written"] == 24 + 2 + 12 and res.summary["videos_with_frames"] == 1


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared real-face photos are not present")
def test_real_photos_are_cropped_around_the_face(tmp_path):
    files = sorted((SHARED / "real").glob("*.jpg"))[:6] + sorted((SHARED / "fake").glob("*.jpg"))[:6]
    csv = tmp_path / "lists" / "some.csv"
    csv.parent.mkdir()
    pd.DataFrame({"path": [str(f) for f in files], "label": [f.parent.name for f in files]}).to_csv(csv, index=False)
    res = preprocess(csv, tmp_path / "c", PreprocessConfig(detect=True, size=64, workers=1), progress=False)
    assert res.summary["faces_found"] >= 9 and res.summary["written"] + len(res.skipped) == 12
    assert set(res.skipped["reason"]) <= {"no_face"}
    widths = res.manifest["box"].str.split(",").str[2].astype(int)
    assert (widths > 0.15 * 600).all()  # portraits: large faces


def two_faces_photo() -> np.ndarray:
    """A 480 x 640 'photo' with two synthetic people: a large face left, a smaller one right."""
    canvas = np.full((480, 640, 3), 128, np.uint8)
    face = synthetic_face()
    canvas[100:308, 40:248] = cv2.resize(face, (208, 208), interpolation=cv2.INTER_LINEAR)
    canvas[120:280, 420:580] = face
    return canvas


def test_landmarks_round_trip_through_the_cache(tmp_path):
    from deepfake.data.detect import get_detector, get_landmarker, parse_points

    raw = tmp_path / "raw"
    save(face_photo(), raw / "real" / "a.png")
    save(np.ascontiguousarray(face_photo()[:, ::-1]), raw / "fake" / "b.png")
    cfg = PreprocessConfig(detect=True, landmarks=68, size=128, workers=1)
    res = preprocess(raw, tmp_path / "c", cfg, progress=False)
    m = pd.read_csv(tmp_path / "c" / "manifest.csv")  # what later stages read
    assert len(m) == 2 and res.summary["with_landmarks"] == 2
    for path, cell in zip(m["path"], m["landmarks"]):
        stored = parse_points(cell)
        assert stored.shape == (68, 2) and (stored >= -5).all() and (stored < 133).all()
        crop = cv2.cvtColor(cv2.imread(str(tmp_path / "c" / path)), cv2.COLOR_BGR2RGB)
        box = get_detector("dlib_hog").largest(crop)
        again = get_landmarker(68).locate(crop, box)  # found anew in the stored crop
        assert np.median(np.hypot(*(again - stored).T)) < 4, path
    contract = json.loads((tmp_path / "c" / "preprocessing.json").read_text())
    assert contract["detector"] == "dlib_hog" and contract["landmarks"] == 68 and contract["align"] is False


def test_aligned_crops_have_level_eyes(tmp_path):
    from deepfake.data.detect import key_points, parse_points

    raw = tmp_path / "raw"
    h, w = 240, 320
    tilt = cv2.getRotationMatrix2D((200, 120), 15, 1.0)
    save(cv2.warpAffine(face_photo(), tilt, (w, h), borderMode=cv2.BORDER_REPLICATE), raw / "real" / "t.png")
    save(face_photo(), raw / "fake" / "u.png")
    res = preprocess(
        raw, tmp_path / "c", PreprocessConfig(detect=True, landmarks=68, align=True, size=96, workers=1), progress=False
    )
    assert len(res.manifest) == 2
    for cell in res.manifest["landmarks"]:
        left, right = key_points(parse_points(cell))[:2]
        assert abs(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0]))) < 3
    with pytest.raises(ValueError, match="align = true needs"):
        PreprocessConfig(detect=True, landmarks="none", align=True)


def test_several_faces_and_faces_at_the_border(tmp_path):
    raw = tmp_path / "raw"
    save(two_faces_photo(), raw / "real" / "two.png")
    save(np.ascontiguousarray(face_photo()[:172]), raw / "fake" / "cut.png")  # the chin cut by the bottom edge
    save(face_photo(), raw / "fake" / "one.png")
    cfg = PreprocessConfig(detect=True, size=64, workers=1, face_search="full")  # adaptive counts large faces only
    kept = preprocess(raw, tmp_path / "a", cfg, progress=False)
    m = kept.manifest.set_index("source")
    assert m.loc["real/two.png", "n_faces"] == 2 and int(m.loc["real/two.png", "box"].split(",")[0]) < 200  # largest
    assert bool(m.loc["fake/cut.png", "at_border"]) and not bool(m.loc["fake/one.png", "at_border"])
    assert kept.summary["kept_with_several_faces"] == 1 and kept.summary["kept_at_border"] == 1
    strict = preprocess(
        raw,
        tmp_path / "b",
        PreprocessConfig(detect=True, size=64, several_faces="skip", face_at_border="skip", workers=1),
        progress=False,
    )
    assert list(strict.manifest["source"]) == ["fake/one.png"]
    reasons = dict(zip(strict.skipped["source"], strict.skipped["reason"]))
    assert reasons == {"real/two.png": "several_faces", "fake/cut.png": "face_at_border"}
    assert "2 face(s)" in strict.skipped.set_index("source").loc["real/two.png", "detail"]


@pytest.mark.parametrize("face_search", ["full", "adaptive"])
def test_a_video_follows_one_face_and_records_its_track(tmp_path, face_search):
    frames = []
    for t in range(6):  # the person on the left walks right; from frame 3 a larger face appears on the right
        canvas = np.full((360, 640, 3), 128, np.uint8)
        face = synthetic_face()
        x = 40 + 30 * t
        canvas[80:240, x : x + 160] = face
        if t >= 3:
            big = cv2.resize(face, (200, 200), interpolation=cv2.INTER_LINEAR)
            canvas[100:300, 420:620] = big
        frames.append(canvas)
    write_video(tmp_path / "raw" / "fake" / "walk.avi", frames)
    save(face_photo(), tmp_path / "raw" / "real" / "r.png")
    cfg = PreprocessConfig(
        detect=True, size=64, frames_per_video=6, video_upsample=0, workers=1, face_search=face_search
    )
    res = preprocess(tmp_path / "raw", tmp_path / "c", cfg, progress=False)
    v = res.manifest[res.manifest["kind"] == "video"].sort_values("frame")
    assert len(v) == 6
    centres = [int(b.split(",")[0]) + int(b.split(",")[2]) / 2 for b in v["box"]]
    assert all(c < 420 for c in centres), centres  # always the person on the left, never the larger newcomer
    assert np.all(np.diff(centres) > 0)  # moving right, as the person does
    # faces found in what was searched: the whole frame, or (adaptive) a window around the person followed
    assert list(v["n_faces"]) == ([1, 1, 1, 2, 2, 2] if face_search == "full" else [1] * 6)
    contract = json.loads((tmp_path / "c" / "preprocessing.json").read_text())
    assert contract["face_search"] == face_search
    assert read_contract(tmp_path / "c", 64) == cfg.contract()  # the cache's contract round-trips
    del contract["face_search"]  # a cache written before the setting existed
    (tmp_path / "c" / "preprocessing.json").write_text(json.dumps(contract))
    assert read_contract(tmp_path / "c", 64).face_search == "full"


def test_a_broken_landmark_model_stops_the_stage_and_marks_no_input_bad(tmp_path, monkeypatch):
    import concurrent.futures

    from deepfake.data import detect
    from deepfake.data.detect import FaceModelError

    bad = tmp_path / "shape_predictor_68_face_landmarks.dat"
    bad.write_bytes(b"\x00" * 100)
    monkeypatch.setattr(detect, "model_file", lambda name: bad)
    save(face_photo(), tmp_path / "raw" / "real" / "a.png")
    save(face_photo(), tmp_path / "raw" / "fake" / "b.png")
    cfg = PreprocessConfig(detect=True, landmarks=68, size=64, workers=1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a fresh thread: no landmark model loaded yet
        with pytest.raises(FaceModelError, match="shape_predictor_68_face_landmarks.dat could not be loaded"):
            pool.submit(preprocess, tmp_path / "raw", tmp_path / "c", cfg, False).result()
    assert not (tmp_path / "c" / "skipped.csv").exists()  # nothing recorded as a bad input


# --------------------------------------------------------------------------------------------
# Shards: several processes share one dataset and one cache; their merge is a one-process run's cache
# --------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
FAST = PreprocessConfig(detect=False, size=32, frames_per_video=3, workers=1)


def small_dataset(root: Path, n: int = 6) -> Path:
    """Noise images of both labels, a short video and an empty file: every kind of record, decoded fast."""
    for i in range(n):
        save(noise(48, 48, i), root / "real" / f"r{i}.png")
        save(noise(48, 48, 100 + i), root / "fake" / f"f{i}.png")
    write_video(root / "fake" / "clip.avi", [noise(48, 64, 200 + t) for t in range(6)])
    (root / "real" / "empty.jpg").write_bytes(b"")
    return root


def cache_files(out: Path) -> dict[str, bytes]:
    """Every file of a cache by its relative path, with its bytes."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def run_shards(raw: Path, out: Path, count: int, cfg: PreprocessConfig = FAST, only: tuple[int, ...] = ()) -> None:
    for k in only or range(1, count + 1):
        preprocess(raw, out, replace(cfg, shard=f"{k}/{count}"), progress=False)


def test_a_source_s_shard_is_a_stable_hash_of_its_path():
    # SHA-256 of the relative path: the same on every machine, run and Python (never hash(), which is salted)
    assert [shard_of(rel, 4) for rel in ("real/a.jpg", "fake/b.png", "x/y/z.mp4")] == [2, 3, 4]
    rels = [f"real/{i:04d}.jpg" for i in range(400)]
    sizes = [sum(shard_of(r, 4) == k for r in rels) for k in range(1, 5)]
    assert sum(sizes) == 400 and min(sizes) > 70  # every share about a quarter
    assert Shard.parse("2/4") == Shard(2, 4) and Shard.parse("") is None and str(Shard(1, 3)) == "1/3"


@pytest.mark.parametrize("bad", ["2/1", "0/2", "abc", "3", "1/0", "-1/2", "1/2/3"])
def test_a_faulty_shard_setting_is_refused_naming_it(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"preprocess\.shard"):
        PreprocessConfig(shard=bad)
    params = quick.write_params(tmp_path / "params.yaml", {"preprocess": {"shard": bad}})
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'params.yaml'}.*preprocess\.shard = '{bad}'"):
        load_params(params)


def test_shards_merge_to_the_bytes_of_one_process_run(messy, messy_result, tmp_path):
    """Images, converted images, videos and every kind of bad input, in three shards run one after another."""
    out = tmp_path / "faces"
    cfg = PreprocessConfig(detect=True, size=64, frames_per_video=4, workers=1)  # messy_result's
    first = preprocess(messy, out, replace(cfg, shard="1/3"), progress=False)
    assert not (out / "manifest.csv").exists() and (out / SHARDS_DIR / "1-of-3.json").is_file()
    before = cache_files(out)
    run_shards(messy, out, 3, cfg, only=(2, 3))
    after = cache_files(out)
    assert {k: after[k] for k in before if not k.startswith(".")} == {
        k: v for k, v in before.items() if not k.startswith(".")
    }  # shards 2 and 3 changed nothing of shard 1's
    assert not (out / "manifest.csv").exists()
    merged = preprocess(messy, out, cfg, progress=False)
    assert merged.summary["merged_shards"] == 3 and merged.summary["processed_now"] == 0
    assert cache_files(out) == cache_files(messy_result.out_dir)  # shards/ removed too: nothing else differs
    assert first.summary["shard"] == "1/3" and 0 < first.summary["images"] + first.summary["videos"] < 20
    assert preprocess(messy, out, cfg, progress=False).up_to_date


def test_a_missing_stale_or_stopped_shard_is_named_and_no_manifest_written(tmp_path, monkeypatch):
    from deepfake.data import preprocess as pp

    raw = small_dataset(tmp_path / "raw")
    one = preprocess(raw, tmp_path / "one", FAST, progress=False)
    out = tmp_path / "faces"
    with pytest.raises(ShardsIncomplete, match=r"shard 1/3 has not finished.*shard 2/3 .*shard 3/3 "):
        preprocess(raw, out, FAST, progress=False, merge_shards=3)  # none has run: --merge says so
    run_shards(raw, out, 3, only=(1, 3))
    before = cache_files(out)
    with pytest.raises(ShardsIncomplete, match=r"shard 2/3 has not finished \(no record") as e:
        preprocess(raw, out, FAST, progress=False)  # the plain run merges when it finds shards
    assert "1/3" not in str(e.value) and not (out / "manifest.csv").exists()
    assert cache_files(out) == before  # a merge refused changes nothing
    preprocess(raw, out, replace(FAST, size=24, shard="2/3"), progress=False)
    with pytest.raises(ShardsIncomplete, match="shard 2/3 ran with other settings"):
        preprocess(raw, out, FAST, progress=False, merge_shards=3)

    real, calls = pp.process_source, {"n": 0}

    def stopped(job):  # a shard stopped after its first input (an interrupt: its record says how far it got)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(job)

    with monkeypatch.context() as m:
        m.setattr(pp, "process_source", stopped)
        with pytest.raises(KeyboardInterrupt):
            preprocess(raw, out, replace(FAST, shard="2/3"), progress=False)
    with pytest.raises(ShardsIncomplete, match=r"shard 2/3 has not finished \(1 of its \d+ input\(s\) done"):
        preprocess(raw, out, FAST, progress=False)
    again = preprocess(raw, out, replace(FAST, shard="2/3"), progress=False)
    assert again.summary["reused"] == 1  # the stopped run's work is kept
    new = save(noise(48, 48, 999), raw / "real" / "late.png")  # a file added: only its own shard is stale
    late = shard_of("real/late.png", 3)
    with pytest.raises(ShardsIncomplete, match=rf"shard {late}/3 ran on another list of inputs \(1 new") as e:
        preprocess(raw, out, FAST, progress=False)
    assert sum(f"shard {k}/3" in str(e.value) for k in range(1, 4)) == 1
    run_shards(raw, out, 3, only=(late,))
    preprocess(raw, out, FAST, progress=False)
    new.unlink()
    preprocess(raw, out, FAST, progress=False)  # merged: the cache's own record again; the late file removed
    assert cache_files(out) == cache_files(one.out_dir)


def test_after_a_merge_shards_reuse_the_cache_and_decode_only_new_inputs(tmp_path):
    raw = small_dataset(tmp_path / "raw")
    out = tmp_path / "faces"
    run_shards(raw, out, 2)
    preprocess(raw, out, FAST, progress=False)
    save(noise(48, 48, 999), raw / "fake" / "late.png")
    runs = [preprocess(raw, out, replace(FAST, shard=f"{k}/2"), progress=False) for k in (1, 2)]
    assert sorted(r.summary["processed_now"] for r in runs) == [0, 1]
    assert not (out / "manifest.csv").exists()  # the shard that decoded removed the merged, now stale, manifest
    merged = preprocess(raw, out, FAST, progress=False)
    assert merged.summary["processed_now"] == 0 and len(merged.manifest) == len(
        preprocess(raw, tmp_path / "one", FAST, progress=False).manifest
    )
    assert cache_files(out) == cache_files(tmp_path / "one")


def test_the_stage_with_a_shard_merges_when_it_is_the_last(tmp_path):
    raw = small_dataset(tmp_path / "raw")
    out, reports = tmp_path / "faces", tmp_path / "reports"
    with pytest.raises(ShardsIncomplete, match="shard 2/2 has not finished"):
        stages.run_preprocess(raw, out, reports, replace(FAST, shard="1/2"), progress=False)
    assert not (out / "manifest.csv").exists()
    result = stages.run_preprocess(raw, out, reports, replace(FAST, shard="2/2"), progress=False)
    assert result.summary["merged_shards"] == 2 and (out / "manifest.csv").is_file()
    assert json.loads((reports / "timings.json").read_text())["merged_shards"] == 2
    one = preprocess(raw, tmp_path / "one", FAST, progress=False)
    assert cache_files(out) == cache_files(one.out_dir)


def _cli_params(tmp_path: Path, raw: Path, faces: Path) -> Path:
    data = {"raw_dir": str(raw), "faces_dir": str(faces), "layout": "folders"}
    prep = {"detect": False, "size": 32, "frames_per_video": 3, "workers": 1}
    return quick.write_params(tmp_path / f"params_{faces.name}.yaml", {"data": data, "preprocess": prep})


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_two_shard_processes_at_once_merge_to_one_process_s_bytes(tmp_path, capsys):
    raw = small_dataset(tmp_path / "raw", n=10)
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    p_one, p_sharded = _cli_params(tmp_path, raw, one), _cli_params(tmp_path, raw, sharded)
    cmd = [sys.executable, "-m", "deepfake", "preprocess", "--params", str(p_sharded), "--no-progress", "--shard"]
    procs = [
        subprocess.Popen([*cmd, f"{k}/2"], env=_env(), cwd=tmp_path, text=True, stdout=subprocess.PIPE) for k in (1, 2)
    ]
    outs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert all("python -m deepfake preprocess --merge 2" in o for o in outs), outs
    assert not (sharded / "manifest.csv").exists()
    assert main(["preprocess", "--params", str(p_sharded), "--merge", "2", "--no-progress"]) == 0
    assert "2 shards merged, 0 decoded now" in capsys.readouterr().out
    assert main(["preprocess", "--params", str(p_one), "--no-progress"]) == 0
    assert cache_files(sharded) == cache_files(one)


KILLABLE = """
import sys, time
from deepfake import __main__
from deepfake.data import preprocess as pp
real, n = pp.process_source, [0]
def slow(job):
    n[0] += 1
    if n[0] == 3:
        print("midway", flush=True)
        time.sleep(120)
    return real(job)
pp.process_source = slow
sys.exit(__main__.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_shard_leaves_no_manifest_and_running_it_again_finishes_the_job(tmp_path, capsys, sig):
    """SIGKILL loses the run's work; SIGTERM (a scheduler's scancel, time limit or pod deletion, sent
    before its SIGKILL) records the two inputs it finished, and running the shard again reuses them."""
    raw = small_dataset(tmp_path / "raw", n=10)
    faces = tmp_path / "faces"
    params = _cli_params(tmp_path, raw, faces)
    args = ["preprocess", "--params", str(params), "--no-progress"]
    assert main([*args, "--shard", "2/2"]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLABLE), *args, "--shard", "1/2"],
        env=_env(),
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watchdog = threading.Timer(60, proc.kill)  # a child that never gets midway fails the test, never hangs it
    watchdog.start()
    try:
        assert proc.stdout.readline().strip() == "midway"
        assert list((faces / "real").glob("*.png")) or list((faces / "fake").glob("*.png"))  # it wrote crops
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        watchdog.cancel()
        proc.kill()
    assert not (faces / "manifest.csv").exists()
    record = faces / SHARDS_DIR / "1-of-2.json"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL and not record.exists()
        unfinished, reused = "(no record", "0 reused"
    else:
        assert proc.returncode == 143 and "stopped by SIGTERM: recording what this run finished" in err
        assert json.loads(record.read_text())["finished"] is False
        unfinished, reused = "(2 of its", "2 reused"
    capsys.readouterr()
    assert main(args) == 1  # the merge refuses, naming the shard
    err = capsys.readouterr().err
    assert f"shard 1/2 has not finished {unfinished}" in err and not (faces / "manifest.csv").exists(), err
    assert main([*args, "--shard", "1/2"]) == 0
    assert f"decoded now, {reused})" in capsys.readouterr().out
    assert main([*args, "--merge", "2"]) == 0
    assert main(["preprocess", "--params", str(_cli_params(tmp_path, raw, tmp_path / "one")), "--no-progress"]) == 0
    assert cache_files(faces) == cache_files(tmp_path / "one")


def test_a_shard_leaves_other_processes_temporaries_and_the_merge_removes_them(tmp_path):
    raw = small_dataset(tmp_path / "raw")
    out = tmp_path / "faces"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = out / f".1-of-2.json.{int(dead.stdout)}.abcd1234.tmp"  # another machine's pid cannot be checked
    leftover.write_text("{}")
    run_shards(raw, out, 2)  # a folder holding only a temporary file is still an empty one to claim
    assert leftover.exists()
    preprocess(raw, out, FAST, progress=False)
    assert not leftover.exists() and not (out / SHARDS_DIR).exists()
